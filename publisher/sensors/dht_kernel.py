"""A DHT22 or DHT11 read through the kernel's dht11 IIO driver (`dtoverlay=dht11,gpiopin=4`).

The kernel times the sensor's pulses itself, which Python on a busy Pi 4 or a Pi 5 cannot do
reliably. It lists the sensor as an IIO device (`/sys/bus/iio/devices/iio:deviceN`, whose
`name` starts with `dht11`; the same driver reads a DHT22) with two files: `in_temp_input`
in thousandths of a degree Celsius and `in_humidityrelative_input` in thousandths of a
percent. A read of either measures anew when the last measurement is more than 2 s old and
otherwise answers with that one: both files read together come from one measurement. A
failed measurement is an EIO (pulses that do not add up, a bad checksum) or an ETIMEDOUT
(no answer: wiring).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from pathlib import Path

from common.reading import now_us
from publisher.sensors.base import Measurement, SensorReadError, Spacing, choose
from publisher.sensors.dht import RANGES

IIO_DEVICES = Path("/sys/bus/iio/devices")
# The kernel keeps a measurement for 2 s (DHT11_DATA_VALID_TIME): a sooner read is the old one.
MIN_INTERVAL_S = 2.0
SETTLE_S = 0.05
DRIVER_NAME = "dht11"  # the kernel driver's name, the start of the device's `name`


def find_iio_device(device: str, root: Path = IIO_DEVICES) -> Path:
    """The IIO device's folder: `device` (e.g. iio:device0) or, when empty, the one device of
    the dht11 driver. Raises ValueError naming what is there when it is not."""
    present = sorted(path.name for path in root.glob("iio:device*") if _is_dht(path)) if root.is_dir() else []
    nothing = f"none in {root} (is dtoverlay=dht11,gpiopin=N in config.txt?)"
    return root / choose(present, device, "dht11 IIO device", nothing)


def _is_dht(path: Path) -> bool:
    try:
        return (path / "name").read_text().strip().startswith(DRIVER_NAME)
    except OSError:
        return False


class DhtKernelSensor:
    """One DHT through the kernel: `model` (dht22 or dht11) gives the measuring ranges."""

    min_interval_s = MIN_INTERVAL_S

    def __init__(
        self,
        model: str,
        folder: Path,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ranges = RANGES[model]
        self._folder = folder
        self._spacing = Spacing(MIN_INTERVAL_S + SETTLE_S, clock, sleep)

    def read(self) -> Measurement:
        self._spacing.wait()
        ts_us = now_us()
        temperature = self._value("in_temp_input")
        humidity = self._value("in_humidityrelative_input")  # the same measurement (see above)
        return Measurement(ts_us, {"temperature": temperature, "humidity": humidity})

    def _value(self, name: str) -> float:
        path = self._folder / name
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise SensorReadError(f"the IIO device {self._folder.name} is gone (overlay removed?)") from None
        except OSError as exc:  # EIO: a failed measurement; ETIMEDOUT: no answer
            hint = " (no answer from the sensor: check its wiring and pull-up)" if exc.errno == errno.ETIMEDOUT else ""
            raise SensorReadError(f"reading {path.name}: {exc.strerror}{hint}") from None
        try:
            return int(text.strip()) / 1000
        except ValueError:
            raise SensorReadError(f"unexpected {path.name} contents: {text[:40]!r}") from None

    def close(self) -> None:
        pass  # nothing held: the kernel owns the pin


__all__ = ["IIO_DEVICES", "DhtKernelSensor", "find_iio_device"]
