"""`/healthz`: is the bridge connected to the broker and InfluxDB and is ingest moving, and if
not, why; and the totals the dashboard's pipeline panel shows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from bridge.inbox import Incoming, MqttInbox
from bridge.influx import InfluxUnavailable, InfluxV1
from bridge.pipeline import Pipeline
from bridge.rejections import RejectionLog
from bridge.store import InfluxStore
from bridge.totals import Totals

PING_TIMEOUT_S = 2.0  # /healthz answers within about this, also when InfluxDB hangs


@dataclass(frozen=True)
class Stages:
    """The stages whose state /healthz, /metrics and /api/pipeline show."""

    inbox: MqttInbox
    store: InfluxStore[Incoming]
    pipeline: Pipeline
    totals: Totals


def check_health(
    stages: Stages, influx: InfluxV1, shared: redis.Redis | None = None, more: Callable[[], list[str]] = list
) -> tuple[bool, dict[str, Any]]:
    """(healthy, details): the broker connection, InfluxDB's /ping and last write, whether
    ingest makes progress, Redis when several bridges share it, and the `more` reasons of
    other parts (the alerts')."""
    reasons = more()
    if shared is not None:
        try:
            shared.ping()
        except redis.RedisError as exc:
            reasons.append(f"Redis: {exc}")
    mqtt = stages.inbox.state
    if not mqtt.connected:
        reasons.append(f"MQTT: {mqtt.error}")
    stalled = stages.pipeline.stalled()
    if stalled:
        reasons.append(f"ingest stalled: {stalled}")
    influx_version = None
    try:
        influx_version = influx.ping(timeout=PING_TIMEOUT_S)
    except InfluxUnavailable as exc:
        reasons.append(f"InfluxDB: {exc}")
    else:
        error = stages.store.state.influx_error
        if error:  # /ping can answer while writes fail (e.g. no such database)
            reasons.append(f"InfluxDB writes failing: {error}")
    if stages.store.state.rollups_refused:
        reasons.append(
            f"rollups: InfluxDB refused those of {stages.store.state.rollups_refused} batches (the log says why; "
            "their readings are stored, and `python -m bridge rollups rebuild --since <day>` redoes them)"
        )
    return not reasons, {
        "mqtt": "connected" if mqtt.connected else "disconnected",
        "influxdb": influx_version,
        "unacknowledged": stages.inbox.unacknowledged(),
        "reasons": reasons,
    }


def ingest_totals(stages: Stages) -> dict[str, int]:
    """This bridge's totals since it started (with replicas, bridge/shared.py adds them up)."""
    return {
        "received": stages.inbox.state.received,
        "stored": stages.totals.stored_count,
        "rewritten": stages.totals.rewritten_count,
        "redelivered": stages.inbox.state.redelivered,
    }


def pipeline_counts(totals: dict[str, int], rejections: RejectionLog) -> dict[str, int]:
    """What /api/pipeline shows: the ingest totals and the rejections, counted once."""
    return {**totals, "rejected": sum(rejections.counts().values())}
