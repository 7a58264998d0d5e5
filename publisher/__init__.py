"""The publisher: runs on the Pi, reads a sensor and publishes readings and status over MQTT."""
