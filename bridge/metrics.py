"""`/metrics`: what the bridge has done, in the Prometheus text format."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge.alerts.engine import STATES
from bridge.alerts.service import AlertService
from bridge.devices import DeviceRegistry
from bridge.health import Stages
from bridge.rejections import RejectionLog


class BridgeCollector(Collector):
    """Reads the counters the stages keep; nothing is counted twice."""

    def __init__(
        self, stages: Stages, rejections: RejectionLog, devices: DeviceRegistry, browsers: Callable[[], int]
    ) -> None:
        self._stages = stages
        self._rejections = rejections
        self._devices = devices
        self._browsers = browsers

    def collect(self) -> Iterator[Any]:
        inbox, store, pipeline, totals = (
            self._stages.inbox,
            self._stages.store,
            self._stages.pipeline,
            self._stages.totals,
        )
        yield CounterMetricFamily("sensorpipe_readings_received", "MQTT messages received", value=inbox.state.received)
        yield CounterMetricFamily(
            "sensorpipe_readings_accepted", "valid readings (sent to the browsers at once)", value=totals.accepted_count
        )
        yield CounterMetricFamily(
            "sensorpipe_readings_stored", "readings stored in InfluxDB, each once", value=totals.stored_count
        )
        yield CounterMetricFamily(
            "sensorpipe_readings_rewritten",
            "readings that arrived again (redelivered, resent) and were written over their own point",
            value=totals.rewritten_count,
        )
        yield CounterMetricFamily(
            "sensorpipe_readings_redelivered", "messages the broker sent again (DUP)", value=inbox.state.redelivered
        )
        rejected = CounterMetricFamily(
            "sensorpipe_readings_rejected", "messages rejected, by reason", labels=["reason"]
        )
        for reason, count in sorted(self._rejections.counts().items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield CounterMetricFamily(
            "sensorpipe_influxdb_writes", "successful write requests to InfluxDB", value=store.state.writes
        )
        yield CounterMetricFamily(
            "sensorpipe_rollups_refused",
            "batches whose rollups InfluxDB refused (their readings are stored; the log says why)",
            value=store.state.rollups_refused,
        )
        yield GaugeMetricFamily(
            "sensorpipe_ingest_unacknowledged",
            "messages received from the broker and not yet acknowledged",
            value=inbox.unacknowledged(),
        )
        yield GaugeMetricFamily(
            "sensorpipe_ingest_pending", "valid readings waiting for the next write", value=store.pending()
        )
        yield GaugeMetricFamily(
            "sensorpipe_ingest_waiting_seconds",
            "how long messages have waited without progress (0: nothing waits)",
            value=pipeline.waiting_s(),
        )
        yield GaugeMetricFamily(
            "sensorpipe_ingest_stalled", "1 while ingest is stuck (see /healthz)", value=int(bool(pipeline.stalled()))
        )
        yield CounterMetricFamily(
            "sensorpipe_ingest_failures",
            "messages whose handling failed for a reason of the bridge's own (left unacknowledged)",
            value=pipeline.state.failures,
        )
        yield GaugeMetricFamily("sensorpipe_devices", "devices tracked", value=self._devices.count())
        yield CounterMetricFamily(
            "sensorpipe_devices_untracked",
            "messages of devices beyond SENSORPIPE_MAX_DEVICES (stored, not shown)",
            value=self._devices.untracked,
        )
        yield GaugeMetricFamily(
            "sensorpipe_mqtt_connected", "1 when connected to the broker", value=int(inbox.state.connected)
        )
        yield GaugeMetricFamily(
            "sensorpipe_influxdb_writes_ok", "0 while InfluxDB writes fail", value=int(store.state.influx_error is None)
        )
        yield GaugeMetricFamily("sensorpipe_socketio_clients", "browsers connected", value=self._browsers())


def metrics_text(registry: CollectorRegistry) -> Callable[[], bytes]:
    """A function that renders the registry in the Prometheus text format."""
    return lambda: generate_latest(registry)


class AlertCollector(Collector):
    """What the alerts have done: alerts per state, readings judged, notifications."""

    def __init__(self, alerts: AlertService) -> None:
        self._alerts = alerts

    def collect(self) -> Iterator[Any]:
        counts = self._alerts.state_counts()
        by_state = GaugeMetricFamily("sensorpipe_alerts", "alerts in each state (ok: known and fine)", labels=["state"])
        for state in STATES:
            by_state.add_metric([state], counts.get(state, 0))
        yield by_state
        notifier = self._alerts.notifier.state
        counters = (
            ("sensorpipe_alert_readings_judged", "readings the alert rules were applied to", self._alerts.evaluated),
            ("sensorpipe_alert_notifications_sent", "notifications a target took", notifier.sent),
            (
                "sensorpipe_alert_notifications_failed",
                "delivery attempts that failed (each is retried)",
                notifier.failures,
            ),
            ("sensorpipe_alert_journal_failures", "alert changes that could not be written", self._alerts.failures),
        )
        for name, text, value in counters:
            yield CounterMetricFamily(name, text, value=value)
        waiting = len(self._alerts.undelivered())
        yield GaugeMetricFamily(
            "sensorpipe_alert_notifications_waiting", "notifications not yet delivered", value=waiting
        )
