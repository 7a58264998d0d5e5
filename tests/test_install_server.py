"""`scripts/install-pi.sh --server` on this machine's Debian, for real, as root.

No systemd runs here as PID 1, so the installer runs with --no-systemctl (everything but
talking to systemd), and the test then starts each unit the way systemd would: the unit
file's ExecStartPre and ExecStart, with its EnvironmentFile, Environment, User and
StateDirectory (made as systemd makes it, owned by the unit's user), in a clean
environment with / as working directory. Debian's own units
(mosquitto.service, influxdb.service) are started the same way from their unit files. The
broker and InfluxDB the installer configured are Debian's packages (installed by
scripts/setup.sh test), on free loopback ports (--listen 127.0.0.1).

It installs into /opt/sensorpipe, /etc/sensorpipe, /etc/mosquitto and /etc/default, and
removes all of it at the end (--remove --purge): one test, so that no other test of this
module runs beside it on another worker. Bad input is tried first, on the clean machine.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from devstack.servers import Server, free_port, mosquitto
from tests.conftest import ROOT, stop_process
from tests.waiting import wait_until

UNITS = Path("/etc/systemd/system")
DEBIAN_UNITS = Path("/lib/systemd/system")
# What the installer writes; after --remove --purge none of it may be left.
WRITTEN = [
    Path("/opt/sensorpipe"),
    Path("/etc/sensorpipe"),
    Path("/var/lib/sensorpipe"),
    UNITS / "sensorpipe-bridge.service",
    UNITS / "sensorpipe-publisher.service",
    Path("/etc/mosquitto/conf.d/sensorpipe.conf"),
    Path("/etc/mosquitto/sensorpipe"),
    Path("/etc/default/influxdb"),
]
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="installs system services: needs root (CI runs as root)")


def unit_file(name: str) -> Path:
    return UNITS / name if (UNITS / name).exists() else DEBIAN_UNITS / name


def service_section(path: Path) -> list[tuple[str, str]]:
    entries, section = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            entries.append((key, value))
    return entries


def read_environment_file(path: Path) -> dict[str, str]:
    """systemd's EnvironmentFile: KEY=VALUE lines, double quotes with backslash escapes."""
    values = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        values[key.strip()] = " ".join(shlex.split(raw)) if raw else ""
    return values


class Unit:
    """One unit started as systemd would start it (no cgroup, no sandboxing)."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log_path = log
        entries = service_section(unit_file(name))
        self.env = {"PATH": SYSTEMD_PATH, "LANG": "C.UTF-8"}
        self.state_mode = 0o755  # systemd's default StateDirectoryMode
        user = group = None
        for key, value in entries:
            if key == "EnvironmentFile":
                optional = value.startswith("-")
                path = Path(value.lstrip("-"))
                if path.exists() or not optional:
                    self.env.update(read_environment_file(path))
            elif key == "Environment":
                self.env.update(dict(item.split("=", 1) for item in shlex.split(value)))
            elif key == "User":
                user = value
            elif key == "Group":
                group = value
            elif key == "StateDirectory":
                self.env["STATE_DIRECTORY"] = f"/var/lib/{value}"
            elif key == "StateDirectoryMode":
                self.state_mode = int(value, 8)
        self.user = user
        self.prefix = []
        if user:
            self.env.update(USER=user, LOGNAME=user, HOME="/", SHELL="/usr/sbin/nologin")
            self.prefix = ["setpriv", f"--reuid={user}", f"--regid={group or user}", "--init-groups", "--"]
        self.pre = [self.expand(v) for k, v in entries if k == "ExecStartPre"]
        (start,) = [self.expand(v) for k, v in entries if k == "ExecStart"]
        self.start = start
        self.process: subprocess.Popen[bytes] | None = None

    def expand(self, command: str) -> list[str]:
        """systemd's $VAR (split into words, gone when unset) and ${VAR} in a command line."""
        words = []
        for word in shlex.split(command):
            if re.fullmatch(r"\$\w+", word):
                words += self.env.get(word[1:], "").split()
            else:
                words.append(re.sub(r"\$\{(\w+)\}", lambda m: self.env.get(m[1], ""), word))
        return words

    def run(self) -> Unit:
        if "STATE_DIRECTORY" in self.env:  # systemd makes it, owned by the unit's user
            state = Path(self.env["STATE_DIRECTORY"])
            state.mkdir(mode=self.state_mode, exist_ok=True)
            if self.user:
                shutil.chown(state, self.user, self.user)
            state.chmod(self.state_mode)
        for command in self.pre:  # no User= on Debian's mosquitto.service: as root, like systemd
            subprocess.run(self.prefix + command, env=self.env, cwd="/", check=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.prefix + self.start, env=self.env, cwd="/", stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def stop(self) -> int:
        assert self.process is not None
        return stop_process(self.process, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "install-pi.sh"), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def fingerprint() -> dict[str, tuple[str, float]]:
    """Every file the installer wrote (not what the services keep in /var/lib/sensorpipe): its
    content's hash and modification time."""
    found = {}
    for top in WRITTEN:
        if top == Path("/var/lib/sensorpipe"):
            continue
        for path in [top, *top.rglob("*")] if top.is_dir() else [top]:
            if path.is_file() and "/venv/" not in str(path):
                found[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime)
    return found


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def clean_machine() -> Iterator[None]:
    """Refuse to run over an existing installation; remove everything afterwards."""
    leftovers = [str(p) for p in WRITTEN if p.exists()]
    assert not leftovers, f"an installation is here already: {leftovers}"
    yield
    install("--remove", "--purge", "--no-systemctl")


@pytest.mark.slow
def test_the_pi_server_installs_runs_and_removes(clean_machine: None, tmp_path: Path) -> None:
    mqtt_port, web_port = free_port(), free_port()
    influx_port = free_port()
    while not all(not listening(p) for p in (influx_port, influx_port + 2)):
        influx_port = free_port()
    ports = ["--listen", "127.0.0.1", "--mqtt-port", str(mqtt_port), "--web-port", str(web_port)]
    ports += ["--influx-port", str(influx_port)]
    options = ["--server", "--no-systemctl", "--sensor", "simulated", "--device", "pi-test", "--interval", "0.5"]
    refusals()

    first = install(*options, *ports)
    assert first.returncode == 0, first.stdout + first.stderr
    match = re.search(r"^  password:\s+(\S+)", first.stdout, re.M)
    assert match, first.stdout
    password = match[1]
    assert f"The dashboard: http://127.0.0.1:{web_port}/" in first.stdout
    assert "broker-user --dir /etc/mosquitto/sensorpipe add <its name>" in first.stdout
    env_file = Path("/etc/sensorpipe/bridge.env")
    assert oct(env_file.stat().st_mode & 0o777) == "0o640" and env_file.owner() == "root"
    assert env_file.group() == "sensorpipe"
    assert password in env_file.read_text()
    for name in ("sensorpipe-bridge.service", "sensorpipe-publisher.service"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(UNITS / name)], capture_output=True, text=True, check=False
        )
        assert verify.returncode == 0 and verify.stderr == "", verify.stderr

    units = [Unit(name, tmp_path / f"{name}.log") for name in ("mosquitto.service", "influxdb.service")]
    try:
        units[0].run()
        units[1].run()
        wait_until(lambda: listening(mqtt_port), 30, "the installed broker to listen")
        wait_until(lambda: listening(influx_port), 60, "the installed InfluxDB to listen")
        units.append(Unit("sensorpipe-bridge.service", tmp_path / "bridge.log").run())
        units.append(Unit("sensorpipe-publisher.service", tmp_path / "publisher.log").run())
        reading_reaches_the_page(f"http://127.0.0.1:{web_port}", password, units[2])
        anonymous_is_refused(mqtt_port)

        before = fingerprint()
        time.sleep(0.01)  # a rewritten file would have a later mtime than this
        second = install(*options, *ports)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "install-pi: nothing changed" in second.stdout, second.stdout
        assert fingerprint() == before
        assert f"  password:    {password} " in second.stdout
    finally:
        codes = {unit.name: unit.stop() for unit in reversed(units) if unit.process is not None}
    for unit in units[2:]:
        assert codes[unit.name] == 0, f"{unit.name} exited with {codes[unit.name]}:\n{unit.log()[-3000:]}"
        assert "Traceback" not in unit.log(), unit.log()
    removed_then_purged()
    a_publisher_alone(tmp_path)


def a_publisher_alone(tmp_path: Path) -> None:
    """The other way: this Pi a publisher to a broker elsewhere. Installed, its unit's command
    run as the unit says (a few readings to a private broker), removed, purged."""
    broker = anonymous_broker(tmp_path)
    try:
        url = f"mqtt://pi-two:secret@127.0.0.1:{broker.port}"
        options = ["--device", "pi-two", "--sensor", "simulated", "--interval", "0.5", "--broker", url]
        installed = install(*options, "--no-systemctl")
        assert installed.returncode == 0, installed.stdout + installed.stderr
        env_file = Path("/etc/sensorpipe/publisher.env")
        assert oct(env_file.stat().st_mode & 0o777) == "0o640" and env_file.group() == "sensorpipe"
        unit_path = UNITS / "sensorpipe-publisher.service"
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(unit_path)], capture_output=True, text=True, check=False
        )
        assert verify.returncode == 0 and verify.stderr == "", verify.stderr
        assert not (UNITS / "sensorpipe-bridge.service").exists()
        watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="install-watcher")
        seen: list[object] = []
        watcher.on_message = lambda client, userdata, message: seen.append(message.payload)
        watcher.connect("127.0.0.1", broker.port)
        watcher.subscribe("sensors/pi-two/reading", qos=1)
        watcher.loop_start()
        publisher = Unit("sensorpipe-publisher.service", tmp_path / "publisher-alone.log").run()
        try:
            wait_until(lambda: len(seen) >= 3, 60, "three readings from the installed publisher")
        finally:
            code = publisher.stop()
            watcher.loop_stop()
        assert code == 0 and "Traceback" not in publisher.log(), publisher.log()
    finally:
        broker.stop()
    removed = install("--remove", "--no-systemctl")
    assert removed.returncode == 0 and not unit_path.exists() and not Path("/opt/sensorpipe").exists()
    assert env_file.exists() and Path("/var/lib/sensorpipe").exists()
    purged = install("--remove", "--purge", "--no-systemctl")
    assert purged.returncode == 0 and not [p for p in WRITTEN if p.exists()]
    assert subprocess.run(["id", "sensorpipe"], capture_output=True, check=False).returncode != 0


def anonymous_broker(tmp_path: Path) -> Server:
    """A private Mosquitto that takes anyone (the publisher's account is only configured)."""
    server = mosquitto(tmp_path / "alone-broker", free_port())
    server.start()
    return server


def reading_reaches_the_page(url: str, password: str, bridge: Unit) -> None:
    def healthy() -> bool:
        assert bridge.process is not None and bridge.process.poll() is None, bridge.log()
        try:
            return requests.get(url + "/healthz", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(healthy, 60, "the installed bridge to be healthy")
    assert requests.get(url + "/api/devices", timeout=10).status_code == 401  # the password holds
    session = requests.Session()
    signed_in = session.post(url + "/login", data={"password": password}, allow_redirects=False, timeout=10)
    assert signed_in.status_code == 302, signed_in.text

    def seen() -> bool:
        devices = session.get(url + "/api/devices", timeout=10).json()
        return any(d.get("device") == "pi-test" and d.get("last_seen") for d in devices)

    wait_until(seen, 60, "pi-test's readings on the installed bridge's page")
    assert session.get(url + "/", timeout=10).status_code == 200


def anonymous_is_refused(port: int) -> None:
    anonymous = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="anonymous-probe")
    answers: list[ReasonCode] = []
    anonymous.on_connect = lambda client, userdata, flags, reason, props: answers.append(reason)
    anonymous.connect("127.0.0.1", port)
    anonymous.loop_start()
    wait_until(lambda: answers, 10, "the broker's answer to an anonymous client")
    anonymous.loop_stop()
    assert answers[0].is_failure and "authorized" in str(answers[0]).lower(), answers


def removed_then_purged() -> None:
    removed = install("--remove", "--no-systemctl")
    assert removed.returncode == 0, removed.stderr
    kept = {p for p in WRITTEN if p.exists()}
    assert kept == {Path("/etc/sensorpipe"), Path("/var/lib/sensorpipe")}, kept
    assert "kept /etc/sensorpipe (settings), /var/lib/sensorpipe (outbox, alerts)" in removed.stdout
    assert subprocess.run(["id", "sensorpipe"], capture_output=True, check=False).returncode == 0  # owns them
    purged = install("--remove", "--purge", "--no-systemctl")
    assert purged.returncode == 0, purged.stderr
    assert not [p for p in WRITTEN if p.exists()]
    assert subprocess.run(["id", "sensorpipe"], capture_output=True, check=False).returncode != 0


BAD_OPTIONS = [
    (["--sensor", "dht23"], "--sensor 'dht23': one of dht22, dht11, ds18b20, simulated, none"),
    (["--sensor", "dht22", "--pin", "D40"], "SENSORPIPE_PIN (--pin) = 'D40'"),
    (["--web-port", "http"], "--web-port 'http': a port is a number"),
    (["--retention", "forever"], "--retention 'forever'"),
    (["--listen", "the-lan"], "--listen 'the-lan'"),
]


def refusals() -> None:
    """Bad input: one line, exit status 2, nothing written (run before the install)."""
    for args, says in BAD_OPTIONS:
        result = install("--server", "--no-systemctl", *args)
        assert result.returncode == 2 and says in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = install("--server", "--no-systemctl", "--listen", "127.0.0.1", "--web-port", str(port))
    assert result.returncode == 2 and f"port {port} is taken" in result.stderr, result.stdout + result.stderr
    theirs = Path("/etc/mosquitto/conf.d/someone-elses.conf")
    theirs.write_text("listener 1884\nallow_anonymous true\n")
    try:
        result = install("--server", "--no-systemctl", "--listen", "127.0.0.1", "--web-port", str(free_port()))
    finally:
        theirs.unlink()
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Mosquitto is configured already (/etc/mosquitto/conf.d/someone-elses.conf)" in result.stderr
    assert not [p for p in WRITTEN if p.exists()]
