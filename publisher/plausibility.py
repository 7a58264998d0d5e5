"""Which measurements are data: inside the sensor's range, and no jump a real room cannot make.

A DHT now and then returns a value that passed its checksum and is still wrong: 0 % or
-50 °C for one read, or a 20 °C step that is gone at the next read. Publishing it would
draw a spike into every chart and every mean. A step is accepted once it proves real:
`confirm` reads in a row that agree with each other (the sensor was moved, a door opened).
"""

from __future__ import annotations

from collections.abc import Mapping

Range = tuple[float, float]


class Plausibility:
    """Judges one device's measurements in the order they were taken."""

    def __init__(self, ranges: Mapping[str, Range], max_jump: Mapping[str, float], confirm: int = 3) -> None:
        self._ranges = ranges
        # 0 or absent: no jump check for that metric.
        self._max_jump = {name: limit for name, limit in max_jump.items() if limit > 0}
        self._confirm = confirm
        self._last: dict[str, float] = {}  # the last accepted value per metric
        self._pending: list[dict[str, float]] = []  # consecutive reads that jumped from it

    def check(self, metrics: Mapping[str, float]) -> str | None:
        """None if `metrics` may be published, else the reason: `out_of_range` or `jump`."""
        for name, value in metrics.items():
            low, high = self._ranges.get(name, (float("-inf"), float("inf")))
            if not low <= value <= high:
                return "out_of_range"
        if self._jumps(self._last, metrics):
            # A new level is real when `confirm` reads in a row agree with each other.
            if self._pending and self._jumps(self._pending[-1], metrics):
                self._pending.clear()
            self._pending.append(dict(metrics))
            if len(self._pending) < self._confirm:
                return "jump"
        self._pending.clear()
        self._last.update(metrics)
        return None

    def _jumps(self, before: Mapping[str, float], after: Mapping[str, float]) -> bool:
        return any(
            name in before and abs(value - before[name]) > self._max_jump[name]
            for name, value in after.items()
            if name in self._max_jump
        )
