"""The Pi's I2C bus through Blinka, for the I2C sensor drivers (bme280, sht4x).

The bus is the header's pins 3 (SDA) and 5 (SCL), `/dev/i2c-1`, switched on with
`sudo raspi-config nonint do_i2c 0` or `dtparam=i2c_arm=on` in config.txt. Blinka and the
chip libraries are imported in these functions, never at module top, so everything else
runs on any PC; the tests pass a bus of their own to the drivers instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from common.reading import now_us
from publisher.sensors.base import Measurement, SensorReadError

I2C_ENABLE = "switch I2C on: sudo raspi-config nonint do_i2c 0, or dtparam=i2c_arm=on in config.txt"


def import_library(driver: str, module: str) -> Any:
    """The chip library `module`; SensorReadError saying how to install it when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SensorReadError(f"the {driver} driver needs the Pi extras (pip install '.[pi]'): {exc}") from None


def open_bus(driver: str) -> Any:
    """Blinka's bus on the header's I2C pins; SensorReadError when this is no Pi or I2C is off."""
    board = import_library(driver, "board")
    try:
        return board.I2C()
    # Blinka raises what the platform gives: AttributeError (no I2C on this board),
    # ValueError or OSError (no /dev/i2c-1), RuntimeError, NotImplementedError.
    except Exception as exc:  # any of them means the same: no bus
        raise SensorReadError(f"no I2C bus ({exc}); {I2C_ENABLE}") from None


def open_chip(driver: str, addresses: Sequence[int], build: Callable[[int], Any]) -> Any:
    """`build(address)` for the first of `addresses` where the chip answers, else
    SensorReadError naming the addresses tried and what each said."""
    said = []
    for address in addresses:
        try:
            return build(address)
        # The libraries say "No I2C device at address: 0x76" (ValueError), "Failed to find
        # BME280! Chip ID 0x58" (RuntimeError), or the bus's own OSError.
        except (ValueError, RuntimeError, OSError) as exc:
            said.append(f"{address:#04x}: {exc}")
    raise SensorReadError(f"no {driver} answers ({'; '.join(said)}); check its wiring and address (i2cdetect -y 1)")


def parse_address(chip: str, allowed: Sequence[int]) -> Callable[[str], tuple[int, ...]]:
    """A parser for an `address` option: empty for every address the chip can have (tried in
    order), else one of them, as 0x76 or 118."""

    def parse(raw: str) -> tuple[int, ...]:
        if raw == "":
            return tuple(allowed)
        try:
            address = int(raw, 0)
        except ValueError:
            address = -1
        if address not in allowed:
            names = " or ".join(f"{a:#04x}" for a in allowed)
            raise ValueError(f"a {chip} answers at {names} only")
        return (address,)

    return parse


def open_i2c_sensor(
    driver: str, module: str, addresses: Sequence[int], bus: Any, build: Callable[[Any, Any, int], Any]
) -> Any:
    """The chip library `module` imported, the bus opened (Blinka's unless `bus` is given: the
    tests' fake), and `build(library, bus, address)` at the first address that answers."""
    library = import_library(driver, module)
    i2c = open_bus(driver) if bus is None else bus
    return open_chip(driver, addresses, lambda address: build(library, i2c, address))


class ChipSensor:
    """A sensor that is one chip on the bus, read through its library's object `chip`: a
    subclass says what `_measure()` reads. A bus that fails mid-read (errno 121: the chip did
    not acknowledge, a loose wire) is a read error; values keep 2 decimals, what these chips
    resolve (0.01 °C; more digits would be noise)."""

    min_interval_s: float
    ranges: dict[str, tuple[float, float]]

    def __init__(self, chip: Any) -> None:
        self._chip = chip

    def _measure(self) -> dict[str, float]:
        raise NotImplementedError

    def read(self) -> Measurement:
        ts_us = now_us()
        try:
            metrics = self._measure()
        except OSError as exc:
            raise SensorReadError(f"I2C read failed: {exc}") from None
        return Measurement(ts_us, {name: round(value, 2) for name, value in metrics.items()})

    def close(self) -> None:
        pass  # the chip idles between measurements; Blinka closes the bus at exit
