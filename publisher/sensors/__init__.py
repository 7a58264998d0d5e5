"""Sensor drivers, registered by name: `simulated`, `dht22`, `dht11`."""

from __future__ import annotations

from collections.abc import Callable

from publisher.sensors.base import Measurement, Sensor, SensorReadError
from publisher.sensors.dht import DhtSensor
from publisher.sensors.simulated import SimulatedSensor

__all__ = ["SENSORS", "Measurement", "Sensor", "SensorReadError", "open_sensor"]

# name -> factory(pin, seed); the pin is ignored by the simulation, the seed by hardware.
SENSORS: dict[str, Callable[[str, int], Sensor]] = {
    "simulated": lambda pin, seed: SimulatedSensor(seed),
    "dht22": lambda pin, seed: DhtSensor("dht22", pin),
    "dht11": lambda pin, seed: DhtSensor("dht11", pin),
}


def open_sensor(name: str, pin: str, seed: int) -> Sensor:
    """Build the driver registered as `name`; raises SensorReadError if the hardware is missing."""
    return SENSORS[name](pin, seed)
