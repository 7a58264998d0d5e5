"""What every sensor driver is: `read() -> Measurement` and `close()`."""

from __future__ import annotations

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
