"""The publisher's settings: one typed object, built once from defaults, environment and flags."""

from __future__ import annotations

import math
import re
import socket
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.reading import RejectedMessage, check_tag
from common.settings import (
    BROKER_OPTIONS,
    MqttUrl,
    Option,
    SettingsError,
    load,
    parse_count,
    parse_fraction,
    parse_nonnegative_float,
    parse_positive_float,
    parse_switch,
)
from common.topics import check_device_id
from publisher.sensors import SENSORS, SimFaults

GPIO_PIN = re.compile(r"D([0-9]|[12][0-9])")  # Blinka's names for the Pi's GPIO 0-27
WEEK_S = 7 * 86400


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


def _optional_path(raw: str) -> Path | None:
    return Path(raw).expanduser() if raw else None


def _ha_prefix(raw: str) -> str:
    if not raw or any(ch in raw for ch in "#+\0") or raw.startswith("/") or raw.endswith("/"):
        raise ValueError("must be an MQTT topic prefix without wildcards, e.g. homeassistant")
    return raw


OPTIONS = [
    *BROKER_OPTIONS,
    Option("SENSORPIPE_DEVICE", "", "this device's id (default: the host name)"),
    Option("SENSORPIPE_SENSOR", "simulated", "sensor driver: dht22, dht11 or simulated", _sensor),
    Option("SENSORPIPE_PIN", "D4", "GPIO pin of a DHT sensor (Blinka name, D0-D27)", _pin),
    Option("SENSORPIPE_INTERVAL", "2", "seconds between readings (at least 2 for a DHT)", parse_positive_float),
    Option(
        "SENSORPIPE_LOCATION", "", "optional location tag sent with every reading, e.g. 'Living room'", _optional_tag
    ),
    Option(
        "SENSORPIPE_OUTBOX",
        "",
        "file of readings not yet acknowledged by the broker (default: outbox-<device>.sqlite in "
        "$STATE_DIRECTORY, else ~/.local/state/sensorpipe)",
        _optional_path,
    ),
    Option(
        "SENSORPIPE_OUTBOX_MAX",
        "0",
        "most readings the outbox keeps during an outage; then the oldest go (0: a week at the interval)",
        parse_count,
    ),
    Option(
        "SENSORPIPE_MAX_JUMP_TEMPERATURE",
        "5",
        "largest temperature change (°C) between two reads taken as real at once (0: no check)",
        parse_nonnegative_float,
    ),
    Option(
        "SENSORPIPE_MAX_JUMP_HUMIDITY",
        "20",
        "largest humidity change (%) between two reads taken as real at once (0: no check)",
        parse_nonnegative_float,
    ),
    Option("SENSORPIPE_HEALTH_INTERVAL", "60", "seconds between health messages", parse_positive_float),
    Option("SENSORPIPE_HA_DISCOVERY", "0", "1: announce the sensors to Home Assistant (MQTT discovery)", parse_switch),
    Option("SENSORPIPE_HA_PREFIX", "homeassistant", "Home Assistant's discovery topic prefix", _ha_prefix),
    Option("SENSORPIPE_SIM_SEED", "", "seed of the simulated sensor (default: derived from the device id)", _seed),
    Option("SENSORPIPE_SIM_FAIL_RATE", "0", "simulated sensor: share of reads that fail (0 to 1)", parse_fraction),
    Option("SENSORPIPE_SIM_SPIKE_RATE", "0", "simulated sensor: share of reads with a glitch (0 to 1)", parse_fraction),
    Option(
        "SENSORPIPE_SIM_STUCK_AFTER", "0", "simulated sensor: values freeze after this many reads (0: off)", parse_count
    ),
    Option("SENSORPIPE_COUNT", "0", "stop after this many readings are acknowledged (0: never stop)", parse_count),
]


@dataclass(frozen=True)
class PublisherSettings:
    """Everything the publisher needs to know, validated."""

    mqtt_url: MqttUrl
    topic_prefix: str
    device: str
    sensor: str
    pin: str
    interval: float
    location: str | None
    outbox: Path
    outbox_max: int
    max_jump_temperature: float
    max_jump_humidity: float
    health_interval: float
    ha_discovery: bool
    ha_prefix: str
    sim_seed: int
    sim_faults: SimFaults
    count: int


def default_outbox(device: str, environ: Mapping[str, str]) -> Path:
    """Where the outbox lives unless SENSORPIPE_OUTBOX says: systemd's state folder, else the user's."""
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    folder = Path(state) if state else Path.home() / ".local" / "state" / "sensorpipe"
    return folder / f"outbox-{device}.sqlite"


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> PublisherSettings:
    """Build the settings; raise SettingsError with one line naming the bad setting."""
    values = load("publisher", "Read a sensor and publish its readings over MQTT.", OPTIONS, argv, environ)
    if values["device"] == "":
        host = socket.gethostname()
        try:
            values["device"] = _device(host)
        except ValueError:
            raise SettingsError(
                f"SENSORPIPE_DEVICE (--device): the host name {host!r} is no valid device id, set one"
            ) from None
    else:
        try:
            values["device"] = _device(values["device"])
        except ValueError as exc:
            raise SettingsError(f"SENSORPIPE_DEVICE (--device) = {values['device']!r}: {exc}") from None
    if values["sensor"] != "simulated" and values["interval"] < 2:
        raise SettingsError(
            f"SENSORPIPE_INTERVAL (--interval) = {values['interval']}: "
            f"a {values['sensor']} measures at most every 2 s, use 2 or more"
        )
    if values["outbox"] is None:
        values["outbox"] = default_outbox(values["device"], environ)
    if values["outbox_max"] == 0:
        values["outbox_max"] = max(1, math.ceil(WEEK_S / values["interval"]))
    if values["sim_seed"] is None:
        values["sim_seed"] = zlib.crc32(values["device"].encode())
    values["sim_faults"] = SimFaults(
        fail_rate=values.pop("sim_fail_rate"),
        spike_rate=values.pop("sim_spike_rate"),
        stuck_after=values.pop("sim_stuck_after"),
    )
    return PublisherSettings(**values)
