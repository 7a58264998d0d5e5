"""Sensor drivers, registered by name: `simulated`, `dht22`, `dht11`, `ds18b20`."""

from __future__ import annotations

from pathlib import Path

from publisher.sensors.base import Measurement, Sensor, SensorReadError
from publisher.sensors.dht import MIN_INTERVAL_S as DHT_MIN_INTERVAL_S
from publisher.sensors.dht import DhtSensor, open_device
from publisher.sensors.ds18b20 import MIN_INTERVAL_S as DS18B20_MIN_INTERVAL_S
from publisher.sensors.ds18b20 import W1_DEVICES, Ds18b20Sensor, find_device
from publisher.sensors.simulated import SimFaults, SimulatedSensor

__all__ = [
    "MIN_INTERVAL_S",
    "SENSORS",
    "W1_DEVICES",
    "Measurement",
    "Sensor",
    "SensorReadError",
    "SimFaults",
    "find_device",
    "open_sensor",
]

SENSORS = ("simulated", "dht22", "dht11", "ds18b20")
# The shortest interval each driver measures at (seconds).
MIN_INTERVAL_S = {
    "simulated": 0.0,
    "dht22": DHT_MIN_INTERVAL_S,
    "dht11": DHT_MIN_INTERVAL_S,
    "ds18b20": DS18B20_MIN_INTERVAL_S,
}


def open_sensor(
    name: str, pin: str, seed: int, faults: SimFaults, onewire_id: str = "", w1_devices: Path = W1_DEVICES
) -> Sensor:
    """Build the driver `name`; raises SensorReadError if its hardware is missing.

    The pin is for a DHT, the 1-Wire id and folder for a DS18B20, the seed and faults for
    the simulation.
    """
    if name == "simulated":
        return SimulatedSensor(seed, faults)
    if name == "ds18b20":
        try:
            return Ds18b20Sensor(find_device(onewire_id, w1_devices))
        except ValueError as exc:
            raise SensorReadError(str(exc)) from None
    return DhtSensor(name, open_device(name, pin))
