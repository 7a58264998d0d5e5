"""`/metrics`: what the bridge has done, in the Prometheus text format."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge.devices import DeviceRegistry
from bridge.rejections import RejectionLog


class IngestCounters(Protocol):
    """The counters and state the ingest loop keeps (bridge.ingest.IngestState)."""

    @property
    def received(self) -> int: ...
    @property
    def stored(self) -> int: ...
    @property
    def rewritten(self) -> int: ...
    @property
    def redelivered(self) -> int: ...
    @property
    def batch_failures(self) -> int: ...
    @property
    def mqtt_connected(self) -> bool: ...
    @property
    def influx_error(self) -> str | None: ...


class IngestView(Protocol):
    """What /metrics reads of the ingest loop (bridge.ingest.Ingest)."""

    @property
    def state(self) -> IngestCounters: ...
    def unacknowledged(self) -> int: ...
    def waiting_s(self) -> float: ...
    def stalled(self) -> str | None: ...


class IngestMetrics:
    """What the ingest loop observes once per batch (never per message: it is the hot path)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.write_seconds = Histogram(
            "sensorpipe_influxdb_write_seconds",
            "time of one successful batch write to InfluxDB",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=registry,
        )
        self.batch_size = Histogram(
            "sensorpipe_ingest_batch_size",
            "readings per InfluxDB write",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=registry,
        )


class BridgeCollector(Collector):
    """Reads the counters the ingest loop keeps; nothing is counted twice."""

    def __init__(
        self, ingest: IngestView, rejections: RejectionLog, devices: DeviceRegistry, browsers: Callable[[], int]
    ) -> None:
        self._ingest = ingest
        self._rejections = rejections
        self._devices = devices
        self._browsers = browsers

    def collect(self) -> Iterator[Any]:
        state = self._ingest.state
        yield CounterMetricFamily("sensorpipe_readings_received", "MQTT messages received", value=state.received)
        yield CounterMetricFamily(
            "sensorpipe_readings_stored", "readings stored in InfluxDB, each once", value=state.stored
        )
        yield CounterMetricFamily(
            "sensorpipe_readings_rewritten",
            "readings that arrived again (redelivered, resent) and were written over their own point",
            value=state.rewritten,
        )
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
            "sensorpipe_ingest_unacknowledged",
            "messages received from the broker and not yet acknowledged",
            value=self._ingest.unacknowledged(),
        )
        yield GaugeMetricFamily(
            "sensorpipe_ingest_waiting_seconds",
            "how long messages have waited without a batch finishing (0: nothing waits)",
            value=self._ingest.waiting_s(),
        )
        yield GaugeMetricFamily(
            "sensorpipe_ingest_stalled",
            "1 while ingest is stuck (see /healthz)",
            value=int(bool(self._ingest.stalled())),
        )
        yield CounterMetricFamily(
            "sensorpipe_ingest_batch_failures",
            "batches that failed for a reason of the bridge's own and were tried again",
            value=state.batch_failures,
        )
        yield GaugeMetricFamily("sensorpipe_devices", "devices tracked", value=self._devices.count())
        yield CounterMetricFamily(
            "sensorpipe_devices_untracked",
            "messages of devices beyond SENSORPIPE_MAX_DEVICES (stored, not shown)",
            value=self._devices.untracked,
        )
        yield GaugeMetricFamily(
            "sensorpipe_mqtt_connected", "1 when connected to the broker", value=int(state.mqtt_connected)
        )
        yield GaugeMetricFamily(
            "sensorpipe_influxdb_writes_ok", "0 while InfluxDB writes fail", value=int(state.influx_error is None)
        )
        yield GaugeMetricFamily("sensorpipe_socketio_clients", "browsers connected", value=self._browsers())


def metrics_text(registry: CollectorRegistry) -> Callable[[], bytes]:
    """A function that renders the registry in the Prometheus text format."""
    return lambda: generate_latest(registry)
