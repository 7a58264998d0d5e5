"""sensorpipe tests: real Mosquitto, InfluxDB and Chromium, started by the fixtures."""
