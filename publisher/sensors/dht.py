"""DHT22/AM2302 and DHT11 through adafruit-circuitpython-dht and Blinka (Raspberry Pi only)."""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.reading import now_us
from publisher.sensors.base import Measurement, SensorReadError, Spacing

# The library takes a new measurement only when more than 2 s passed since its last attempt
# (failed ones included) and otherwise returns the previous values as if they were new.
MIN_INTERVAL_S = 2.0
SETTLE_S = 0.05  # a little more than 2 s, so its strict `>` is true

# The datasheets' measuring ranges. DHT11 v1.3 parts measure -20..60 °C and 5..95 %; older
# ones 0..50 °C and 20..90 %: the wider range, so a newer part is not judged by an older one.
RANGES = {
    "dht22": {"temperature": (-40.0, 80.0), "humidity": (0.0, 100.0)},
    "dht11": {"temperature": (-20.0, 60.0), "humidity": (5.0, 95.0)},
}


def open_device(model: str, pin: str) -> Any:
    """The Adafruit device object for `model` on `pin`; SensorReadError if this is no Pi.

    The hardware libraries are imported here, not at module top, so that everything else
    runs on any PC. `use_pulseio=False`: Blinka's pulseio helper does not run on a Pi 5's
    GPIO chip, while bit-banging works on every model (a failed read is retried anyway).
    """
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
    check_gpio()
    device_class = {"dht22": adafruit_dht.DHT22, "dht11": adafruit_dht.DHT11}[model]
    return device_class(board_pin, use_pulseio=False)


def check_gpio(dev: Path = Path("/dev"), access: Callable[[Path, int], bool] = os.access) -> None:
    """SensorReadError unless a GPIO chip is there and this user may open one (`access`:
    os.access, which the tests replace, as root may open anything).

    Without it every read fails the same way for ever ("No Raspberry Pi header GPIO
    controller exposes GPIO 4"), which would look like a flaky sensor, not a wrong setup.
    """
    chips = sorted(dev.glob("gpiochip*"))
    if not chips:
        raise SensorReadError(f"no GPIO chip ({dev}/gpiochip*): not a Raspberry Pi, or its GPIO is not exposed here")
    if not any(access(chip, os.R_OK | os.W_OK) for chip in chips):
        raise SensorReadError(f"{chips[0]}: this user may not open it (put the user in group gpio)")


class DhtSensor:
    """One DHT device on one GPIO pin, built once and released by `close()`.

    `device` is the Adafruit object (tests pass a fake of it); `clock` and `sleep` are the
    library's own time.monotonic and time.sleep unless a test replaces them.
    """

    min_interval_s = MIN_INTERVAL_S

    def __init__(
        self,
        model: str,
        device: Any,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ranges = RANGES[model]
        self._device = device
        # Never ask sooner than the library measures: it would hand back the last values
        # as a new reading, a silent duplicate.
        self._spacing = Spacing(MIN_INTERVAL_S + SETTLE_S, clock, sleep)

    def read(self) -> Measurement:
        self._spacing.wait()
        try:
            temperature = self._device.temperature
            humidity = self._device.humidity  # the same measurement: cached by the library
        except RuntimeError as exc:
            # Expected now and then: "Checksum did not validate. Try again.", "DHT sensor not found, check wiring".
            raise SensorReadError(str(exc)) from None
        if temperature is None or humidity is None:
            raise SensorReadError("the sensor returned no value")
        # DHT11 values come back as int: always floats, so InfluxDB fields stay float.
        return Measurement(now_us(), {"temperature": float(temperature), "humidity": float(humidity)})

    def close(self) -> None:
        self._device.exit()
