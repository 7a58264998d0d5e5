"""Rejected messages: counted by reason, the latest kept for `/api/rejections`, logs rate-limited."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass

from common.reading import RejectedMessage

log = logging.getLogger(__name__)

PAYLOAD_PREVIEW_BYTES = 200
LOG_EVERY_S = 60.0  # at most one log line per topic and reason per minute


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
        self._last_logged: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def add(self, topic: str, payload: bytes, error: RejectedMessage) -> None:
        """Record one rejection and log it unless the same topic and reason logged lately."""
        preview = payload[:PAYLOAD_PREVIEW_BYTES].decode("utf-8", errors="replace")
        rejection = Rejection(time.time() * 1000, topic, error.reason, error.detail, preview)
        self._store(rejection)
        now = time.monotonic()
        with self._lock:
            key = (topic, error.reason)
            quiet = now - self._last_logged.get(key, -LOG_EVERY_S) < LOG_EVERY_S
            if not quiet:
                self._last_logged[key] = now
                if len(self._last_logged) > 10_000:  # bound the memory a flood of topics takes
                    self._last_logged.clear()
        if not quiet:
            log.warning("rejected a message on %r: %s", topic[:100], error)

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
