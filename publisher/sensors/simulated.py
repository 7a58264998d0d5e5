"""A simulated room sensor: seeded, with slow drift, a daily cycle, noise and optional faults."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from common.reading import now_us
from publisher.sensors.base import Measurement, SensorReadError
from publisher.sensors.dht import RANGES

# What the real DHT library raises, so a simulated failure looks like a real one in logs.
DHT_ERRORS = (
    "DHT sensor not found, check wiring",
    "A full buffer was not returned. Try again.",
    "Checksum did not validate. Try again.",
)


@dataclass(frozen=True)
class SimFaults:
    """Faults to inject, so the publisher's defences run without hardware.

    `fail_rate`: share of reads that fail as a DHT's do; `spike_rate`: share of reads with a
    glitch value (a jump of 20-40 °C, or humidity at 0 or 100 %); `stuck_after`: after this
    many reads the values never change again (0: never).
    """

    fail_rate: float = 0.0
    spike_rate: float = 0.0
    stuck_after: int = 0


class SimulatedSensor:
    """Temperature (°C) and relative humidity (%) of an imaginary room.

    The same seed gives the same sequence of values and faults. Temperature follows a daily
    cycle around a base value plus a mean-reverting random drift; humidity moves against
    temperature, as it does in a closed room. Values are rounded to the 0.1 a DHT22 gives.
    """

    min_interval_s = 0.0
    ranges = RANGES["dht22"]

    def __init__(
        self, seed: int, faults: SimFaults | None = None, base_temperature: float = 21.0, base_humidity: float = 45.0
    ) -> None:
        self._random = random.Random(seed)
        self._faults = faults or SimFaults()
        self._fault_random = random.Random(seed + 1)  # faults do not change the values' sequence
        self._base_temperature = base_temperature + self._random.uniform(-2.0, 2.0)
        self._base_humidity = base_humidity + self._random.uniform(-5.0, 5.0)
        self._drift = 0.0
        self._phase = self._random.uniform(0, 2 * math.pi)
        self._reads = 0
        self._stuck: dict[str, float] | None = None

    def read(self) -> Measurement:
        ts_us = now_us()
        self._reads += 1
        faults = self._faults
        if faults.fail_rate and self._fault_random.random() < faults.fail_rate:
            raise SensorReadError(self._fault_random.choice(DHT_ERRORS))
        if self._stuck is not None:
            return Measurement(ts_us, dict(self._stuck))
        metrics = self._room(ts_us)
        if faults.stuck_after and self._reads >= faults.stuck_after:
            self._stuck = metrics
        if faults.spike_rate and self._fault_random.random() < faults.spike_rate:
            return Measurement(ts_us, self._spike(metrics))
        return Measurement(ts_us, metrics)

    def close(self) -> None:
        """Nothing to release."""

    def _room(self, ts_us: int) -> dict[str, float]:
        # Ornstein-Uhlenbeck drift: wanders, but is pulled back towards 0.
        self._drift += -0.02 * self._drift + self._random.gauss(0.0, 0.05)
        day = 2 * math.pi * (ts_us / 1e6) / 86400 + self._phase
        temperature = self._base_temperature + 1.5 * math.sin(day) + self._drift + self._random.gauss(0, 0.05)
        humidity = self._base_humidity - 2.0 * (temperature - self._base_temperature) + self._random.gauss(0, 0.2)
        humidity = min(100.0, max(0.0, humidity))
        return {"temperature": round(temperature, 1), "humidity": round(humidity, 1)}

    def _spike(self, metrics: dict[str, float]) -> dict[str, float]:
        if self._fault_random.random() < 0.5:
            jump = self._fault_random.uniform(20.0, 40.0) * self._fault_random.choice((-1, 1))
            return {**metrics, "temperature": round(metrics["temperature"] + jump, 1)}
        return {**metrics, "humidity": self._fault_random.choice((0.0, 100.0))}
