"""Sensor drivers, registered by name, and the sensors a publisher is set up with.

A publisher reads one or more sensors (`SENSORPIPE_SENSORS`): each entry names a driver and
its options, `driver[,option=value]...`, e.g. `dht22,pin=D4 ds18b20,name=freezer`. An entry's
`name` goes before each of its metrics (`freezer_temperature`), so two sensors never give
the same metric; without one the metrics keep their own names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.settings import parse_count, parse_fraction
from publisher.sensors import bme280, dht, dht_kernel, ds18b20, sht4x
from publisher.sensors.base import Measurement, Sensor, SensorReadError
from publisher.sensors.simulated import SimFaults, SimulatedSensor

__all__ = [
    "DRIVERS",
    "SENSORS",
    "Driver",
    "Measurement",
    "Sensor",
    "SensorContext",
    "SensorReadError",
    "SensorSpec",
    "SimFaults",
    "open_sensors",
    "parse_sensors",
]

# A sensor's name: the start of its metrics' names, so short and in the metric alphabet.
NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
GPIO_PIN = re.compile(r"D([0-9]|1[0-9]|2[0-7])")  # Blinka's names for the Pi's GPIO 0-27
IIO_DEVICE = re.compile(r"iio:device[0-9]{1,4}")
# What the publisher adds to a sensor that has both (publisher/derived.py).
DERIVED = ("dew_point", "absolute_humidity")


@dataclass(frozen=True)
class SensorContext:
    """What opening a sensor needs from the publisher's other settings."""

    seed: int = 0  # the simulation's seed (the nth simulated sensor gets seed + n)
    faults: SimFaults = field(default_factory=SimFaults)  # the simulation's faults, unless its entry says
    w1_devices: Path = ds18b20.W1_DEVICES
    iio_devices: Path = dht_kernel.IIO_DEVICES


@dataclass(frozen=True)
class SensorSpec:
    """One configured sensor: its driver, its name (empty: none) and its options, parsed."""

    driver: str
    name: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    index: int = 0  # its place in the list

    @property
    def key(self) -> str:
        """What health calls it: its name, else its driver's."""
        return self.name or self.driver

    def metric(self, base: str) -> str:
        """The published name of the driver's metric `base`."""
        return f"{self.name}_{base}" if self.name else base

    @property
    def metrics(self) -> tuple[str, ...]:
        """What it may publish, derived values included."""
        measured = DRIVERS[self.driver].metrics
        derived = DERIVED if {"temperature", "humidity"} <= set(measured) else ()
        return tuple(self.metric(base) for base in (*measured, *derived))


@dataclass(frozen=True)
class Driver:
    """A driver by name: what it measures, how often at most, its options (name -> (default
    as text, parser)), how to open it, and a check at start that what it names is there
    (ValueError saying what is)."""

    name: str
    metrics: tuple[str, ...]
    min_interval_s: float
    open: Callable[[SensorSpec, SensorContext], Sensor]
    options: Mapping[str, tuple[str, Callable[[str], Any]]] = field(default_factory=dict)
    check: Callable[[SensorSpec, SensorContext], None] = lambda spec, context: None


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"use one of {', '.join(allowed)}")
        return raw

    return parse


def _matching(pattern: re.Pattern[str], meaning: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw and not pattern.fullmatch(raw):
            raise ValueError(f"must be {meaning}")
        return raw

    return parse


def _or_default(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse`, with empty meaning: as the publisher-wide setting says."""
    return lambda raw: None if raw == "" else parse(raw)


def _dht(model: str) -> Driver:
    return Driver(
        model,
        ("temperature", "humidity"),
        dht.MIN_INTERVAL_S,
        lambda spec, context: dht.DhtSensor(model, dht.open_device(model, spec.options["pin"])),
        {"pin": ("D4", _matching(GPIO_PIN, "a GPIO pin name from D0 to D27"))},
    )


def _open_simulated(spec: SensorSpec, context: SensorContext) -> Sensor:
    given, options = context.faults, spec.options
    faults = SimFaults(
        given.fail_rate if options["fail_rate"] is None else options["fail_rate"],
        given.spike_rate if options["spike_rate"] is None else options["spike_rate"],
        given.stuck_after if options["stuck_after"] is None else options["stuck_after"],
    )
    return SimulatedSensor(context.seed + spec.index, faults)


def _probe(spec: SensorSpec, context: SensorContext) -> Path:
    return ds18b20.find_device(spec.options["id"], context.w1_devices)


def _iio(spec: SensorSpec, context: SensorContext) -> Path:
    return dht_kernel.find_iio_device(spec.options["device"], context.iio_devices)


def _opened(find: Callable[[SensorSpec, SensorContext], Path], build: Callable[[SensorSpec, Path], Sensor]) -> Any:
    """An opener for a sensor the kernel lists: what `find` names, built, or SensorReadError."""

    def open_(spec: SensorSpec, context: SensorContext) -> Sensor:
        try:
            return build(spec, find(spec, context))
        except ValueError as exc:
            raise SensorReadError(str(exc)) from None

    return open_


def _checked(find: Callable[[SensorSpec, SensorContext], Path]) -> Callable[[SensorSpec, SensorContext], None]:
    """A start-up check: `find` raises ValueError when what the entry names is not there."""

    def check(spec: SensorSpec, context: SensorContext) -> None:
        find(spec, context)

    return check


DRIVERS: dict[str, Driver] = {
    driver.name: driver
    for driver in (
        Driver(
            "simulated",
            ("temperature", "humidity"),
            0.0,
            _open_simulated,
            {
                "fail_rate": ("", _or_default(parse_fraction)),
                "spike_rate": ("", _or_default(parse_fraction)),
                "stuck_after": ("", _or_default(parse_count)),
            },
        ),
        _dht("dht22"),
        _dht("dht11"),
        Driver(
            "dht-kernel",
            ("temperature", "humidity"),
            dht_kernel.MIN_INTERVAL_S,
            _opened(_iio, lambda spec, folder: dht_kernel.DhtKernelSensor(spec.options["model"], folder)),
            {
                "device": ("", _matching(IIO_DEVICE, "an IIO device such as iio:device0")),
                "model": ("dht22", _choice("dht22", "dht11")),
            },
            _checked(_iio),
        ),
        Driver(
            "ds18b20",
            ("temperature",),
            ds18b20.MIN_INTERVAL_S,
            _opened(_probe, lambda spec, path: ds18b20.Ds18b20Sensor(path)),
            {"id": ("", _matching(ds18b20.DEVICE_ID, "28- and 12 hex digits (28-0123456789ab)"))},
            _checked(_probe),
        ),
        Driver(
            "bme280",
            ("temperature", "humidity", "pressure"),
            bme280.MIN_INTERVAL_S,
            lambda spec, context: bme280.open_bme280(spec.options["address"]),
            {"address": ("", bme280.address_option)},
        ),
        Driver(
            "sht4x",
            ("temperature", "humidity"),
            sht4x.MIN_INTERVAL_S,
            lambda spec, context: sht4x.open_sht4x(spec.options["address"]),
            {"address": ("", sht4x.address_option)},
        ),
    )
}
SENSORS = tuple(DRIVERS)


def parse_sensor(entry: str, index: int = 0) -> SensorSpec:
    """One entry, `driver[,option=value]...`; ValueError naming what is wrong."""
    driver_name, *parts = entry.split(",")
    driver = DRIVERS.get(driver_name)
    if driver is None:
        raise ValueError(f"unknown driver {driver_name!r}, use one of {', '.join(SENSORS)}")
    given: dict[str, str] = {}
    for part in parts:
        option, equals, value = part.partition("=")
        if not equals or (option not in driver.options and option != "name"):
            known = ", ".join(["name", *driver.options])
            raise ValueError(f"{driver_name}: {part!r} is no option=value of this driver (it has {known})")
        if option in given:
            raise ValueError(f"{driver_name}: {option} is given twice")
        given[option] = value
    name = given.pop("name", "")
    if name and not NAME.fullmatch(name):
        raise ValueError(f"{driver_name}: name={name!r} must be 1 to 32 of a-z 0-9 _ starting with a letter")
    options = {}
    for option, (default, parse) in driver.options.items():
        raw = given.get(option, default)
        try:
            options[option] = parse(raw)
        except ValueError as exc:
            raise ValueError(f"{driver_name}: {option}={raw}: {exc}") from None
    return SensorSpec(driver_name, name, options, index)


def parse_sensors(text: str) -> tuple[SensorSpec, ...]:
    """The entries of SENSORPIPE_SENSORS, separated by spaces (empty: none given); ValueError
    when one is wrong, or when two would share a name or a metric."""
    specs = tuple(parse_sensor(entry, index) for index, entry in enumerate(text.split()))
    keys: dict[str, SensorSpec] = {}
    metrics: dict[str, SensorSpec] = {}
    for spec in specs:
        if spec.key in keys:
            raise ValueError(f"two sensors are called {spec.key!r}: give each a name=, e.g. {spec.driver},name=freezer")
        keys[spec.key] = spec
        for metric in spec.metrics:
            other = metrics.setdefault(metric, spec)
            if other is not spec:
                raise ValueError(
                    f"{other.key} and {spec.key} would both publish {metric}: give one a name=, "
                    f"e.g. {spec.driver},name=freezer"
                )
    return specs


def check_sensors(specs: Sequence[SensorSpec], context: SensorContext) -> None:
    """ValueError naming the sensor when one names hardware that is not there (a 1-Wire probe,
    an IIO device): a wrong setting, not a failing read."""
    for spec in specs:
        try:
            DRIVERS[spec.driver].check(spec, context)
        except ValueError as exc:
            raise ValueError(f"{spec.key}: {exc}") from None


def open_sensors(specs: Sequence[SensorSpec], context: SensorContext) -> list[Sensor]:
    """Each sensor opened, in order; SensorReadError naming the one that cannot be (those
    opened before it are closed again)."""
    opened: list[Sensor] = []
    for spec in specs:
        try:
            opened.append(DRIVERS[spec.driver].open(spec, context))
        except SensorReadError as exc:
            for sensor in opened:
                sensor.close()
            raise SensorReadError(f"{spec.key}: {exc}" if len(specs) > 1 else str(exc)) from None
    return opened
