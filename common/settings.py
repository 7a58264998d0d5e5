"""Settings machinery shared by both programs: defaults, then `SENSORPIPE_*`, then flags.

Each program declares its settings once, as one typed model: a frozen dataclass whose fields
are `setting(default, meaning, parser)`. The field's name gives the variable
(`SENSORPIPE_<NAME>`) and the flag (`--<name>`); `--help`, the publisher's env file and the
error lines are made from the same declaration. `load_model` gives back the typed model, or
one `SettingsError` line naming the setting. Nothing else reads `os.environ`. Secrets are
`Secret`s: shown as `***` in a repr, a log line or an error, revealed only where used.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from common.topics import DEFAULT_PREFIX, check_prefix


class SettingsError(Exception):
    """A setting's value is wrong; the message is one line naming the setting and why."""


class Secret:
    """A secret setting's value (a password, a token): `***` in repr, str and f-strings, so it
    cannot reach a log line, an error or a repr by accident; `reveal()` where it is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"


def parse_secret(raw: str) -> Secret:
    """Any text, kept as a Secret (empty: none)."""
    return Secret(raw)


@dataclass(frozen=True)
class Option:
    """One setting: environment variable `env`, flag derived from it, default and parser."""

    env: str
    default: str
    help: str
    parse: Callable[[str], Any] = str
    secret: bool = False

    @property
    def key(self) -> str:
        return self.env.removeprefix("SENSORPIPE_").lower()

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


def setting(default: str, meaning: str, parse: Callable[[str], Any] = str, *, secret: bool = False) -> Any:
    """A field of a settings model: its default (as text, as the variable would hold it), what
    it means (for --help, the env file and the docs), its parser (text -> value, ValueError
    with the reason), and whether its text is secret (never shown in an error)."""
    return field(metadata={"setting": (default, meaning, parse, secret)})


def options(model: type) -> list[Option]:
    """The model's settings, in declaration order (a base model's first)."""
    return [
        Option(f"SENSORPIPE_{f.name.upper()}", *f.metadata["setting"]) for f in fields(model) if "setting" in f.metadata
    ]


Model = TypeVar("Model")


def load_model(
    model: type[Model], prog: str, description: str, argv: Sequence[str], environ: Mapping[str, str]
) -> Model:
    """The model built from flags, then environment, then defaults; raises SettingsError."""
    return model(**load(prog, description, options(model), argv, environ))


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise SettingsError(message)


# A file of settings (KEY="value" lines, systemd's EnvironmentFile format), read under the
# environment: docker compose hands the services their secrets this way (scripts/stack_init.py).
SETTINGS_FILE = "SENSORPIPE_SETTINGS_FILE"


def read_env_file(text: str) -> dict[str, str]:
    """The settings a KEY="value" file sets (double quotes, backslash escapes; # comments)."""
    values = {}
    for line in text.splitlines():
        name, sep, quoted = line.partition("=")
        if not sep or line.lstrip().startswith("#") or not (len(quoted) >= 2 and quoted[0] == quoted[-1] == '"'):
            continue
        body, out, i = quoted[1:-1], [], 0
        while i < len(body):
            if body[i] == "\\" and i + 1 < len(body):
                i += 1
            out.append(body[i])
            i += 1
        values[name.strip()] = "".join(out)
    return values


def with_settings_file(environ: Mapping[str, str]) -> Mapping[str, str]:
    """`environ` over the settings of the file SENSORPIPE_SETTINGS_FILE names, if it names one."""
    path = environ.get(SETTINGS_FILE, "")
    if not path:
        return environ
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise SettingsError(f"{SETTINGS_FILE} = {path!r}: {exc.strerror}") from None
    return {**read_env_file(text), **environ}


def load(
    prog: str, description: str, options: Sequence[Option], argv: Sequence[str], environ: Mapping[str, str]
) -> dict[str, Any]:
    """Parse `options` from flags, then environment (then SENSORPIPE_SETTINGS_FILE), then
    defaults; raise SettingsError."""
    environ = with_settings_file(environ)
    # No abbreviations: `--web-pass` must not quietly become --web-password.
    parser = _OneLineParser(prog=prog, description=description, allow_abbrev=False)
    for option in options:
        shown = "(empty)" if option.default == "" else option.default
        parser.add_argument(
            option.flag,
            dest=option.key,
            metavar="VALUE",
            # argparse %-formats help texts: a literal % (humidity) must be doubled.
            help=f"{option.help} [{option.env}, default {shown}]".replace("%", "%%"),
        )
    namespace, unknown = parser.parse_known_args(list(argv))
    if unknown:
        # Never echo what follows: a mistyped `--web-pasword s3cret` must not print the secret.
        flags = sorted({arg.split("=", 1)[0] for arg in unknown if arg.startswith("-")})
        what = f"unknown flag {', '.join(flags)}" if flags else f"{len(unknown)} value(s) without a flag"
        raise SettingsError(f"{what} (see --help; values are not shown)")
    values: dict[str, Any] = {}
    for option in options:
        raw = getattr(namespace, option.key)
        if raw is None:
            raw = environ.get(option.env, option.default)
        try:
            values[option.key] = option.parse(raw)
        except ValueError as exc:
            # A URL's user:password part is masked in any setting, secret or not.
            shown = "***" if option.secret else repr(re.sub(r"//[^/@]*@", "//***@", raw))
            raise SettingsError(f"{option.env} ({option.flag}) = {shown}: {exc}") from None
    return values


def exit_bad_setting(prog: str, error: SettingsError) -> NoReturn:
    """Stop the program with one line on stderr and exit status 2."""
    print(f"{prog}: bad setting: {error}", file=sys.stderr)
    raise SystemExit(2)


def state_folder(environ: Mapping[str, str]) -> Path:
    """Where a program keeps what must survive a restart (the publisher's outbox, the bridge's
    alerts) unless told: systemd's StateDirectory (/var/lib/sensorpipe), else the user's."""
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) if state else Path.home() / ".local" / "state" / "sensorpipe"


# --- parsers -------------------------------------------------------------------------


def parse_optional_path(raw: str) -> Path | None:
    """A file's path (`~` expanded), or None when empty (the program picks the default)."""
    return parse_path(raw) if raw else None


def parse_path(raw: str) -> Path:
    """A path, `~` and `~user` expanded; ValueError for a user without a home here."""
    try:
        return Path(raw).expanduser()
    except RuntimeError:  # pathlib's word for a ~user it cannot find
        raise ValueError(f"{raw.split('/', 1)[0][:40]!r}: no such user's home on this machine") from None


def parse_port(raw: str) -> int:
    """A TCP port number, 1 to 65535."""
    try:
        port = int(raw)
    except ValueError:
        raise ValueError("must be a port number") from None
    if not 1 <= port <= 65535:
        raise ValueError("must be a port number from 1 to 65535")
    return port


def _finite(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def parse_positive_float(raw: str) -> float:
    """A finite number above zero."""
    value = _finite(raw)
    if not value > 0:
        raise ValueError("must be a number above 0")
    return value


def parse_count(raw: str) -> int:
    """A whole number, 0 or more."""
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def count_between(low: int, high: int | None = None) -> Callable[[str], int]:
    """A parser of whole numbers from `low` to `high` (no upper bound if None)."""

    def parse(raw: str) -> int:
        value = parse_count(raw)
        if value < low or (high is not None and value > high):
            raise ValueError(f"must be {low} or more" if high is None else f"must be from {low} to {high}")
        return value

    return parse


def parse_nonnegative_float(raw: str) -> float:
    """A finite number, 0 or more."""
    value = _finite(raw)
    if value < 0:
        raise ValueError("must be a number, 0 or more")
    return value


def parse_fraction(raw: str) -> float:
    """A share from 0 to 1."""
    value = parse_nonnegative_float(raw)
    if value > 1:
        raise ValueError("must be a number from 0 to 1")
    return value


RETENTION = re.compile(r"(?P<n>[1-9][0-9]{0,4})(?P<unit>[dw])|inf")


def parse_retention(raw: str) -> int | None:
    """Seconds from `400d`, `52w` (at least a day), `inf` (for ever: 0 here), or empty (None:
    left as the database's admin set it). In common/: the Pi installer checks it too."""
    text = raw.strip().lower()
    if not text:
        return None
    match = RETENTION.fullmatch(text)
    if match is None:
        raise ValueError("a number of days or weeks (400d, 52w), or inf")
    if text == "inf":
        return 0
    return int(match["n"]) * (7 if match["unit"] == "w" else 1) * 86_400


def parse_switch(raw: str) -> bool:
    """On or off: 1/0, true/false, yes/no, on/off."""
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be 1 or 0")


def parse_prefix(raw: str) -> str:
    """An MQTT topic prefix."""
    return check_prefix(raw)


def parse_nonempty(raw: str) -> str:
    """Any text that is not empty."""
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw


@dataclass(frozen=True)
class MqttUrl:
    """Where the broker is: `mqtt://[user:password@]host[:port]`, `mqtts://` for TLS."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: Secret | None

    def __str__(self) -> str:  # never shows the password
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def parse_mqtt_url(raw: str) -> MqttUrl:
    """Parse a broker URL; raise ValueError with the reason."""
    parts = urlsplit(raw)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("must start with mqtt:// or mqtts://")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be mqtt[s]://[user:password@]host[:port] with nothing after the port")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise ValueError("has no host")
    tls = parts.scheme == "mqtts"
    return MqttUrl(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=Secret(unquote(parts.password)) if parts.password is not None else None,
    )


@dataclass(frozen=True)
class BrokerSettings:
    """The broker settings both programs share (a base of each program's model)."""

    mqtt_url: MqttUrl = setting(
        "mqtt://127.0.0.1:1883", "broker, mqtt[s]://[user:password@]host[:port]", parse_mqtt_url, secret=True
    )
    topic_prefix: str = setting(DEFAULT_PREFIX, "first topic level", parse_prefix)


def parse_http_url(raw: str) -> str:
    """An http(s) base URL, returned without a trailing slash."""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be http://host[:port] or https://host[:port]")
    if parts.username is not None or parts.password is not None:
        # Refused rather than half-used: the URL is shown in logs and on /healthz.
        raise ValueError("must not hold credentials: give them in SENSORPIPE_INFLUX_TOKEN (user:password for 1.x)")
    if parts.query or parts.fragment:
        raise ValueError("must be http(s)://host[:port][/path] with nothing after the path")
    try:
        parts.port  # noqa: B018  # raises on a bad port
    except ValueError:
        raise ValueError("has a port that is not a number") from None
    return raw.rstrip("/")


def time_zone(name: str) -> ZoneInfo | None:
    """The IANA time zone `name` (Europe/Berlin) as this machine knows it; None when it knows
    none of that name.

    ZoneInfo raises more than its own not-found error for names that are no zone: a
    ValueError for paths and files that are not zone data, and an OSError for a folder of
    zones (`Europe`) or a name longer than a file name may be.
    """
    try:
        return ZoneInfo(name)
    except (ValueError, OSError, ZoneInfoNotFoundError):
        return None
