"""The reading: its typed form, its JSON payload and the contract's validation rules.

This module is the one definition of what a reading is. The publisher encodes with it,
the bridge decodes with it; nothing else parses a payload.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

MAX_PAYLOAD_BYTES = 16 * 1024
MAX_METRICS = 32
MAX_FUTURE_US = 5 * 60 * 1_000_000  # a ts more than 5 minutes ahead is rejected
METRIC_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Keys with a meaning of their own; every other key of a reading is a metric.
RESERVED_KEYS = frozenset({"ts", "seq", "sensor", "location"})
# Metric names that would clash in InfluxDB: `time` is refused by the server itself and
# `device` is the tag every query filters on.
FORBIDDEN_METRICS = frozenset({"time", "device"})
TAG_MAX_CHARS = 64
# RFC 3339: date, "T" (or "t"/space), time, optional fraction, mandatory zone.
RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


class RejectedMessage(ValueError):
    """A message that breaks the contract; `reason` is a short, stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Reading:
    """One reading of one device: microsecond Unix time, metrics as floats."""

    device: str
    ts_us: int
    metrics: dict[str, float]
    seq: int | None = None
    sensor: str | None = None
    location: str | None = None
    tags: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tags = {"device": self.device}
        if self.sensor is not None:
            tags["sensor"] = self.sensor
        if self.location is not None:
            tags["location"] = self.location
        object.__setattr__(self, "tags", tags)

    @property
    def ts_ms(self) -> float:
        """Unix epoch milliseconds, with the microseconds as a fraction (web side unit)."""
        return self.ts_us / 1000


def now_us() -> int:
    """The current Unix time in microseconds."""
    return time.time_ns() // 1000


def format_ts(ts_us: int) -> str:
    """RFC 3339 in UTC with microseconds, e.g. `2026-11-25T11:16:11.924000Z`."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_reading(reading: Reading) -> bytes:
    """The reading's MQTT payload (the device travels in the topic, not the payload)."""
    body: dict[str, object] = {"ts": format_ts(reading.ts_us)}
    if reading.seq is not None:
        body["seq"] = reading.seq
    if reading.sensor is not None:
        body["sensor"] = reading.sensor
    if reading.location is not None:
        body["location"] = reading.location
    body.update(reading.metrics)
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def parse_ts(value: object) -> int:
    """A contract `ts` (RFC 3339 with a zone, or epoch seconds) as Unix microseconds.

    Raises RejectedMessage("bad_ts", ...) for anything else, or a time before 1970.
    """
    if isinstance(value, bool):
        raise RejectedMessage("bad_ts", "ts is a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise RejectedMessage("bad_ts", f"ts {value!r} is not a time since 1970")
        if value > 253402300799:  # 9999-12-31T23:59:59Z: a bigger number is not seconds
            raise RejectedMessage("bad_ts", f"ts {value!r} is too large for epoch seconds")
        return round(value * 1_000_000) if isinstance(value, float) else value * 1_000_000
    if not isinstance(value, str):
        raise RejectedMessage("bad_ts", f"ts must be a string or a number, not {type(value).__name__}")
    match = RFC3339.fullmatch(value)
    if match is None:
        raise RejectedMessage("bad_ts", f"ts {value[:40]!r} is not RFC 3339 with a zone")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = (match.group(7) or "").ljust(6, "0")[:6]  # beyond microseconds: truncated
    if match.group(8):
        offset = timedelta(0)
    else:
        sign = 1 if match.group(9) == "+" else -1
        hours, minutes = int(match.group(10)), int(match.group(11))
        if hours > 23 or minutes > 59:
            raise RejectedMessage("bad_ts", f"ts {value!r} has an impossible zone offset")
        offset = sign * timedelta(hours=hours, minutes=minutes)
    try:
        moment = datetime(year, month, day, hour, minute, min(second, 59), int(fraction), tzinfo=timezone(offset))
    except ValueError as exc:
        raise RejectedMessage("bad_ts", f"ts {value!r}: {exc}") from None
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    ts_us = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    if ts_us < 0:
        raise RejectedMessage("bad_ts", f"ts {value!r} is before 1970")
    return ts_us


def _tag(body: dict[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is None and key not in body:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= TAG_MAX_CHARS:
        raise RejectedMessage("bad_tag", f"{key} must be a string of 1 to {TAG_MAX_CHARS} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise RejectedMessage("bad_tag", f"{key} contains a control character")
    if "\\" in value:  # InfluxDB 1.x line protocol cannot store a backslash in a tag exactly
        raise RejectedMessage("bad_tag", f"{key} contains a backslash")
    return value


def _metric(name: str, value: object) -> float:
    if not METRIC_NAME.fullmatch(name):
        raise RejectedMessage("bad_metric_name", f"metric name {name[:70]!r} must match [a-z][a-z0-9_]{{0,63}}")
    if name in FORBIDDEN_METRICS:
        raise RejectedMessage("bad_metric_name", f"metric name {name!r} is reserved")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RejectedMessage("bad_metric_value", f"metric {name!r} must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise RejectedMessage("bad_metric_value", f"metric {name!r} is not finite")
    return number


def _reject_constant(token: str) -> float:
    raise RejectedMessage("bad_metric_value", f"{token} is not a finite number")


def parse_reading(device: str, payload: bytes, received_us: int) -> Reading:
    """Validate a payload per the contract and return the Reading, or raise RejectedMessage.

    `device` must already be valid (it comes from the topic, see `common.topics`).
    `received_us` stamps a reading without `ts` and is the reference for "in the future".
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RejectedMessage("too_large", f"{len(payload)} bytes, at most {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedMessage("not_utf8", str(exc)) from None
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise RejectedMessage("not_json", "nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise RejectedMessage("not_json", str(exc)) from None
    if not isinstance(body, dict):
        raise RejectedMessage("not_object", f"the payload is a JSON {type(body).__name__}, not an object")
    ts_us = parse_ts(body["ts"]) if "ts" in body else received_us
    if ts_us > received_us + MAX_FUTURE_US:
        raise RejectedMessage("ts_in_future", f"ts is {(ts_us - received_us) / 1e6:.0f} s ahead of the bridge's clock")
    seq = body.get("seq")
    if "seq" in body and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or seq >= 2**63):
        raise RejectedMessage("bad_seq", "seq must be a non-negative integer")
    metrics = {name: _metric(name, value) for name, value in body.items() if name not in RESERVED_KEYS}
    if not metrics:
        raise RejectedMessage("no_metrics", "a reading needs at least one metric")
    if len(metrics) > MAX_METRICS:
        raise RejectedMessage("too_many_metrics", f"{len(metrics)} metrics, at most {MAX_METRICS}")
    return Reading(
        device=device,
        ts_us=ts_us,
        metrics=metrics,
        seq=seq,
        sensor=_tag(body, "sensor"),
        location=_tag(body, "location"),
    )
