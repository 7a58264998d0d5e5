"""The publisher's settings: one typed object, built once from defaults, environment and flags."""

from __future__ import annotations

import re
import socket
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from common.reading import TAG_MAX_CHARS
from common.settings import (
    BROKER_OPTIONS,
    MqttUrl,
    Option,
    SettingsError,
    load,
    parse_positive_float,
)
from common.topics import check_device_id
from publisher.sensors import SENSORS

GPIO_PIN = re.compile(r"D([0-9]|[12][0-9])")  # Blinka's names for the Pi's GPIO 0-27


def _device(raw: str) -> str:
    try:
        return check_device_id(raw)
    except ValueError:
        raise ValueError("must be 1 to 64 of A-Z a-z 0-9 _ . - starting with a letter or digit") from None


def _sensor(raw: str) -> str:
    if raw not in SENSORS:
        raise ValueError(f"unknown sensor, use one of {', '.join(sorted(SENSORS))}")
    return raw


def _pin(raw: str) -> str:
    if not GPIO_PIN.fullmatch(raw):
        raise ValueError("must be a GPIO pin name from D0 to D27")
    return raw


def _optional_tag(raw: str) -> str | None:
    if raw == "":
        return None
    if len(raw) > TAG_MAX_CHARS or any(ord(ch) < 32 for ch in raw):
        raise ValueError(f"must be at most {TAG_MAX_CHARS} printable characters")
    return raw


def _seed(raw: str) -> int | None:
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _count(raw: str) -> int:
    try:
        count = int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if count < 0:
        raise ValueError("must be 0 (run until stopped) or more")
    return count


OPTIONS = [
    *BROKER_OPTIONS,
    Option("SENSORPIPE_DEVICE", "", "this device's id (default: the host name)"),
    Option("SENSORPIPE_SENSOR", "simulated", "sensor driver: dht22, dht11 or simulated", _sensor),
    Option("SENSORPIPE_PIN", "D4", "GPIO pin of a DHT sensor (Blinka name, D0-D27)", _pin),
    Option("SENSORPIPE_INTERVAL", "2", "seconds between readings (at least 2 for a DHT)", parse_positive_float),
    Option(
        "SENSORPIPE_LOCATION", "", "optional location tag sent with every reading, e.g. 'Living room'", _optional_tag
    ),
    Option("SENSORPIPE_SIM_SEED", "", "seed of the simulated sensor (default: derived from the device id)", _seed),
    Option("SENSORPIPE_COUNT", "0", "stop after this many readings are acknowledged (0: run until stopped)", _count),
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
    sim_seed: int
    count: int


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
    if values["sim_seed"] is None:
        values["sim_seed"] = zlib.crc32(values["device"].encode())
    return PublisherSettings(**values)
