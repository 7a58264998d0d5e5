"""`/healthz` and `/metrics`: is the bridge connected, and what has it done."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge.influx import InfluxUnavailable, InfluxV1
from bridge.ingest import Ingest
from bridge.rejections import RejectionLog


def check_health(ingest: Ingest, influx: InfluxV1) -> tuple[bool, dict[str, Any]]:
    """(healthy, details): the broker connection and InfluxDB's /ping and last write."""
    reasons = []
    state = ingest.state
    if not state.mqtt_connected:
        reasons.append(f"MQTT: {state.mqtt_error}")
    influx_version = None
    try:
        influx_version = influx.ping()
    except InfluxUnavailable as exc:
        reasons.append(f"InfluxDB: {exc}")
    else:
        if state.influx_error:  # /ping can answer while writes fail (e.g. no such database)
            reasons.append(f"InfluxDB writes failing: {state.influx_error}")
    return not reasons, {
        "mqtt": "connected" if state.mqtt_connected else "disconnected",
        "influxdb": influx_version,
        "reasons": reasons,
    }


class BridgeCollector(Collector):
    """Reads the counters the ingest loop keeps; nothing is counted twice."""

    def __init__(self, ingest: Ingest, rejections: RejectionLog, browsers: Callable[[], int]) -> None:
        self._ingest = ingest
        self._rejections = rejections
        self._browsers = browsers

    def collect(self) -> Iterator[Any]:
        state = self._ingest.state
        yield CounterMetricFamily("sensorpipe_readings_received", "MQTT messages received", value=state.received)
        yield CounterMetricFamily("sensorpipe_readings_stored", "readings stored in InfluxDB", value=state.stored)
        yield CounterMetricFamily(
            "sensorpipe_readings_redelivered", "messages the broker sent again (DUP)", value=state.redelivered
        )
        rejected = CounterMetricFamily(
            "sensorpipe_readings_rejected", "messages rejected, by reason", labels=["reason"]
        )
        for reason, count in sorted(self._rejections.counts().items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield GaugeMetricFamily(
            "sensorpipe_ingest_queue_depth", "messages received, not yet handled", value=self._ingest.queue_depth()
        )
        yield GaugeMetricFamily(
            "sensorpipe_mqtt_connected", "1 when connected to the broker", value=int(state.mqtt_connected)
        )
        yield GaugeMetricFamily(
            "sensorpipe_influxdb_writes_ok", "0 while InfluxDB writes fail", value=int(state.influx_error is None)
        )
        yield GaugeMetricFamily("sensorpipe_socketio_clients", "browsers connected", value=self._browsers())


def metrics_text(collector: BridgeCollector) -> Callable[[], bytes]:
    """A function that renders the collector in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return lambda: generate_latest(registry)
