"""The bridge: MQTT in; InfluxDB and the browsers out; serves the web UI and API."""
