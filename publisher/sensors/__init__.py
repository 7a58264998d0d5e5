"""Sensor drivers, registered by name: `simulated`, `dht22`, `dht11`."""

from __future__ import annotations

from publisher.sensors.base import Measurement, Sensor, SensorReadError
from publisher.sensors.dht import DhtSensor, open_device
from publisher.sensors.simulated import SimFaults, SimulatedSensor

__all__ = ["SENSORS", "Measurement", "Sensor", "SensorReadError", "SimFaults", "open_sensor"]

SENSORS = ("simulated", "dht22", "dht11")


def open_sensor(name: str, pin: str, seed: int, faults: SimFaults) -> Sensor:
    """Build the driver `name`; raises SensorReadError if its hardware is missing.

    The pin is for hardware only; the seed and faults for the simulation only.
    """
    if name == "simulated":
        return SimulatedSensor(seed, faults)
    return DhtSensor(name, open_device(name, pin))
