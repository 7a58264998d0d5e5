"""A simulated room sensor: seeded, with slow drift, a daily cycle and measurement noise."""

from __future__ import annotations

import math
import random

from common.reading import now_us
from publisher.sensors.base import Measurement


class SimulatedSensor:
    """Temperature (°C) and relative humidity (%) of an imaginary room.

    The same seed gives the same sequence of values. Temperature follows a daily cycle
    around a base value plus a mean-reverting random drift; humidity moves against
    temperature, as it does in a closed room. Values are rounded to the 0.1 a DHT22 gives.
    """

    min_interval_s = 0.0

    def __init__(self, seed: int, base_temperature: float = 21.0, base_humidity: float = 45.0) -> None:
        self._random = random.Random(seed)
        self._base_temperature = base_temperature + self._random.uniform(-2.0, 2.0)
        self._base_humidity = base_humidity + self._random.uniform(-5.0, 5.0)
        self._drift = 0.0
        self._phase = self._random.uniform(0, 2 * math.pi)

    def read(self) -> Measurement:
        ts_us = now_us()
        # Ornstein-Uhlenbeck drift: wanders, but is pulled back towards 0.
        self._drift += -0.02 * self._drift + self._random.gauss(0.0, 0.05)
        day = 2 * math.pi * (ts_us / 1e6) / 86400 + self._phase
        temperature = self._base_temperature + 1.5 * math.sin(day) + self._drift + self._random.gauss(0, 0.05)
        humidity = self._base_humidity - 2.0 * (temperature - self._base_temperature) + self._random.gauss(0, 0.2)
        humidity = min(100.0, max(0.0, humidity))
        return Measurement(ts_us, {"temperature": round(temperature, 1), "humidity": round(humidity, 1)})

    def close(self) -> None:
        """Nothing to release."""
