"""`/healthz`: is the bridge connected to the broker and InfluxDB, and if not, why; and the
counters the dashboard's pipeline panel shows."""

from __future__ import annotations

from typing import Any

import redis

from bridge.influx import InfluxUnavailable, InfluxV1
from bridge.ingest import Ingest
from bridge.rejections import RejectionLog

PING_TIMEOUT_S = 2.0  # /healthz answers within about this, also when InfluxDB hangs


def check_health(ingest: Ingest, influx: InfluxV1, shared: redis.Redis | None = None) -> tuple[bool, dict[str, Any]]:
    """(healthy, details): the broker connection, InfluxDB's /ping and last write, whether
    ingest makes progress, and Redis when several bridges share it."""
    reasons = []
    if shared is not None:
        try:
            shared.ping()
        except redis.RedisError as exc:
            reasons.append(f"Redis: {exc}")
    state = ingest.state
    if not state.mqtt_connected:
        reasons.append(f"MQTT: {state.mqtt_error}")
    stalled = ingest.stalled()
    if stalled:
        reasons.append(f"ingest stalled: {stalled}")
    influx_version = None
    try:
        influx_version = influx.ping(timeout=PING_TIMEOUT_S)
    except InfluxUnavailable as exc:
        reasons.append(f"InfluxDB: {exc}")
    else:
        if state.influx_error:  # /ping can answer while writes fail (e.g. no such database)
            reasons.append(f"InfluxDB writes failing: {state.influx_error}")
    return not reasons, {
        "mqtt": "connected" if state.mqtt_connected else "disconnected",
        "influxdb": influx_version,
        "unacknowledged": ingest.unacknowledged(),
        "reasons": reasons,
    }


def ingest_totals(ingest: Ingest) -> dict[str, int]:
    """This bridge's totals since it started (with replicas, bridge/shared.py adds them up)."""
    state = ingest.state
    return {
        "received": state.received,
        "stored": state.stored,
        "rewritten": state.rewritten,
        "redelivered": state.redelivered,
    }


def pipeline_counts(totals: dict[str, int], rejections: RejectionLog) -> dict[str, int]:
    """What /api/pipeline shows: the ingest totals and the rejections, counted once."""
    return {**totals, "rejected": sum(rejections.counts().values())}
