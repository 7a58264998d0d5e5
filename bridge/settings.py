"""The bridge's settings: one typed object, built once from defaults, environment and flags."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bridge.writers import API_CHOICES
from common.settings import (
    BROKER_OPTIONS,
    MqttUrl,
    Option,
    load,
    parse_count,
    parse_http_url,
    parse_nonempty,
    parse_nonnegative_float,
    parse_port,
    parse_positive_float,
    parse_switch,
)

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
CLIENT_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
SHARE_GROUP = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _name(raw: str) -> str:
    if not NAME.fullmatch(raw):
        raise ValueError("must be 1 to 64 of A-Z a-z 0-9 _ . -")
    return raw


def _client_id(raw: str) -> str:
    if not CLIENT_ID.fullmatch(raw):
        raise ValueError("must be 1 to 64 of A-Z a-z 0-9 _ . -")
    return raw


def _api(raw: str) -> str:
    if raw not in API_CHOICES:
        raise ValueError(f"must be one of {', '.join(API_CHOICES)}")
    return raw


def _linger_ms(raw: str) -> float:
    value = parse_nonnegative_float(raw)
    if value > 1000:
        raise ValueError("must be from 0 to 1000 ms")
    return value


def _share_group(raw: str) -> str | None:
    if raw == "":
        return None
    if not SHARE_GROUP.fullmatch(raw):
        raise ValueError("must be 1 to 64 of A-Z a-z 0-9 _ -")
    return raw


def _redis_url(raw: str) -> str | None:
    if raw == "":
        return None
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis://[:password@]host[:port][/db] URL (rediss:// for TLS)")
    return raw


def _host(raw: str) -> str:
    return parse_nonempty(raw).strip()


def _max_devices(raw: str) -> int:
    value = parse_count(raw)
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


OPTIONS = [
    *BROKER_OPTIONS,
    Option(
        "SENSORPIPE_MQTT_CLIENT_ID",
        "sensorpipe-bridge",
        "fixed MQTT client id: the broker keeps this session's queue while the bridge is away",
        _client_id,
    ),
    Option(
        "SENSORPIPE_SHARE_GROUP",
        "",
        "several bridges: MQTT shared-subscription group that splits the readings between them "
        "(empty: this bridge takes every reading)",
        _share_group,
    ),
    Option(
        "SENSORPIPE_REDIS_URL",
        "",
        "several bridges: Redis for Socket.IO's message queue and the state the API shows (empty: in memory)",
        _redis_url,
        secret=True,
    ),
    Option("SENSORPIPE_INFLUX_URL", "http://127.0.0.1:8086", "InfluxDB base URL", parse_http_url),
    Option("SENSORPIPE_INFLUX_DB", "sensors", "database (1.x) or bucket (2.x, 3.x)", _name),
    Option("SENSORPIPE_INFLUX_TOKEN", "", "2.x/3.x token, or user:password for 1.x", secret=True),
    Option("SENSORPIPE_INFLUX_ORG", "", "2.x organisation (2.x writes need it; 1.x and 3.x ignore it)"),
    Option(
        "SENSORPIPE_INFLUX_API",
        "auto",
        "auto (from the server's /ping version), v1 (/write: 1.x) or v2 (influxdb-client: 2.x, 3.x, Cloud)",
        _api,
    ),
    Option("SENSORPIPE_INFLUX_MEASUREMENT", "environment", "measurement the readings go to", _name),
    Option(
        "SENSORPIPE_BATCH_LINGER_MS",
        "5",
        "after a reading arrives, wait this many ms for more before writing them together "
        "(more: less CPU per reading, more latency)",
        _linger_ms,
    ),
    Option(
        "SENSORPIPE_STALL_AFTER_S",
        "60",
        "messages waiting this many seconds without a batch finishing make /healthz answer 503 "
        "(ingest is stuck: InfluxDB hangs, or a bug)",
        parse_positive_float,
    ),
    Option(
        "SENSORPIPE_MAX_DEVICES",
        "10000",
        "most devices the bridge keeps in memory for the dashboard; readings of more devices are "
        "still stored, those devices are not shown",
        _max_devices,
    ),
    Option("SENSORPIPE_WEB_HOST", "127.0.0.1", "address the web UI listens on", _host),
    Option("SENSORPIPE_WEB_PORT", "5000", "port the web UI listens on", parse_port),
    Option(
        "SENSORPIPE_WEB_PASSWORD",
        "",
        "password for the dashboard, API and Socket.IO (empty: open to whoever reaches the port)",
        secret=True,
    ),
    Option(
        "SENSORPIPE_WEB_SECRET",
        "",
        "a long random string that signs the login cookies together with the password (the "
        "same on every bridge behind one address); without it the key comes from the password "
        "alone, and whoever captures a cookie could guess a weak password offline",
        secret=True,
    ),
    Option(
        "SENSORPIPE_WEB_SECURE_COOKIE",
        "0",
        "1: the login cookie is sent over HTTPS only (set it behind a TLS proxy)",
        parse_switch,
    ),
    Option(
        "SENSORPIPE_WEB_PROXIES",
        "0",
        "how many reverse proxies (nginx) stand in front of the web UI: 1 takes the client's "
        "address, scheme and host from the X-Forwarded-* headers the proxy sets, so wrong "
        "passwords are throttled per client, not per proxy. Leave 0 when browsers connect "
        "directly: anyone could send those headers",
        parse_count,
    ),
]


@dataclass(frozen=True)
class BridgeSettings:
    """Everything the bridge needs to know, validated."""

    mqtt_url: MqttUrl
    topic_prefix: str
    mqtt_client_id: str
    share_group: str | None
    redis_url: str | None
    influx_url: str
    influx_db: str
    influx_token: str
    influx_org: str
    influx_api: str
    influx_measurement: str
    batch_linger_ms: float
    stall_after_s: float
    max_devices: int
    web_host: str
    web_port: int
    web_password: str
    web_secret: str
    web_secure_cookie: bool
    web_proxies: int


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> BridgeSettings:
    """Build the settings; raise SettingsError with one line naming the bad setting."""
    values = load("bridge", "Store MQTT readings in InfluxDB and serve the live dashboard.", OPTIONS, argv, environ)
    return BridgeSettings(**values)
