"""The Pi as the server: broker, InfluxDB, bridge and publisher configured on this host.

Run by `scripts/install-pi.sh --server` (read its header first), in two steps:

    python3 scripts/install_server.py check [options]   # before anything is installed
    /opt/sensorpipe/venv/bin/python /opt/sensorpipe/src/scripts/install_server.py apply [options]

`check` needs only Python's standard library and this repository (Debian's python3 runs it
before the venv exists): it refuses, with one line and exit status 2, what the install
could not do or would break (a wrong sensor or pin, a port someone else listens on, a
Mosquitto or InfluxDB configuration sensorpipe did not write), so that nothing is changed.
`apply` writes the configuration, and only the files whose text differs: run again with
the same options, it changes nothing and restarts nothing. Secrets (the dashboard
password, the cookie secret, the broker accounts' passwords) are made on the first run
and read back from the settings files on later ones. `remove` undoes `apply`.
"""

from __future__ import annotations

import argparse
import grp
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

SRC = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(SRC / "scripts"))

import broker_user  # noqa: E402

from common import envfile  # noqa: E402
from common.settings import SettingsError, parse_retention  # noqa: E402
from publisher.envfile import render as render_publisher  # noqa: E402
from publisher.settings import load_settings as load_publisher_settings  # noqa: E402

try:  # `apply` runs with the installed venv; `check` with Debian's python3, without the packages
    from bridge.settings import OPTIONS as BRIDGE_OPTIONS
    from bridge.settings import load_settings as load_bridge_settings
except ImportError:
    BRIDGE_OPTIONS = []

USER = "sensorpipe"
ETC = Path("/etc/sensorpipe")
BRIDGE_ENV = ETC / "bridge.env"
PUBLISHER_ENV = ETC / "publisher.env"
STATE = Path("/var/lib/sensorpipe")
UNITS = Path("/etc/systemd/system")
BRIDGE_UNIT = "sensorpipe-bridge.service"
PUBLISHER_UNIT = "sensorpipe-publisher.service"
MOSQUITTO = Path("/etc/mosquitto")
MOSQUITTO_CONF = MOSQUITTO / "conf.d" / "sensorpipe.conf"
ACCOUNTS = MOSQUITTO / "sensorpipe"  # passwd, acl and acl.base, as scripts/broker-user keeps them
INFLUX_DEFAULTS = Path("/etc/default/influxdb")
MARK = "# Written by sensorpipe's scripts/install-pi.sh --server"
SENSORS = ("dht22", "dht11", "ds18b20", "simulated", "none")
# Lines in Mosquitto's own mosquitto.conf that would change how sensorpipe's broker works.
BROKER_LINES = re.compile(r"^\s*(listener|port|bind_address|allow_anonymous|password_file|acl_file)\b", re.M)


class Refused(Exception):
    """A request the install cannot carry out: one line, exit status 2, nothing changed."""


@dataclass
class Plan:
    listen: str
    mqtt_port: int
    web_port: int
    influx_port: int
    password: str | None
    retention: str
    device: str
    sensor: str
    pin: str
    onewire_id: str
    sensors: str
    calibration: str
    interval: str
    location: str
    systemctl: bool
    code_changed: bool


def parse(argv: list[str]) -> tuple[str, Plan]:
    parser = argparse.ArgumentParser(prog="install_server")
    parser.add_argument("step", choices=["check", "apply", "remove"])
    parser.add_argument("--listen", default="0.0.0.0")
    parser.add_argument("--mqtt-port", default="1883")
    parser.add_argument("--web-port", default="5000")
    parser.add_argument("--influx-port", default="8086")
    parser.add_argument("--password")
    parser.add_argument("--retention", default="")
    parser.add_argument("--device", default="")
    parser.add_argument("--sensor", default="dht22")
    parser.add_argument("--pin", default="D4")
    parser.add_argument("--onewire-id", default="")
    parser.add_argument("--sensors", default="")
    parser.add_argument("--calibration", default="")
    parser.add_argument("--interval", default="2")
    parser.add_argument("--location", default="")
    parser.add_argument("--no-systemctl", action="store_true")
    parser.add_argument("--code-changed", action="store_true")
    args = parser.parse_args(argv)
    ports = {}
    for name in ("mqtt_port", "web_port", "influx_port"):
        raw = getattr(args, name)
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise Refused(f"--{name.replace('_', '-')} {raw!r}: a port is a number from 1 to 65535")
        ports[name] = int(raw)
    if len(set(ports.values())) < 3 or ports["influx_port"] + 2 in ports.values():
        raise Refused("--mqtt-port, --web-port and --influx-port must differ (InfluxDB also takes its port + 2)")
    try:
        ipaddress.ip_address(args.listen)
    except ValueError:
        raise Refused(f"--listen {args.listen!r}: an IP address of this host, or 0.0.0.0 for all") from None
    if args.password is not None and (not args.password or any(c in args.password for c in "\r\n\0")):
        raise Refused("--password: one line, not empty")
    try:
        parse_retention(args.retention)
    except ValueError as exc:
        raise Refused(f"--retention {args.retention!r}: {exc}") from None
    if args.sensor not in SENSORS:
        raise Refused(f"--sensor {args.sensor!r}: one of {', '.join(SENSORS)}")
    device = args.device or re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "pi"
    plan = Plan(
        listen=args.listen,
        password=args.password,
        retention=args.retention,
        device=device,
        sensor=args.sensor,
        pin=args.pin,
        onewire_id=args.onewire_id,
        sensors=args.sensors,
        calibration=args.calibration,
        interval=args.interval,
        location=args.location,
        systemctl=not args.no_systemctl,
        code_changed=args.code_changed,
        **ports,
    )
    return args.step, plan


# --- check: before anything changes ------------------------------------------------------


def listener_of(port: int) -> str | None:
    """The command line of the process listening on TCP `port`, "" if unknown, None if free."""
    out = subprocess.run(
        ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not out:
        return None
    match = re.search(r"pid=(\d+)", out)
    if not match:
        return ""
    try:
        return Path(f"/proc/{match[1]}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def check(plan: Plan) -> None:
    if plan.sensor != "none":
        env = {
            "SENSORPIPE_DEVICE": plan.device,
            "SENSORPIPE_SENSOR": plan.sensor,
            "SENSORPIPE_PIN": plan.pin,
            "SENSORPIPE_ONEWIRE_ID": plan.onewire_id,
            "SENSORPIPE_SENSORS": plan.sensors,
            "SENSORPIPE_CALIBRATION": plan.calibration,
            "SENSORPIPE_INTERVAL": plan.interval,
            "SENSORPIPE_LOCATION": plan.location,
        }
        try:
            load_publisher_settings([], env)
        except SettingsError as exc:
            raise Refused(str(exc)) from None
    ours = {
        plan.mqtt_port: ("mosquitto", MOSQUITTO_CONF.exists()),
        plan.influx_port: ("influxd", INFLUX_DEFAULTS.exists() and MARK in INFLUX_DEFAULTS.read_text()),
        plan.influx_port + 2: ("influxd", INFLUX_DEFAULTS.exists() and MARK in INFLUX_DEFAULTS.read_text()),
        plan.web_port: ("-m bridge", (UNITS / BRIDGE_UNIT).exists()),
    }
    for port, (program, installed) in ours.items():
        holder = listener_of(port)
        if holder is None or (installed and program in holder):
            continue  # free, or the service this install set up before
        raise Refused(f"port {port} is taken (by {holder or 'another program'}): choose another with its option")
    conf_d = MOSQUITTO / "conf.d"
    others = sorted(p.name for p in conf_d.glob("*.conf") if p != MOSQUITTO_CONF) if conf_d.is_dir() else []
    main_conf = MOSQUITTO / "mosquitto.conf"
    main_lines = BROKER_LINES.findall(main_conf.read_text()) if main_conf.exists() else []
    if others or main_lines:
        where = f"{conf_d}/{others[0]}" if others else f"{main_conf} ({main_lines[0]} ...)"
        raise Refused(
            f"Mosquitto is configured already ({where}): sensorpipe would change who may use it. "
            "Move that configuration away, or give sensorpipe's accounts to that broker by hand (docs/broker.md)"
        )
    if INFLUX_DEFAULTS.exists() and MARK not in INFLUX_DEFAULTS.read_text():
        raise Refused(f"{INFLUX_DEFAULTS} exists and was not written by sensorpipe: move it away first")


# --- apply ------------------------------------------------------------------------------


class Changes:
    def __init__(self) -> None:
        self.files: list[Path] = []

    def write(self, path: Path, text: str, mode: int, group: str = "root") -> bool:
        """Write `path` if its text differs (atomically); always set its mode and owner."""
        path.parent.mkdir(parents=True, exist_ok=True)
        changed = not path.exists() or path.read_text() != text
        if changed:
            tmp = path.with_name(path.name + ".new")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)  # never readable to others
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.replace(tmp, path)
            self.files.append(path)
        os.chown(path, 0, grp.getgrnam(group).gr_gid)
        os.chmod(path, mode)
        return changed


def kept(path: Path) -> dict[str, str]:
    return envfile.read(path.read_text()) if path.exists() else {}


def url_password(url: str) -> str | None:
    password = urlsplit(url).password if url else None
    return unquote(password) if password else None


def broker_conf(plan: Plan) -> str:
    """conf.d/sensorpipe.conf: the shipped mosquitto.conf, less what Debian's main file sets."""
    lines = [MARK, "# From mosquitto/mosquitto.conf; Debian's mosquitto.conf sets persistence and the log.", ""]
    replaced = {
        "listener": f"listener {plan.mqtt_port} {plan.listen}",
        "password_file": f"password_file {ACCOUNTS / 'passwd'}",
        "acl_file": f"acl_file {ACCOUNTS / 'acl'}",
    }
    for line in (SRC / "mosquitto" / "mosquitto.conf").read_text().splitlines():
        word = line.split(" ", 1)[0]
        if word not in {"persistence", "persistence_location", "log_dest", "include_dir"}:
            lines.append(replaced.get(word, line))
    return "\n".join(lines) + "\n"


def accounts(changes: Changes, wanted: dict[str, str]) -> bool:
    """Mosquitto's passwd and acl in ACCOUNTS, for `wanted` (name: password); True if changed."""
    ACCOUNTS.mkdir(parents=True, exist_ok=True)
    os.chown(ACCOUNTS, 0, grp.getgrnam("mosquitto").gr_gid)
    os.chmod(ACCOUNTS, 0o750)
    base_changed = changes.write(
        ACCOUNTS / "acl.base", (SRC / "mosquitto" / "acl.base").read_text(), 0o640, "mosquitto"
    )
    users = broker_user.read_users(ACCOUNTS / "passwd")
    readers = broker_user.read_readers(ACCOUNTS / "acl")
    stale = [name for name, password in wanted.items() if not broker_user.verifies(users.get(name), password)]
    for name in stale:
        users[name] = broker_user.hash_password(wanted[name])
    if stale or base_changed or not (ACCOUNTS / "acl").exists():
        broker_user.save(ACCOUNTS, users, readers)
        changes.files += [ACCOUNTS / "passwd", ACCOUNTS / "acl"]
    for name in ("passwd", "acl"):
        # Read by Mosquitto as root at start and as its own user on SIGHUP; hashes only.
        os.chown(ACCOUNTS / name, 0, grp.getgrnam("mosquitto").gr_gid)
        os.chmod(ACCOUNTS / name, 0o640)
    return bool(stale or base_changed)


def dashboard_address(plan: Plan) -> str:
    if plan.listen not in {"0.0.0.0", "::"}:
        return f"http://{plan.listen}:{plan.web_port}/"
    # Raspberry Pi OS runs Avahi, which answers <hostname>.local on the LAN (mDNS).
    if shutil.which("avahi-daemon"):
        return f"http://{socket.gethostname()}.local:{plan.web_port}/"
    addresses = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split()
    return f"http://{addresses[0] if addresses else socket.gethostname()}:{plan.web_port}/"


def broker_host(plan: Plan) -> str:
    if plan.listen not in {"0.0.0.0", "::"}:
        return plan.listen
    return f"{socket.gethostname()}.local" if shutil.which("avahi-daemon") else socket.gethostname()


@dataclass
class Secrets:
    web_password: str
    web_secret: str
    bridge_mqtt: str
    device_mqtt: str


def load_secrets(plan: Plan) -> Secrets:
    """The secrets of an earlier run (from its settings files), new ones where there are none."""
    bridge_kept = kept(BRIDGE_ENV)
    publisher_kept = kept(PUBLISHER_ENV)
    same_device = publisher_kept.get("SENSORPIPE_DEVICE") == plan.device
    device_mqtt = url_password(publisher_kept.get("SENSORPIPE_MQTT_URL", "")) if same_device else None
    return Secrets(
        web_password=plan.password or bridge_kept.get("SENSORPIPE_WEB_PASSWORD") or broker_user.new_password(),
        web_secret=bridge_kept.get("SENSORPIPE_WEB_SECRET") or secrets.token_urlsafe(32),
        bridge_mqtt=url_password(bridge_kept.get("SENSORPIPE_MQTT_URL", "")) or broker_user.new_password(),
        device_mqtt=device_mqtt or broker_user.new_password(),
    )


def write_bridge(plan: Plan, keys: Secrets, changes: Changes, address: str) -> bool:
    url = broker_user.account_url(broker_user.BRIDGE_USER, keys.bridge_mqtt, "127.0.0.1", plan.mqtt_port)
    values = {
        "SENSORPIPE_MQTT_URL": url,
        "SENSORPIPE_INFLUX_URL": f"http://127.0.0.1:{plan.influx_port}",
        "SENSORPIPE_WEB_HOST": plan.listen,
        "SENSORPIPE_WEB_PORT": str(plan.web_port),
        "SENSORPIPE_WEB_PASSWORD": keys.web_password,
        "SENSORPIPE_WEB_SECRET": keys.web_secret,
        "SENSORPIPE_PUBLIC_URL": address.rstrip("/"),
    }
    if plan.retention:
        values["SENSORPIPE_RAW_RETENTION"] = plan.retention
    try:
        load_bridge_settings([], values)
    except SettingsError as exc:
        raise Refused(f"bridge settings: {exc}") from None
    title = "# sensorpipe bridge settings. After a change: sudo systemctl restart sensorpipe-bridge"
    changed = changes.write(BRIDGE_ENV, envfile.render(values, BRIDGE_OPTIONS, title, "bridge"), 0o640, USER)
    os.chmod(ETC, 0o755)
    unit = (SRC / "bridge" / "systemd" / BRIDGE_UNIT).read_text()
    return changes.write(UNITS / BRIDGE_UNIT, unit, 0o644) or changed


def write_publisher(plan: Plan, keys: Secrets, changes: Changes) -> bool:
    """The publisher's settings and unit, or neither with --sensor none."""
    if plan.sensor == "none":
        for path in (UNITS / PUBLISHER_UNIT, PUBLISHER_ENV):
            if path.exists():
                if plan.systemctl and path.name == PUBLISHER_UNIT:
                    systemctl("disable", "--now", PUBLISHER_UNIT)
                path.unlink()
                changes.files.append(path)
        return False
    values = {
        "SENSORPIPE_DEVICE": plan.device,
        "SENSORPIPE_MQTT_URL": broker_user.account_url(plan.device, keys.device_mqtt, "127.0.0.1", plan.mqtt_port),
        "SENSORPIPE_SENSOR": plan.sensor,
        "SENSORPIPE_PIN": plan.pin,
        "SENSORPIPE_INTERVAL": plan.interval,
    }
    if plan.onewire_id:
        values["SENSORPIPE_ONEWIRE_ID"] = plan.onewire_id
    if plan.sensors:
        values["SENSORPIPE_SENSORS"] = plan.sensors
    if plan.calibration:
        values["SENSORPIPE_CALIBRATION"] = plan.calibration
    if plan.location:
        values["SENSORPIPE_LOCATION"] = plan.location
    changed = changes.write(PUBLISHER_ENV, render_publisher(values), 0o640, USER)
    unit = (SRC / "publisher" / "systemd" / PUBLISHER_UNIT).read_text()
    return changes.write(UNITS / PUBLISHER_UNIT, unit, 0o644) or changed


def apply(plan: Plan) -> int:
    changes = Changes()
    keys = load_secrets(plan)
    wanted = {broker_user.BRIDGE_USER: keys.bridge_mqtt}
    if plan.sensor != "none":
        wanted[plan.device] = keys.device_mqtt
    broker_changed = changes.write(MOSQUITTO_CONF, broker_conf(plan), 0o644)
    accounts_changed = accounts(changes, wanted)
    influx_changed = changes.write(
        INFLUX_DEFAULTS,
        f"{MARK}\n# InfluxDB answers on this host only: the bridge is its client.\n"
        f"INFLUXDB_HTTP_BIND_ADDRESS=127.0.0.1:{plan.influx_port}\n"
        f"INFLUXDB_BIND_ADDRESS=127.0.0.1:{plan.influx_port + 2}\n"
        "INFLUXDB_REPORTING_DISABLED=true\n",
        0o644,
    )
    address = dashboard_address(plan)
    bridge_changed = write_bridge(plan, keys, changes, address)
    publisher_changed = write_publisher(plan, keys, changes)
    # systemd makes it from StateDirectory=; made here too, for a start without systemd.
    STATE.mkdir(mode=0o700, exist_ok=True)
    user = pwd.getpwnam(USER)
    os.chown(STATE, user.pw_uid, user.pw_gid)

    restart = [
        unit
        for unit, changed in (
            ("mosquitto", broker_changed),
            ("influxdb", influx_changed),
            (BRIDGE_UNIT, bridge_changed or plan.code_changed),
            (PUBLISHER_UNIT, publisher_changed or (plan.code_changed and plan.sensor != "none")),
        )
        if changed
    ]
    units = ["mosquitto", "influxdb", BRIDGE_UNIT] + ([PUBLISHER_UNIT] if plan.sensor != "none" else [])
    if plan.systemctl:
        systemctl("daemon-reload")
        systemctl("enable", *units)
        if accounts_changed and not broker_changed:
            systemctl("reload-or-restart", "mosquitto")
        for unit in restart:
            systemctl("restart", unit)
        systemctl("start", *units)  # those not running yet
    for path in changes.files:
        print(f"install-pi: wrote {path}")
    if not changes.files and not plan.code_changed:
        print("install-pi: nothing changed")
    elif not plan.systemctl:
        print(f"install-pi: --no-systemctl: would enable {' '.join(units)}; restart {' '.join(restart) or 'none'}")
    report(plan, keys, address)
    return 0


def report(plan: Plan, keys: Secrets, address: str) -> None:
    print()
    print(f"The dashboard: {address}")
    print(f"  password:    {keys.web_password}   (also in {BRIDGE_ENV}, readable by root)")
    print("Another Pi as a publisher to this broker: here, run")
    print(
        f"  sudo {SRC / 'scripts' / 'broker-user'} --dir {ACCOUNTS} add <its name> "
        f"--host {broker_host(plan)} --port {plan.mqtt_port}"
    )
    print("  and on that Pi the install command it prints.")


def systemctl(*args: str) -> None:
    subprocess.run(["systemctl", *args], check=True)


def remove(plan: Plan) -> int:
    """Undo `apply`: units, broker and InfluxDB configuration; what is kept is said."""
    for unit in (PUBLISHER_UNIT, BRIDGE_UNIT):
        if (UNITS / unit).exists():
            if plan.systemctl:
                subprocess.run(["systemctl", "disable", "--now", unit], check=False)
            (UNITS / unit).unlink()
    shutil.rmtree(ACCOUNTS, ignore_errors=True)
    MOSQUITTO_CONF.unlink(missing_ok=True)
    if INFLUX_DEFAULTS.exists() and MARK in INFLUX_DEFAULTS.read_text():
        INFLUX_DEFAULTS.unlink()
    if plan.systemctl:
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        subprocess.run(["systemctl", "try-restart", "mosquitto", "influxdb"], check=False)
    return 0


def main(argv: list[str]) -> int:
    try:
        step, plan = parse(argv)
        if step == "check":
            check(plan)
            return 0
        if step == "remove":
            return remove(plan)
        return apply(plan)
    except Refused as exc:
        print(f"install-pi: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
