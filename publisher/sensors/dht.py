"""DHT22/AM2302 and DHT11 through adafruit-circuitpython-dht and Blinka (Raspberry Pi only)."""

from __future__ import annotations

import importlib
from typing import Any

from common.reading import now_us
from publisher.sensors.base import Measurement, SensorReadError


class DhtSensor:
    """One DHT device on one GPIO pin, built once and released by `close()`.

    The hardware libraries are imported here, not at module top, so that everything else
    runs on any PC.
    """

    # DHT22: one measurement per 2 s; faster reads return the cached value.
    min_interval_s = 2.0

    def __init__(self, model: str, pin: str) -> None:
        try:
            board = importlib.import_module("board")
            adafruit_dht = importlib.import_module("adafruit_dht")
        except ImportError as exc:
            raise SensorReadError(f"the {model} driver needs the Pi extras (pip install '.[pi]'): {exc}") from None
        try:
            board_pin = getattr(board, pin)
        except AttributeError:
            # On a PC `import board` succeeds but has no GPIO pins.
            raise SensorReadError(f"this board has no pin {pin} (not a Raspberry Pi?)") from None
        device_class = {"dht22": adafruit_dht.DHT22, "dht11": adafruit_dht.DHT11}[model]
        self._device: Any = device_class(board_pin)

    def read(self) -> Measurement:
        try:
            temperature = self._device.temperature
            humidity = self._device.humidity
        except RuntimeError as exc:
            # Expected now and then: "Checksum did not validate", "DHT sensor not found".
            raise SensorReadError(str(exc)) from None
        if temperature is None or humidity is None:
            raise SensorReadError("the sensor returned no value")
        # DHT11 humidity comes back as int: always floats, so InfluxDB fields stay float.
        return Measurement(now_us(), {"temperature": float(temperature), "humidity": float(humidity)})

    def close(self) -> None:
        self._device.exit()
