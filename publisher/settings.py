"""The publisher's settings: one typed object, built once from defaults, environment and flags."""

from __future__ import annotations

import math
import socket
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from common.reading import RejectedMessage, check_tag
from common.settings import (
    BrokerSettings,
    SettingsError,
    load_model,
    options,
    parse_count,
    parse_fraction,
    parse_nonnegative_float,
    parse_optional_path,
    parse_positive_float,
    parse_switch,
    setting,
    state_folder,
)
from common.topics import check_device_id
from publisher.calibration import Correction, parse_calibration
from publisher.sensors import (
    DERIVED,
    DRIVERS,
    GPIO_PIN,
    SENSORS,
    SensorContext,
    SensorSpec,
    SimFaults,
    check_sensors,
    parse_sensor,
    parse_sensors,
)
from publisher.sensors.ds18b20 import DEVICE_ID

WEEK_S = 7 * 86400
MAX_SENSORS = 8  # on one publisher; their drivers' names joined must fit a tag (64 characters)


def _device(raw: str) -> str:
    try:
        return check_device_id(raw)
    except ValueError:
        raise ValueError("must be 1 to 64 of A-Z a-z 0-9 _ . - starting with a letter or digit") from None


def _sensor(raw: str) -> str:
    if raw not in SENSORS:
        raise ValueError(f"unknown sensor, use one of {', '.join(SENSORS)}")
    return raw


def _pin(raw: str) -> str:
    if not GPIO_PIN.fullmatch(raw):
        raise ValueError("must be a GPIO pin name from D0 to D27")
    return raw


def _onewire_id(raw: str) -> str:
    if raw and not DEVICE_ID.fullmatch(raw):
        raise ValueError("a DS18B20's id is 28- and 12 hex digits (28-0123456789ab)")
    return raw


def _optional_tag(raw: str) -> str | None:
    """A tag the bridge will accept (the bridge's own check), or None for empty."""
    if raw == "":
        return None
    try:
        return check_tag("the location", raw)
    except RejectedMessage as exc:
        raise ValueError(f"the bridge would refuse every reading: {exc.detail}") from None


def _seed(raw: str) -> int | None:
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _ha_prefix(raw: str) -> str:
    if not raw or any(ch in raw for ch in "#+\0") or raw.startswith("/") or raw.endswith("/"):
        raise ValueError("must be an MQTT topic prefix without wildcards, e.g. homeassistant")
    return raw


@dataclass(frozen=True)
class PublisherSettings(BrokerSettings):
    """Everything the publisher needs to know, validated: each field is one setting
    (`SENSORPIPE_<NAME>`, `--<name>`), declared here once. `load_settings` fills in the
    defaults that depend on others (device, outbox, outbox_max, sim_seed)."""

    device: str = setting("", "this device's id (default: the host name)")
    sensor: str = setting(
        "simulated", f"the sensor's driver: {', '.join(SENSORS)} (SENSORPIPE_SENSORS for several)", _sensor
    )
    sensors: tuple[SensorSpec, ...] = setting(
        "",
        "several sensors, or one with options, instead of SENSORPIPE_SENSOR and its settings: entries "
        "driver[,option=value]... separated by spaces, e.g. 'dht22,pin=D4 ds18b20,name=freezer' "
        "(options in the README's sensor section; name= goes before the sensor's metrics: freezer_temperature)",
        parse_sensors,
    )
    calibration: dict[str, Correction] = setting(
        "",
        "corrections per metric, separated by spaces: metric=offset (temperature=-0.4) or a two-point "
        "metric=measured:reference,measured:reference; health says which is in force since when",
        parse_calibration,
    )
    pin: str = setting("D4", "GPIO pin of a DHT sensor (Blinka name, D0-D27)", _pin)
    onewire_id: str = setting(
        "",
        "the DS18B20 probe's 1-Wire id (28-0123456789ab, as in /sys/bus/w1/devices); empty: the one probe on the bus",
        _onewire_id,
    )
    w1_devices: Path = setting(
        "/sys/bus/w1/devices", "where the kernel lists the 1-Wire devices (a container may mount it elsewhere)", Path
    )
    iio_devices: Path = setting(
        "/sys/bus/iio/devices",
        "where the kernel lists the IIO devices, for dht-kernel (a container may mount it elsewhere)",
        Path,
    )
    interval: float = setting(
        "2", "seconds between readings (at least 2 for a DHT, 1 for a DS18B20)", parse_positive_float
    )
    location: str | None = setting(
        "", "optional location tag sent with every reading, e.g. 'Living room'", _optional_tag
    )
    outbox: Path = setting(
        "",
        "file of readings not yet acknowledged by the broker (default: outbox-<device>.sqlite in "
        "$STATE_DIRECTORY, else ~/.local/state/sensorpipe)",
        parse_optional_path,
    )
    outbox_max: int = setting(
        "0",
        "most readings the outbox keeps during an outage; then the oldest go (0: a week at the interval)",
        parse_count,
    )
    max_jump_temperature: float = setting(
        "5",
        "largest temperature change (°C) between two reads taken as real at once (0: no check)",
        parse_nonnegative_float,
    )
    max_jump_humidity: float = setting(
        "20",
        "largest humidity change (%) between two reads taken as real at once (0: no check)",
        parse_nonnegative_float,
    )
    health_interval: float = setting("60", "seconds between health messages", parse_positive_float)
    derived: bool = setting(
        "1",
        "1: add dew_point (°C) and absolute_humidity (g/m³) to each reading that has temperature and humidity; 0: off",
        parse_switch,
    )
    ha_discovery: bool = setting("0", "1: announce the sensors to Home Assistant (MQTT discovery)", parse_switch)
    ha_prefix: str = setting("homeassistant", "Home Assistant's discovery topic prefix", _ha_prefix)
    sim_seed: int = setting("", "seed of the simulated sensor (default: derived from the device id)", _seed)
    sim_fail_rate: float = setting("0", "simulated sensor: share of reads that fail (0 to 1)", parse_fraction)
    sim_spike_rate: float = setting("0", "simulated sensor: share of reads with a glitch (0 to 1)", parse_fraction)
    sim_stuck_after: int = setting("0", "simulated sensor: values freeze after this many reads (0: off)", parse_count)
    count: int = setting(
        "0",
        "take this many readings, then stop once the broker acknowledged all still in the outbox (0: never stop)",
        parse_count,
    )

    @property
    def sim_faults(self) -> SimFaults:
        return SimFaults(self.sim_fail_rate, self.sim_spike_rate, self.sim_stuck_after)

    @property
    def sensor_context(self) -> SensorContext:
        return SensorContext(self.sim_seed, self.sim_faults, self.w1_devices, self.iio_devices)

    @property
    def sensor_name(self) -> str:
        """The readings' `sensor` tag: the driver, or the drivers joined by +."""
        return "+".join(spec.driver for spec in self.sensors)

    @property
    def calibration_record(self) -> Path:
        """Where the times the corrections came into force are kept (publisher/calibration.py)."""
        return self.outbox.with_name(f"calibration-{self.device}.json")


def _single_sensor(loaded: PublisherSettings) -> SensorSpec:
    """SENSORPIPE_SENSOR and its settings as one entry of SENSORPIPE_SENSORS."""
    options = {"dht22": f",pin={loaded.pin}", "dht11": f",pin={loaded.pin}"}.get(loaded.sensor, "")
    if loaded.sensor == "ds18b20" and loaded.onewire_id:
        options = f",id={loaded.onewire_id}"
    return parse_sensor(loaded.sensor + options)


def _check_sensors(loaded: PublisherSettings, specs: tuple[SensorSpec, ...], context: SensorContext) -> None:
    """SettingsError for sensors that cannot run as set: too many, too fast for the interval,
    naming hardware that is not there, corrections of metrics they do not measure."""
    where = "SENSORPIPE_SENSORS (--sensors)" if loaded.sensors else "SENSORPIPE_SENSOR (--sensor)"
    if len(specs) > MAX_SENSORS:
        raise SettingsError(f"{where}: {len(specs)} sensors, at most {MAX_SENSORS} on one publisher")
    tag = "+".join(spec.driver for spec in specs)
    if len(tag) > 64:
        raise SettingsError(f"{where}: the readings' sensor tag {tag!r} would be over 64 characters; use fewer sensors")
    slowest = max(specs, key=lambda spec: DRIVERS[spec.driver].min_interval_s)
    shortest = DRIVERS[slowest.driver].min_interval_s
    if loaded.interval < shortest:
        raise SettingsError(
            f"SENSORPIPE_INTERVAL (--interval) = {loaded.interval}: "
            f"a {slowest.driver} measures at most every {shortest:g} s, use {shortest:g} or more"
        )
    try:
        if loaded.sensors:
            check_sensors(specs, context)
        else:
            DRIVERS[specs[0].driver].check(specs[0], context)
    except ValueError as exc:
        if not loaded.sensors and loaded.sensor == "ds18b20":
            where = "SENSORPIPE_ONEWIRE_ID (--onewire-id)"
            raise SettingsError(f"{where} = {loaded.onewire_id!r}: {exc}") from None
        raise SettingsError(f"{where}: {exc}") from None
    measured = {spec.metric(base) for spec in specs for base in DRIVERS[spec.driver].metrics}
    for metric in loaded.calibration:
        if metric not in measured:
            base = next((name for name in DERIVED if metric.endswith(name)), None)
            why = (
                f"{base} is derived: correct the temperature and humidity it comes from"
                if base
                else f"no sensor measures it (they measure {', '.join(sorted(measured))})"
            )
            raise SettingsError(f"SENSORPIPE_CALIBRATION (--calibration): {metric}: {why}")


OPTIONS = options(PublisherSettings)


def default_outbox(device: str, environ: Mapping[str, str]) -> Path:
    """Where the outbox lives unless SENSORPIPE_OUTBOX says: systemd's state folder, else the user's."""
    return state_folder(environ) / f"outbox-{device}.sqlite"


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> PublisherSettings:
    """Build the settings; raise SettingsError with one line naming the bad setting."""
    loaded = load_model(
        PublisherSettings, "publisher", "Read a sensor and publish its readings over MQTT.", argv, environ
    )
    if loaded.device == "":
        host = socket.gethostname()
        try:
            device = _device(host)
        except ValueError:
            raise SettingsError(
                f"SENSORPIPE_DEVICE (--device): the host name {host!r} is no valid device id, set one"
            ) from None
    else:
        try:
            device = _device(loaded.device)
        except ValueError as exc:
            raise SettingsError(f"SENSORPIPE_DEVICE (--device) = {loaded.device!r}: {exc}") from None
    # The defaults that depend on other settings (the parsers give None or 0 for "not set").
    settings = replace(
        loaded,
        device=device,
        sensors=loaded.sensors or (_single_sensor(loaded),),
        outbox=loaded.outbox or default_outbox(device, environ),
        outbox_max=loaded.outbox_max or max(1, math.ceil(WEEK_S / loaded.interval)),
        sim_seed=zlib.crc32(device.encode()) if loaded.sim_seed is None else loaded.sim_seed,
    )
    _check_sensors(loaded, settings.sensors, settings.sensor_context)
    return settings
