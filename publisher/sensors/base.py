"""What every sensor driver is: `read() -> Measurement` and `close()`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class SensorReadError(Exception):
    """A read failed in a way that is expected now and then (wiring, checksum); retry later."""


@dataclass(frozen=True)
class Measurement:
    """What a sensor measured and when (Unix microseconds), in the contract's units."""

    ts_us: int
    metrics: dict[str, float]


class Sensor(Protocol):
    """A sensor driver. `read()` raises SensorReadError on a failed read."""

    # The shortest interval between two real measurements, in seconds.
    min_interval_s: float
    # What the sensor can measure, per metric: (lowest, highest); anything outside is a glitch.
    ranges: dict[str, tuple[float, float]]

    def read(self) -> Measurement: ...

    def close(self) -> None: ...


class Spacing:
    """Keeps two reads at least `gap` seconds apart, sleeping before a read that is too soon.

    For sensors that answer a read sooner than they measure with the previous values, as if
    they were new (a silent duplicate): the DHT library and the kernel's dht11 driver.
    `clock` and `sleep` are time.monotonic and time.sleep unless a test replaces them.
    """

    def __init__(
        self, gap: float, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._gap = gap
        self._clock = clock
        self._sleep = sleep
        self._last: float | None = None

    def wait(self) -> None:
        """Return when a read may start (at once for the first), and count it as started."""
        if self._last is not None:
            wait = self._last + self._gap - self._clock()
            if wait > 0:
                self._sleep(wait)
        self._last = self._clock()


def choose(present: list[str], wanted: str, what: str, nothing: str) -> str:
    """The one `what` the kernel lists that a setting names (`wanted`), or with none named the
    only one there; ValueError saying what is there otherwise. `nothing`: what to say when
    there is none at all (the overlay that makes them)."""
    if not wanted:
        if len(present) != 1:
            raise ValueError(f"name the {what}: there are {len(present)} ({', '.join(present) or nothing})")
        return present[0]
    if wanted not in present:
        raise ValueError(f"no {what} {wanted} (there: {', '.join(present) or 'none'})")
    return wanted
