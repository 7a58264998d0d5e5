"""The reading: its typed form, its JSON payload and the contract's validation rules.

This module is the one definition of what a reading is. The publisher encodes with it,
the bridge decodes with it; nothing else parses a payload.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
# Names and tag values already found valid: a device sends the same few with every reading,
# and checking them again is a third of parsing one. Bounded: emptied when this full, so a
# flood of distinct names costs the check, never memory.
KNOWN_GOOD_MAX = 4096
_good_tags: set[str] = set()
_good_metric_names: set[str] = set()


def _remember(known: set[str], value: str) -> None:
    if len(known) >= KNOWN_GOOD_MAX:
        known.clear()
    known.add(value)


# RFC 3339: date, "T" (or "t"/space), time, optional fraction, mandatory zone.
RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


class RejectedMessage(ValueError):
    """A message that breaks the contract; `reason` is a short, stable code.

    `seq` is the reading's own `seq` when the payload got far enough to show one, so the
    publisher told of the rejection can say which of its readings it was.
    """

    def __init__(self, reason: str, detail: str, seq: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.seq = seq


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading of one device: microsecond Unix time, metrics as floats."""

    device: str
    ts_us: int
    metrics: dict[str, float]
    seq: int | None = None
    sensor: str | None = None
    location: str | None = None

    @property
    def tags(self) -> dict[str, str]:
        """The InfluxDB tags: `device`, and `sensor` and `location` when given."""
        tags = {"device": self.device}
        if self.sensor is not None:
            tags["sensor"] = self.sensor
        if self.location is not None:
            tags["location"] = self.location
        return tags

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
    # Plain arithmetic rather than datetime objects: this runs for every reading.
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    y, mo, d, h, mi, sec = int(year), int(month), int(day), int(hour), int(minute), int(second)
    if not (1 <= mo <= 12 and 1 <= d <= _days_in_month(y, mo) and h <= 23 and mi <= 59 and sec <= 60):
        raise RejectedMessage("bad_ts", f"ts {value!r} is not a real date and time")
    offset_s = 0
    if not zulu:
        if int(off_h) > 23 or int(off_m) > 59:
            raise RejectedMessage("bad_ts", f"ts {value!r} has an impossible zone offset")
        offset_s = (int(off_h) * 3600 + int(off_m) * 60) * (1 if sign == "+" else -1)
    seconds = _days_since_epoch(y, mo, d) * 86400 + h * 3600 + mi * 60 + min(sec, 59) - offset_s
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0  # beyond microseconds: cut
    ts_us = seconds * 1_000_000 + micros
    if ts_us < 0:
        raise RejectedMessage("bad_ts", f"ts {value!r} is before 1970")
    return ts_us


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_since_epoch(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def text_problem(value: str) -> str | None:
    """What makes `value` unfit to be stored and shown as text, or None when it is fine.

    Refused: control characters (C0, DEL and the C1 block U+0080-U+009F, which terminals and
    logs take for commands) and lone surrogates (what Python makes of a byte that is not UTF-8
    in an environment variable, say a Latin-1 file; such a string cannot be encoded at all).
    """
    for ch in value:
        code = ord(ch)
        if code < 32 or 127 <= code <= 159:
            return f"contains the control character U+{code:04X}"
        if 0xD800 <= code <= 0xDFFF:
            # Half of a UTF-16 pair on its own: no encoding can store it. Python makes one of
            # each byte that is not UTF-8 in an environment variable (a Latin-1 env file).
            return f"contains U+{code:04X}, which is not text (a byte that is not UTF-8, from a Latin-1 file say)"
    return None


def check_tag(key: str, value: object) -> str:
    """Return `value` if it may be the tag `key` (`sensor`, `location`), else raise
    RejectedMessage("bad_tag"). Publisher settings and the bridge both call this."""
    if isinstance(value, str) and value in _good_tags:
        return value
    if not isinstance(value, str) or not 1 <= len(value) <= TAG_MAX_CHARS:
        raise RejectedMessage("bad_tag", f"{key} must be a string of 1 to {TAG_MAX_CHARS} characters")
    problem = text_problem(value)
    if problem is not None:
        raise RejectedMessage("bad_tag", f"{key} {problem}")
    if "\\" in value:  # InfluxDB 1.x line protocol cannot store a backslash in a tag exactly
        raise RejectedMessage("bad_tag", f"{key} contains a backslash")
    _remember(_good_tags, value)
    return value


def _tag(body: dict[str, object], key: str) -> str | None:
    if key not in body:
        return None
    return check_tag(key, body[key])


def _metric(name: str, value: object) -> float:
    if name not in _good_metric_names:
        if not METRIC_NAME.fullmatch(name):
            raise RejectedMessage("bad_metric_name", f"metric name {name[:70]!r} must match [a-z][a-z0-9_]{{0,63}}")
        if name in FORBIDDEN_METRICS:
            raise RejectedMessage("bad_metric_name", f"metric name {name!r} is reserved")
        _remember(_good_metric_names, name)
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


# One decoder for all: json.loads with an argument builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode_object(payload: bytes, reason: str | None = None) -> dict[str, object]:
    """A JSON object from UTF-8 bytes, strictly: no NaN or Infinity, no number of more
    digits than Python converts (4,300), no nesting deeper than the parser's stack.

    Raises RejectedMessage with `reason`, or with not_utf8 / not_json / not_object when
    `reason` is None (readings have a reason for each).
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedMessage(reason or "not_utf8", f"not UTF-8: {exc}") from None
    try:
        body = _DECODER.decode(text)
    except RejectedMessage as exc:
        raise RejectedMessage(reason or exc.reason, exc.detail) from None
    except RecursionError:
        raise RejectedMessage(reason or "not_json", "not JSON: nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise RejectedMessage(reason or "not_json", f"not JSON: {exc}") from None
    except ValueError as exc:  # int() refuses more than 4,300 digits (sys.int_info)
        raise RejectedMessage(reason or "not_json", f"not JSON we can read: {str(exc)[:120]}") from None
    if not isinstance(body, dict):
        raise RejectedMessage(reason or "not_object", f"the payload is a JSON {type(body).__name__}, not an object")
    return body


def parse_reading(device: str, payload: bytes, received_us: int) -> Reading:
    """Validate a payload per the contract and return the Reading, or raise RejectedMessage.

    `device` must already be valid (it comes from the topic, see `common.topics`).
    `received_us` stamps a reading without `ts` and is the reference for "in the future".
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RejectedMessage("too_large", f"{len(payload)} bytes, at most {MAX_PAYLOAD_BYTES}")
    body = decode_object(payload)
    raw_seq = body.get("seq")
    if "seq" in body and (isinstance(raw_seq, bool) or not isinstance(raw_seq, int) or not 0 <= raw_seq < 2**63):
        raise RejectedMessage("bad_seq", "seq must be a non-negative integer below 2**63")
    seq = raw_seq if isinstance(raw_seq, int) else None
    try:
        ts_us = parse_ts(body["ts"]) if "ts" in body else received_us
        if ts_us > received_us + MAX_FUTURE_US:
            ahead_s = (ts_us - received_us) / 1e6
            raise RejectedMessage("ts_in_future", f"ts is {ahead_s:.0f} s ahead of the bridge's clock")
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
    except RejectedMessage as exc:
        exc.seq = seq
        raise
