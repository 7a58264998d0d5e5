"""The bridge's settings: one typed object, built once from defaults, environment and flags."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bridge.alerts.notify import NotifyError, parse_targets
from bridge.alerts.rules import RuleError, load_rules_file
from bridge.report_schedule import Schedule, parse_daily, parse_weekly
from bridge.writers import API_CHOICES
from common.reading import text_problem
from common.settings import (
    BrokerSettings,
    Secret,
    SettingsError,
    count_between,
    load_model,
    options,
    parse_count,
    parse_http_url,
    parse_nonempty,
    parse_nonnegative_float,
    parse_optional_path,
    parse_path,
    parse_port,
    parse_positive_float,
    parse_retention,
    parse_secret,
    parse_switch,
    setting,
    state_folder,
    time_zone,
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


def _write_interval_ms(raw: str) -> float:
    value = parse_nonnegative_float(raw)
    if value > 60_000:
        raise ValueError("must be from 0 to 60000 ms")
    return value


def _mqtt_version(raw: str) -> str:
    if raw not in ("3.1.1", "5"):
        raise ValueError("must be 3.1.1 or 5")
    return raw


def _share_group(raw: str) -> str | None:
    if raw == "":
        return None
    if not SHARE_GROUP.fullmatch(raw):
        raise ValueError("must be 1 to 64 of A-Z a-z 0-9 _ -")
    return raw


def _redis_url(raw: str) -> Secret | None:
    if raw == "":
        return None
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis://[:password@]host[:port][/db] URL (rediss:// for TLS)")
    return Secret(raw)


def _rules_file(raw: str) -> Path | None:
    """The rules file, checked in full now: a bad rule stops the bridge, naming it."""
    if raw.strip() == "":
        return None
    path = parse_path(raw)
    try:
        load_rules_file(path)
    except RuleError as exc:  # the setting's line names the file already
        raise ValueError(str(exc).removeprefix(f"{path}: ")) from None
    return path


def _notify(raw: str) -> Secret:
    """Apprise URLs, each checked now (the error names it by number and scheme only)."""
    try:
        parse_targets(raw)
    except NotifyError as exc:
        raise ValueError(str(exc)) from None
    return Secret(raw)


def _public_url(raw: str) -> str:
    if raw == "":
        return raw
    if not raw.startswith(("http://", "https://")) or len(raw) > 300 or any(c.isspace() for c in raw):
        raise ValueError("must be the dashboard's address as people open it, like http://pi.local:5000")
    return raw.rstrip("/")


def _host(raw: str) -> str:
    return parse_nonempty(raw).strip()


HOST_NAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def _proxy_from(raw: str) -> tuple[str, ...]:
    entries = tuple(entry.strip() for entry in raw.split(",") if entry.strip())
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not HOST_NAME.fullmatch(entry):
                raise ValueError(f"{entry!r} is no address, network or host name") from None
    return entries


def _site_name(raw: str) -> str:
    problem = text_problem(raw) if raw else None
    if problem or len(raw) > 100:
        raise ValueError(problem or "at most 100 characters")
    return raw


def _timezone(raw: str) -> str:
    if raw and time_zone(raw) is None:
        raise ValueError("not a time zone this machine knows (an IANA name such as Europe/Berlin)")
    return raw


@dataclass(frozen=True)
class BridgeSettings(BrokerSettings):
    """Everything the bridge needs to know, validated: each field is one setting
    (`SENSORPIPE_<NAME>`, `--<name>`), declared here once."""

    mqtt_client_id: str = setting(
        "sensorpipe-bridge",
        "fixed MQTT client id: the broker keeps this session's queue while the bridge is away",
        _client_id,
    )
    share_group: str | None = setting(
        "",
        "several bridges: MQTT shared-subscription group that splits the readings between them "
        "(empty: this bridge takes every reading)",
        _share_group,
    )
    redis_url: Secret | None = setting(
        "",
        "several bridges: Redis for Socket.IO's message queue, the state the API shows and the alerts "
        "(empty: in memory, the alerts in SENSORPIPE_ALERT_DB)",
        _redis_url,
        secret=True,
    )
    influx_url: str = setting("http://127.0.0.1:8086", "InfluxDB base URL", parse_http_url)
    influx_db: str = setting("sensors", "database (1.x) or bucket (2.x, 3.x)", _name)
    influx_token: Secret = setting("", "2.x/3.x token, or user:password for 1.x", parse_secret, secret=True)
    influx_org: str = setting("", "2.x organisation (2.x writes need it; 1.x and 3.x ignore it)")
    influx_api: str = setting(
        "auto",
        "auto (from the server's /ping version), v1 (/write: 1.x) or v2 (influxdb-client: 2.x, 3.x, Cloud)",
        _api,
    )
    influx_measurement: str = setting("environment", "measurement the readings go to", _name)
    rollups: bool = setting(
        "1",
        "keep 1-minute and 1-hour rollups (count, sum, mean, min, max) in <measurement>_1m and "
        "<measurement>_1h, written with each batch (InfluxDB 1.x; 0: raw readings only)",
        parse_switch,
    )
    raw_retention: int | None = setting(
        "",
        "how long InfluxDB 1.x keeps the raw readings: 400d, 52w or inf, set on the database's "
        "default retention policy at start (older readings are dropped, and refused when they "
        "arrive); the rollups are kept for ever in the retention policy `rollups`. Empty: the "
        "policy is left as it is (Debian's: for ever)",
        parse_retention,
    )
    write_interval_ms: float = setting(
        "1000",
        "valid readings go to the browsers at once and wait at most this long to be written to "
        "InfluxDB together (sooner: 5,000 of them, or the broker's window of unacknowledged "
        "messages full). More: fewer writes (on a Pi's SD card, each is an fsync); less: "
        "readings stored sooner; 0: each chunk written as it arrives",
        _write_interval_ms,
    )
    mqtt_version: str = setting(
        "3.1.1",
        "MQTT version: 3.1.1, or 5 (the bridge then asks for its own window of unacknowledged "
        "readings, SENSORPIPE_MQTT_WINDOW, whatever the broker's max_inflight_messages; it "
        "costs paho about 25 µs more per message)",
        _mqtt_version,
    )
    mqtt_window: int = setting(
        "1000",
        "how many readings the broker sends before the bridge acknowledges some (they are "
        "acknowledged once stored): with MQTT 5 the Receive Maximum the bridge asks for; with "
        "3.1.1 a batch also closes at half of it. 1000 suits any broker: a batch closes when "
        "the broker pauses too, and a lower value only makes smaller writes",
        count_between(1, 65535),
    )
    stall_after_s: float = setting(
        "60",
        "messages waiting this many seconds without progress make /healthz answer 503 "
        "(ingest is stuck: InfluxDB hangs, or a bug)",
        parse_positive_float,
    )
    max_devices: int = setting(
        "10000",
        "most devices the bridge keeps in memory for the dashboard; readings of more devices are "
        "still stored, those devices are not shown",
        count_between(1),
    )
    alert_rules: Path | None = setting(
        "",
        "a TOML file of alert rules (docs/alerts.md), checked at start (a bad rule stops the "
        "bridge, naming it) and read again on SIGHUP; empty: only rules made on the dashboard",
        _rules_file,
    )
    alert_notify: Secret = setting(
        "",
        "where alerts are sent: one or more Apprise URLs, space-separated (ntfys://topic, "
        "tgram://token/chat, mailto://user:pass@host, json://host/path, ...); empty: alerts "
        "show on the dashboard and over MQTT only",
        _notify,
        secret=True,
    )
    accounts_db: Path = setting(
        "",
        "the SQLite file of the dashboard's named accounts and roles (python -m bridge accounts; "
        "default: accounts.sqlite in $STATE_DIRECTORY, else ~/.local/state/sensorpipe)",
        parse_optional_path,
    )
    alert_db: Path = setting(
        "",
        "the SQLite file that keeps the alerts' state, history and undelivered notifications "
        "across restarts (default: alerts-<mqtt client id>.sqlite in $STATE_DIRECTORY, else "
        "~/.local/state/sensorpipe); with SENSORPIPE_REDIS_URL they are kept in Redis instead",
        parse_optional_path,
    )
    public_url: str = setting(
        "",
        "the dashboard's address as people open it (http://pi.local:5000), for the links in "
        "notifications; empty: http://<web host>:<web port>",
        _public_url,
    )
    site_name: str = setting(
        "", "the site's name at the top of every report (a lab, a shop); empty: this machine's host name", _site_name
    )
    timezone: str = setting(
        "",
        "the time zone reports cut days in and show times in (an IANA name: Europe/Berlin); empty: this machine's",
        _timezone,
    )
    report_daily: Schedule | None = setting(
        "",
        "send yesterday's report (all devices, PDF attached) every day at this local time, HH:MM; empty: no",
        parse_daily,
    )
    report_weekly: Schedule | None = setting(
        "",
        "send last week's report (Monday to Sunday) every week at this weekday and time, e.g. mon 07:00",
        parse_weekly,
    )
    report_notify: Secret = setting(
        "",
        "Apprise URLs for the scheduled reports, separated by spaces (mailto:// attaches the PDF); "
        "empty: those of SENSORPIPE_ALERT_NOTIFY",
        _notify,
        secret=True,
    )
    web_host: str = setting("127.0.0.1", "address the web UI listens on", _host)
    web_port: int = setting("5000", "port the web UI listens on", parse_port)
    web_threads: int = setting(
        "400",
        "threads serving the web UI and API: how many requests are answered at once; an open "
        "dashboard holds one while it is live, and live dashboards may take four fifths of them "
        "(320 of 400), the rest stay for pages and the API; a dashboard over that waits and retries",
        count_between(4, 10_000),
    )
    web_password: Secret = setting(
        "",
        "password for the dashboard, API and Socket.IO (empty: open to whoever reaches the port)",
        parse_secret,
        secret=True,
    )
    web_secret: Secret = setting(
        "",
        "a long random string that signs the login cookies together with the password (the "
        "same on every bridge behind one address); without it the key comes from the password "
        "alone, and whoever captures a cookie could guess a weak password offline",
        parse_secret,
        secret=True,
    )
    web_secure_cookie: bool = setting(
        "0", "1: the login cookie is sent over HTTPS only (set it behind a TLS proxy)", parse_switch
    )
    web_proxies: int = setting(
        "0",
        "how many reverse proxies (nginx) stand in front of the web UI: 1 takes the client's "
        "address, scheme and host from the X-Forwarded-* headers the proxy sets, so wrong "
        "passwords are throttled per client, not per proxy. Leave 0 when browsers connect "
        "directly: anyone could send those headers",
        parse_count,
    )
    web_proxy_from: tuple[str, ...] = setting(
        "",
        "with SENSORPIPE_WEB_PROXIES: the proxies' addresses, networks or host names, comma-"
        "separated (nginx, 10.0.0.0/8); only their X-Forwarded-* headers are believed, so a "
        "browser reaching the bridge directly as well cannot pick an address (empty: anyone's)",
        _proxy_from,
    )


OPTIONS = options(BridgeSettings)


def machine_timezone(localtime: Path = Path("/etc/localtime")) -> str:
    """This machine's IANA zone, from where /etc/localtime points; UTC when it cannot be told."""
    try:
        target = str(localtime.resolve())
    except OSError:
        return "UTC"
    name = target.split("/zoneinfo/", 1)[1] if "/zoneinfo/" in target else "UTC"
    return name if time_zone(name) is not None else "UTC"


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> BridgeSettings:
    """Build the settings; raise SettingsError with one line naming the bad setting."""
    loaded = load_model(
        BridgeSettings, "bridge", "Store MQTT readings in InfluxDB and serve the live dashboard.", argv, environ
    )
    # The defaults that depend on other settings (the parser gives None for "not set").
    default_db = state_folder(environ) / f"alerts-{loaded.mqtt_client_id}.sqlite"
    if loaded.share_group and not loaded.redis_url and (loaded.alert_rules or loaded.alert_notify.reveal()):
        # Each bridge of a group receives only its share of a device's readings.
        raise SettingsError(
            "SENSORPIPE_ALERT_RULES or SENSORPIPE_ALERT_NOTIFY with SENSORPIPE_SHARE_GROUP needs "
            "SENSORPIPE_REDIS_URL: without it each bridge would judge only its share of the readings"
        )
    return replace(
        loaded,
        alert_db=loaded.alert_db or default_db,
        accounts_db=loaded.accounts_db or state_folder(environ) / "accounts.sqlite",
        site_name=loaded.site_name or socket.gethostname(),
        timezone=loaded.timezone or machine_timezone(),
    )
