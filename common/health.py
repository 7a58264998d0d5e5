"""The publisher's health message (`<prefix>/<device>/health`, retained): its type, its JSON
form and its validation. The publisher builds a `Health`; the bridge parses one with
`parse_health`, as strictly as a reading, so what it shows and serves is always valid JSON.

Keys this version does not know are ignored, not refused: a newer publisher's health must
not be thrown away whole by an older bridge.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from common.reading import MAX_PAYLOAD_BYTES, METRIC_NAME, RejectedMessage, decode_object, text_problem

MAX_TEXT_CHARS = 500  # last_error and the bridge's refusal detail
MAX_NAME_CHARS = 64  # sensor, version, timestamps as text
MAX_REASONS = 32
REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")
COUNT_LIMIT = 2**63
MAX_SENSORS = 16  # sensors on one publisher, and calibrated metrics, that a health message may list
SENSOR_KEY = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # a sensor's name, or its driver's


@dataclass(frozen=True, slots=True)
class Refusal:
    """The bridge's latest word on one of this device's messages: why it refused it
    (a rejection reason of the contract), when (the bridge's epoch ms) and which `seq`."""

    reason: str
    detail: str
    at_ms: float
    seq: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "detail": self.detail, "at": self.at_ms, "seq": self.seq}


@dataclass(frozen=True, slots=True)
class SensorHealth:
    """What one of a publisher's sensors did since the publisher started."""

    driver: str
    reads_ok: int
    reads_failed: int
    last_error: str | None = None
    last_error_at: str | None = None
    rejected: dict[str, int] = field(default_factory=dict)
    unchanged_reads: int | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "driver": self.driver,
            "reads_ok": self.reads_ok,
            "reads_failed": self.reads_failed,
            "last_error": self.last_error,
        }
        optional: dict[str, Any] = {
            "last_error_at": self.last_error_at,
            "rejected": dict(self.rejected) if self.rejected else None,
            "unchanged_reads": self.unchanged_reads,
        }
        body.update((key, value) for key, value in optional.items() if value is not None)
        return body


@dataclass(frozen=True, slots=True)
class Calibration:
    """A correction in force on one metric: published = gain * measured + offset, since
    `since` (RFC 3339, UTC); `points`, for a two-point correction, the (measured, reference)
    pairs it was made from."""

    gain: float
    offset: float
    since: str
    points: tuple[tuple[float, float], tuple[float, float]] | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"gain": self.gain, "offset": self.offset, "since": self.since}
        if self.points is not None:
            body["points"] = [list(point) for point in self.points]
        return body


@dataclass(frozen=True, slots=True)
class Health:
    """What a publisher says of itself. The first five are required by the contract."""

    reads_ok: int
    reads_failed: int
    last_error: str | None
    outbox_depth: int
    uptime_s: float
    last_error_at: str | None = None
    rejected: dict[str, int] = field(default_factory=dict)
    unchanged_reads: int | None = None
    outbox_dropped: int | None = None
    clock_ok: bool | None = None
    interval_s: float | None = None
    sensor: str | None = None
    version: str | None = None
    refused: Refusal | None = None  # the bridge refused a reading of this run (see link.py)
    refused_count: int | None = None
    sensors: dict[str, SensorHealth] = field(default_factory=dict)  # per sensor, by name
    calibration: dict[str, Calibration] = field(default_factory=dict)  # per metric

    def as_json(self) -> dict[str, Any]:
        """The message's JSON object: the required keys always, the others when known."""
        body: dict[str, Any] = {
            "reads_ok": self.reads_ok,
            "reads_failed": self.reads_failed,
            "last_error": self.last_error,
            "outbox_depth": self.outbox_depth,
            "uptime_s": self.uptime_s,
        }
        optional: dict[str, Any] = {
            "last_error_at": self.last_error_at,
            "rejected": dict(self.rejected) if self.rejected else None,
            "unchanged_reads": self.unchanged_reads,
            "outbox_dropped": self.outbox_dropped,
            "clock_ok": self.clock_ok,
            "interval_s": self.interval_s,
            "sensor": self.sensor,
            "version": self.version,
            "refused": self.refused.as_json() if self.refused else None,
            "refused_count": self.refused_count,
            "sensors": {key: sensor.as_json() for key, sensor in self.sensors.items()} if self.sensors else None,
            "calibration": (
                {metric: correction.as_json() for metric, correction in self.calibration.items()}
                if self.calibration
                else None
            ),
        }
        body.update((key, value) for key, value in optional.items() if value is not None)
        return body


def clean_text(value: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`value` made fit for a health message: control characters and undecodable bytes
    become spaces or U+FFFD, and it is cut to `limit` (an error text from a driver may hold
    anything)."""
    cleaned = "".join(
        " " if ord(ch) < 32 or 127 <= ord(ch) <= 159 else "\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch
        for ch in value
    )
    return cleaned[:limit]


def encode_health(health: Health) -> bytes:
    """The retained message's payload."""
    return json.dumps(health.as_json(), separators=(",", ":"), allow_nan=False).encode()


def parse_health(payload: bytes) -> Health | None:
    """The Health in `payload`, None for an empty payload (a retained message cleared), or
    RejectedMessage("bad_health", ...) naming the first thing wrong."""
    if not payload:
        return None
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RejectedMessage("bad_health", f"{len(payload)} bytes, at most {MAX_PAYLOAD_BYTES}")
    body = decode_object(payload, "bad_health")
    for key in ("reads_ok", "reads_failed", "last_error", "outbox_depth", "uptime_s"):
        if key not in body:
            raise RejectedMessage("bad_health", f"{key} is missing")
    refused = body.get("refused")
    return Health(
        reads_ok=_count(body, "reads_ok"),
        reads_failed=_count(body, "reads_failed"),
        last_error=_text(body, "last_error", MAX_TEXT_CHARS),
        outbox_depth=_count(body, "outbox_depth"),
        uptime_s=_number(body, "uptime_s"),
        last_error_at=_text(body, "last_error_at", MAX_NAME_CHARS),
        rejected=_reasons(body.get("rejected")),
        unchanged_reads=_optional_count(body, "unchanged_reads"),
        outbox_dropped=_optional_count(body, "outbox_dropped"),
        clock_ok=_switch(body, "clock_ok"),
        interval_s=_optional_number(body, "interval_s"),
        sensor=_text(body, "sensor", MAX_NAME_CHARS),
        version=_text(body, "version", MAX_NAME_CHARS),
        refused=None if refused is None else parse_refusal(refused, "bad_health"),
        refused_count=_optional_count(body, "refused_count"),
        sensors=_mapping(body.get("sensors"), "sensors", SENSOR_KEY, _sensor_health),
        calibration=_mapping(body.get("calibration"), "calibration", METRIC_NAME, _calibration),
    )


def _mapping(value: object, key: str, names: re.Pattern[str], parse: Any) -> dict[str, Any]:
    """An object of at most MAX_SENSORS entries, each name matching `names`, each value `parse`d."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_SENSORS:
        raise RejectedMessage("bad_health", f"{key} must be an object of at most {MAX_SENSORS} entries")
    parsed = {}
    for name, entry in value.items():
        if not names.fullmatch(name):
            raise RejectedMessage("bad_health", f"{key}: {name[:70]!r} is no valid name")
        if not isinstance(entry, dict):
            raise RejectedMessage("bad_health", f"{key}.{name} must be a JSON object")
        parsed[name] = parse(entry, f"{key}.{name}")
    return parsed


def _sensor_health(body: dict[str, object], where: str) -> SensorHealth:
    for key in ("driver", "reads_ok", "reads_failed"):
        if key not in body:
            raise RejectedMessage("bad_health", f"{where}.{key} is missing")
    driver = _text(body, "driver", MAX_NAME_CHARS)
    if not driver:
        raise RejectedMessage("bad_health", f"{where}.driver must be text")
    return SensorHealth(
        driver=driver,
        reads_ok=_count(body, "reads_ok"),
        reads_failed=_count(body, "reads_failed"),
        last_error=_text(body, "last_error", MAX_TEXT_CHARS),
        last_error_at=_text(body, "last_error_at", MAX_NAME_CHARS),
        rejected=_reasons(body.get("rejected")),
        unchanged_reads=_optional_count(body, "unchanged_reads"),
    )


def _calibration(body: dict[str, object], where: str) -> Calibration:
    since = _text(body, "since", MAX_NAME_CHARS)
    if not since:
        raise RejectedMessage("bad_health", f"{where}.since must be a time as text")
    points = body.get("points")
    parsed_points = None
    if points is not None:
        if (
            not isinstance(points, list)
            or len(points) != 2
            or not all(isinstance(point, list) and len(point) == 2 for point in points)
        ):
            raise RejectedMessage("bad_health", f"{where}.points must be two [measured, reference] pairs")
        (a, b), (c, d) = ((_finite(point[0], where), _finite(point[1], where)) for point in points)
        parsed_points = ((a, b), (c, d))
    return Calibration(
        gain=_finite(body.get("gain"), f"{where}.gain"),
        offset=_finite(body.get("offset"), f"{where}.offset"),
        since=since,
        points=parsed_points,
    )


def _finite(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or abs(value) >= COUNT_LIMIT:
        raise RejectedMessage("bad_health", f"{where} must be a number")
    if not math.isfinite(value):
        raise RejectedMessage("bad_health", f"{where} must be finite")
    return float(value)


def parse_refusal(body: object, reason: str) -> Refusal:
    """A Refusal from its JSON object (in health, or the bridge's `_rejections` message)."""
    if not isinstance(body, dict):
        raise RejectedMessage(reason, "a refusal must be a JSON object")
    name = body.get("reason")
    if not isinstance(name, str) or not REASON.fullmatch(name):
        raise RejectedMessage(reason, "refusal reason must be a reason code")
    seq = body.get("seq")
    if seq is not None and not _is_count(seq):
        raise RejectedMessage(reason, "refusal seq must be a non-negative integer")
    at = body.get("at")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at) or at < 0:
        raise RejectedMessage(reason, "refusal at must be epoch milliseconds")
    detail = _text(body, "detail", MAX_TEXT_CHARS, reason) or ""
    return Refusal(name, detail, float(at), seq)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < COUNT_LIMIT


def _count(body: dict[str, object], key: str) -> int:
    value = body.get(key)
    if not _is_count(value):
        raise RejectedMessage("bad_health", f"{key} must be a whole number, 0 or more")
    assert isinstance(value, int)
    return value


def _optional_count(body: dict[str, object], key: str) -> int | None:
    return None if body.get(key) is None else _count(body, key)


def _number(body: dict[str, object], key: str) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RejectedMessage("bad_health", f"{key} must be a number")
    number = float(value) if not isinstance(value, int) or abs(value) < COUNT_LIMIT else math.inf
    if not math.isfinite(number) or number < 0:
        raise RejectedMessage("bad_health", f"{key} must be a finite number, 0 or more")
    return number


def _optional_number(body: dict[str, object], key: str) -> float | None:
    return None if body.get(key) is None else _number(body, key)


def _switch(body: dict[str, object], key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise RejectedMessage("bad_health", f"{key} must be true or false")
    return value


def _text(body: dict[str, object], key: str, limit: int, reason: str = "bad_health") -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise RejectedMessage(reason, f"{key} must be text of at most {limit} characters")
    problem = text_problem(value)
    if problem is not None:
        raise RejectedMessage(reason, f"{key} {problem}")
    return value


def _reasons(value: object) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_REASONS:
        raise RejectedMessage("bad_health", f"rejected must be an object of at most {MAX_REASONS} counts")
    counts = {}
    for name, count in value.items():
        if not REASON.fullmatch(name) or not _is_count(count):
            raise RejectedMessage("bad_health", "rejected must map reason codes to whole numbers")
        counts[name] = count
    return counts
