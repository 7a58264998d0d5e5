"""Rejected messages: counted by reason, the latest kept for `/api/rejections`, logs rate-limited.

Bounded whatever arrives: the latest `keep` (100) rejections, each with at most 200
characters of topic, 300 of detail and 200 bytes of payload; one count per reason (the
contract's fixed set); the log throttle remembers at most 1,000 (topic, reason) pairs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import asdict, dataclass

from bridge.router import Refused
from common.reading import RejectedMessage

log = logging.getLogger(__name__)

PAYLOAD_PREVIEW_BYTES = 200
TOPIC_CHARS = 200  # MQTT allows 65,535 bytes of topic: keep the start
DETAIL_CHARS = 300
LOG_EVERY_S = 60.0  # at most one log line per topic and reason per minute ...
LOG_KEYS = 1000  # ... remembered for this many (topic, reason) pairs, the least recent go first


@dataclass(frozen=True)
class Rejection:
    """One rejected message as shown to a person: when (epoch ms), where, why, what."""

    time_ms: float
    topic: str
    reason: str
    detail: str
    payload_start: str


class RejectionLog:
    """Thread-safe record of rejections; keeps the latest `keep` in memory."""

    def __init__(self, keep: int = 100) -> None:
        self._latest: deque[Rejection] = deque(maxlen=keep)
        self._counts: Counter[str] = Counter()
        self._last_logged: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def refused(self, refusal: Refused, topic: str, payload: bytes) -> None:
        """The pipeline's RefusedSink."""
        self.add(topic, payload, refusal.error)

    def add(self, topic: str, payload: bytes, error: RejectedMessage) -> None:
        """Record one rejection and log it unless the same topic and reason logged lately."""
        preview = payload[:PAYLOAD_PREVIEW_BYTES].decode("utf-8", errors="replace")
        topic = topic[:TOPIC_CHARS]
        rejection = Rejection(time.time() * 1000, topic, error.reason, error.detail[:DETAIL_CHARS], preview)
        self._store(rejection)
        now = time.monotonic()
        with self._lock:
            key = (topic, error.reason)
            quiet = now - self._last_logged.get(key, -LOG_EVERY_S) < LOG_EVERY_S
            if not quiet:
                self._last_logged[key] = now
                self._last_logged.move_to_end(key)
                while len(self._last_logged) > LOG_KEYS:
                    self._last_logged.popitem(last=False)
        if not quiet:
            log.warning("rejected a message on %r: %s: %s", topic[:100], error.reason, rejection.detail)

    def _store(self, rejection: Rejection) -> None:
        """Keep it for counts() and latest(); here in memory (bridge/shared.py: in Redis)."""
        with self._lock:
            self._latest.append(rejection)
            self._counts[rejection.reason] += 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def latest(self) -> list[dict[str, object]]:
        """The latest rejections, newest first, as JSON-ready dicts."""
        with self._lock:
            return [asdict(r) for r in reversed(self._latest)]
