"""Sensirion SHT40/41/45 on I2C: temperature and humidity, through adafruit-circuitpython-sht4x.

Each read sends the high-precision measurement command (no heater) and checks the two
CRC-8 bytes of the answer; the library raises RuntimeError when they do not add up.
"""

from __future__ import annotations

from typing import Any

from publisher.sensors.base import SensorReadError
from publisher.sensors.i2c import ChipSensor, open_i2c_sensor, parse_address

ADDRESSES = (0x44, 0x45, 0x46)  # SHT4x-A (the usual), -B and -C parts
# The datasheet's ranges; below 0 or above 100 % the library clamps the formula's result.
RANGES = {"temperature": (-40.0, 125.0), "humidity": (0.0, 100.0)}
# A high-precision measurement takes 8.3 ms; once a second keeps self-heating negligible.
MIN_INTERVAL_S = 1.0
address_option = parse_address("SHT4x", ADDRESSES)


def open_sht4x(addresses: tuple[int, ...], bus: Any = None) -> Sht4xSensor:
    """The sensor at the first of `addresses` that answers; `bus` is Blinka's unless a test gives one."""

    def build(library: Any, i2c: Any, address: int) -> Any:
        chip = library.SHT4x(i2c, address)
        _ = chip.serial_number  # a CRC-checked answer: this is an SHT4x, not just anything at the address
        return chip

    return Sht4xSensor(open_i2c_sensor("sht4x", "adafruit_sht4x", addresses, bus, build))


class Sht4xSensor(ChipSensor):
    """One SHT4x."""

    min_interval_s = MIN_INTERVAL_S
    ranges = RANGES

    def _measure(self) -> dict[str, float]:
        try:
            temperature, humidity = self._chip.measurements
        except RuntimeError as exc:  # "Invalid CRC calculated"
            raise SensorReadError(f"SHT4x answer failed its CRC check ({exc})") from None
        return {"temperature": temperature, "humidity": humidity}
