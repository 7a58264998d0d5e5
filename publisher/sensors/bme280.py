"""Bosch BME280 on I2C: temperature, humidity and pressure, through adafruit-circuitpython-bme280.

The library puts the chip in forced mode for each value it is asked for (one conversion,
then sleep), reads the factory calibration once at start and applies the datasheet's
compensation formulas. A BMP280 (chip id 0x58) is often sold as a BME280: it has no
humidity, and the library refuses it at start.
"""

from __future__ import annotations

from typing import Any

from publisher.sensors.i2c import ChipSensor, open_i2c_sensor, parse_address

ADDRESSES = (0x76, 0x77)  # SDO to ground, SDO to VDDIO (Adafruit's breakout)
# The datasheet's operating range (section 1): pressure in hPa.
RANGES = {"temperature": (-40.0, 85.0), "humidity": (0.0, 100.0), "pressure": (300.0, 1100.0)}
# Nothing in the chip limits it; more often warms it (self-heating, datasheet 3.5.1: weather
# monitoring takes one reading a minute).
MIN_INTERVAL_S = 1.0
address_option = parse_address("BME280", ADDRESSES)


def open_bme280(addresses: tuple[int, ...], bus: Any = None) -> Bme280Sensor:
    """The sensor at the first of `addresses` that answers; `bus` is Blinka's unless a test gives one."""
    return Bme280Sensor(
        open_i2c_sensor(
            "bme280",
            "adafruit_bme280.basic",
            addresses,
            bus,
            lambda library, i2c, address: library.Adafruit_BME280_I2C(i2c, address),
        )
    )


class Bme280Sensor(ChipSensor):
    """One BME280."""

    min_interval_s = MIN_INTERVAL_S
    ranges = RANGES

    def _measure(self) -> dict[str, float]:
        # The temperature first: the other two are compensated with its t_fine.
        temperature = self._chip.temperature
        return {"temperature": temperature, "humidity": self._chip.humidity, "pressure": self._chip.pressure}
