"""The totals sink: readings accepted and stored since the bridge started, each counted once."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from common.reading import Reading

RECENT_POINTS = 20_000  # (device, ts) of the latest stored readings, to count a rewrite once


class Totals:
    """Counts for /metrics and /api/pipeline (with replicas, bridge/shared.py adds them up).

    `stored` counts readings, not writes: one written again while still among the recent
    ones (the broker redelivered it, or a publisher resent it from its outbox) counts as
    `rewritten` instead.
    """

    def __init__(self) -> None:
        self.accepted_count = 0
        self.stored_count = 0
        self.rewritten_count = 0
        self._recent: OrderedDict[int, None] = OrderedDict()  # hash((device, ts_us)), oldest first

    def accepted(self, readings: Sequence[Reading]) -> None:
        self.accepted_count += len(readings)

    def stored(self, readings: Sequence[Reading]) -> None:
        recent = self._recent
        for reading in readings:
            key = hash((reading.device, reading.ts_us))
            if key in recent:
                self.rewritten_count += 1
            else:
                self.stored_count += 1
                recent[key] = None
        while len(recent) > RECENT_POINTS:
            recent.popitem(last=False)
