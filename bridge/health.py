"""`/healthz`: is the bridge connected to the broker and InfluxDB, and if not, why; and the
counters the dashboard's pipeline panel shows."""

from __future__ import annotations

from typing import Any

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


def pipeline_counts(ingest: Ingest, rejections: RejectionLog) -> dict[str, int]:
    """Totals since the bridge started: the page turns two of them into a rate."""
    state = ingest.state
    return {
        "received": state.received,
        "stored": state.stored,
        "redelivered": state.redelivered,
        "rejected": sum(rejections.counts().values()),
    }
