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

from common.reading import MAX_PAYLOAD_BYTES, RejectedMessage, decode_object, text_problem

MAX_TEXT_CHARS = 500  # last_error and the bridge's refusal detail
MAX_NAME_CHARS = 64  # sensor, version, timestamps as text
MAX_REASONS = 32
REASON = re.compile(r"[a-z][a-z0-9_]{0,63}")
COUNT_LIMIT = 2**63


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
    )


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
