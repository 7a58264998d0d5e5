"""Fixtures: a private Mosquitto and InfluxDB 1.6.7 on free loopback ports, our programs as
real processes, and headless Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import paho.mqtt.client as mqtt
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import sync_playwright

from bridge.influx import InfluxTarget, InfluxV1
from common.mqtt import disconnect
from devstack.browser import chromium_executable
from devstack.servers import (
    SHIPPED_CONFIG_DIR,
    Server,
    free_port,
    influxdb,
    mosquitto,
    redis,
    shipped_mosquitto,
    wait_influx_ready,
)
from tests import faults
from tests.faults import SteadyPublisher
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first: each worker takes the next test as it finishes one, so a long
    test started last would run on alone while the other workers idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# --- servers ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One private InfluxDB for the session; each test gets its own database."""
    with influxdb(tmp_path_factory.mktemp("influxdb")).serving() as server:
        wait_influx_ready(server.port)
        yield server


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One private Mosquitto for the session; each test gets its own topic prefix."""
    with mosquitto(tmp_path_factory.mktemp("mosquitto")).serving() as server:
        yield server


def fresh_clone_only(folder: str, names: list[str]) -> set[str]:
    """What a fresh clone's mosquitto/ lacks: users, the ACL, enabled optional listeners."""
    enabled = {n for n in names if n.endswith((".conf", ".pem"))} if folder.endswith("conf.d") else set()
    return enabled | {n for n in names if n in {"passwd", "acl", "data", "mosquitto-local.conf", "mosquitto.log"}}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A private Redis for the tests with several bridges (each test uses its own prefix)."""
    with redis(tmp_path_factory.mktemp("redis")).serving() as server:
        yield server


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Server]:
    """A Mosquitto of this test's own, for tests that stop or restart it."""
    with mosquitto(tmp_path / "mosquitto").serving() as server:
        yield server


@pytest.fixture
def influx(influx_server: Server) -> Iterator[InfluxV1]:
    """A client on a fresh database of the private InfluxDB."""
    client = InfluxV1(InfluxTarget(f"http://127.0.0.1:{influx_server.port}", f"test_{uuid.uuid4().hex[:12]}"))
    client.ensure_database()
    yield client
    client.close()


def points(influx: InfluxV1, where: str = "") -> list[dict[str, Any]]:
    """Every stored point of the `environment` measurement as dicts, oldest first."""
    series = influx.query(f"SELECT * FROM environment {where}")
    return [dict(zip(s["columns"], row, strict=True)) for s in series for row in s["values"]]


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own, so tests sharing a broker do not see each other."""
    return f"t{uuid.uuid4().hex[:10]}"


# --- our programs ----------------------------------------------------------------------


def run_program(program: str, *args: str, input: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m <program> args` to its end, with none of this shell's SENSORPIPE_* settings
    (only those in `env`), `input` on its stdin; its exit status and output."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SENSORPIPE_")}
    return subprocess.run(
        [sys.executable, "-m", program, *args],
        env={**clean, **env},
        input=input,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class Program:
    """One of our programs running as a child process (`python -m ...`)."""

    module: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] = field(init=False)
    # What the end of the test accepts (`finish`): exit statuses when it exits by itself,
    # and whether its log may hold a traceback (a test that makes it log one on purpose).
    expected_exits: frozenset[int] = frozenset({0})
    tracebacks_expected: bool = False
    stopped: bool = field(default=False, init=False)

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module], env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.stopped = True
        return stop_process(self.process, sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def finish(self) -> list[str]:
        """At the end of a test: stop it if it still runs; what was wrong with its end (a
        crash after the test's last assert, an unclean exit on SIGTERM, a traceback)."""
        running = self.process.poll() is None
        code = self.stop()
        problems = []
        if running and code != 0:
            problems.append(f"{self.module} exited with {code} on SIGTERM at the end of the test")
        elif not running and not self.stopped and code not in self.expected_exits:
            problems.append(f"{self.module} exited by itself with {code} during the test")
        if not self.tracebacks_expected and "Traceback (most recent call last)" in self.log():
            problems.append(f"{self.module} logged a traceback")
        return [f"{problem} ({self.log_path}):\n{self.log()[-3000:]}" for problem in problems]


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    """Send `sig` to a program that still runs, kill it after `timeout` s; its exit status."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def assert_stopped_cleanly(process: subprocess.Popen[bytes], log_path: Path, what: str) -> None:
    """For a program a test started itself and stopped with SIGTERM: exit 0, no traceback."""
    log = log_path.read_text(errors="replace")
    assert process.returncode == 0, f"{what} exited with {process.returncode} on SIGTERM:\n{log[-3000:]}"
    assert "Traceback (most recent call last)" not in log, f"{what} logged a traceback:\n{log[-3000:]}"


def finish_all(programs: list[Program]) -> None:
    """Stop every program a fixture started; fail the test if any ended badly (all stopped
    first, so none is left running)."""
    problems = [problem for program in programs for problem in program.finish()]
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@dataclass
class BridgeProcess(Program):
    """The bridge, with the address of its web server."""

    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> BridgeProcess:
        def answers() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"the bridge exited with {self.process.returncode}:\n{self.log()}")
            try:
                return requests.get(self.url + "/healthz", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(answers, 60, "the bridge's /healthz to answer 200")
        return self

    def get(self, path: str) -> Any:
        response = requests.get(self.url + path, timeout=10)
        response.raise_for_status()
        return response.json()


def base_env(broker: Server, influx: InfluxV1, prefix: str) -> dict[str, str]:
    """Settings pointing our programs at this test's broker, database and prefix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORPIPE_")}
    env.update(
        PYTHONUNBUFFERED="1",
        SENSORPIPE_MQTT_URL=f"mqtt://127.0.0.1:{broker.port}",
        SENSORPIPE_TOPIC_PREFIX=prefix,
        SENSORPIPE_INFLUX_URL=influx.target.url,
        SENSORPIPE_INFLUX_DB=influx.target.database,
    )
    return env


@pytest.fixture
def start_bridge(
    broker: Server, influx: InfluxV1, prefix: str, tmp_path: Path
) -> Iterator[Callable[..., BridgeProcess]]:
    """Start `python -m bridge` against the session broker (or `on=` another) and this test's DB."""
    started: list[BridgeProcess] = []

    def start(on: Server | None = None, wait: bool = True, **settings: str) -> BridgeProcess:
        env = base_env(on or broker, influx, prefix)
        env["SENSORPIPE_MQTT_CLIENT_ID"] = f"bridge-{prefix}"
        port = free_port()
        env["SENSORPIPE_WEB_PORT"] = str(port)
        env.update(settings)
        # The alerts' state per bridge identity, like the default, but in this test's folder.
        env.setdefault("SENSORPIPE_ALERT_DB", str(tmp_path / f"alerts-{env['SENSORPIPE_MQTT_CLIENT_ID']}.sqlite"))
        bridge = BridgeProcess("bridge", env, tmp_path / f"bridge-{len(started)}.log", port=port)
        started.append(bridge.start())
        return bridge.wait_ready() if wait else bridge

    yield start
    finish_all(list(started))


def replicas(
    start_bridge: Callable[..., BridgeProcess], redis_server: Server, prefix: str, **settings: str
) -> Callable[[str], BridgeProcess]:
    """Start replica `name` of a share group with Redis (plus `settings`, SENSORPIPE_*)."""

    def start(name: str, wait: bool = True) -> BridgeProcess:
        return start_bridge(
            wait=wait,
            SENSORPIPE_MQTT_CLIENT_ID=f"bridge-{prefix}-{name}",
            SENSORPIPE_SHARE_GROUP=f"bridges-{prefix}",
            SENSORPIPE_REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0",
            **settings,
        )

    return start


@pytest.fixture
def run_publisher(broker: Server, influx: InfluxV1, prefix: str, tmp_path: Path) -> Iterator[Callable[..., Program]]:
    """Start `python -m publisher` (simulated sensor) for one device."""
    count = 0

    def start(device: str, on: Server | None = None, **settings: str) -> Program:
        nonlocal count
        count += 1
        env = base_env(on or broker, influx, prefix)
        env["SENSORPIPE_DEVICE"] = device
        # One outbox per device and test: a restart of the same device finds its own backlog.
        env["SENSORPIPE_OUTBOX"] = str(tmp_path / f"outbox-{device}.sqlite")
        env.update(settings)
        program = Program("publisher", env, tmp_path / f"publisher-{device}-{count}.log").start()
        started.append(program)
        return program

    started: list[Program] = []
    yield start
    finish_all(started)


class Mqtt:
    """A plain paho client for tests: publishes with QoS 1 and waits for the broker's ack."""

    def __init__(self, server: Server) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        self.client.connect("127.0.0.1", server.port)
        self.client.loop_start()
        self.received: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self.client.on_message = self._on_message

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append(message)

    def publish(self, topic: str, payload: bytes | str | dict[str, Any], retain: bool = False) -> None:
        body = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        self.client.publish(topic, body, qos=1, retain=retain).wait_for_publish(10)

    def subscribe(self, topic: str) -> None:
        subscribe_acked(self.client, topic)

    def close(self) -> None:
        disconnect(self.client)


@pytest.fixture
def steady(prefix: str) -> Iterator[Callable[[Server], SteadyPublisher]]:
    """Start the 20,000-reading run (tests/faults.py) against a broker."""
    started: list[SteadyPublisher] = []

    def start(on: Server) -> SteadyPublisher:
        publisher = SteadyPublisher(on.port, prefix, faults.DEVICES, faults.PER_DEVICE, faults.RATE).start()
        started.append(publisher)
        return publisher

    yield start
    for publisher in started:
        publisher.close()


@pytest.fixture
def mqtt_client(broker: Server) -> Iterator[Mqtt]:
    client = Mqtt(broker)
    yield client
    client.close()


# --- the browser -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright (no browser download)."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_executable(),
            headless=True,
            args=["--disable-background-networking", "--disable-component-update", "--no-first-run"],
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page, desktop-sized."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


@pytest.fixture
def artifacts() -> Path:
    """Where tests save screenshots for people to look at (test-artifacts/, not committed)."""
    folder = ROOT / "test-artifacts"
    folder.mkdir(exist_ok=True)
    return folder


# --- the shipped broker config, secured_broker, with accounts made by scripts/broker-user ---------

TOOL = ROOT / "scripts" / "broker-user"


def broker_user(config: Path, *args: str, reload: str = "none") -> str:
    result = subprocess.run(
        [str(TOOL), "--dir", str(config), "--reload", reload, *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def add(config: Path, *args: str) -> str:
    """The URL of a new account (host and port as the test broker's)."""
    return broker_user(config, *args, "--host", "127.0.0.1", "--url-only").strip()


def subscribe_acked(client: mqtt.Client, topic: str) -> None:
    """Subscribe at QoS 1 and return once the broker's SUBACK is in: whatever is published
    from then on reaches `client`."""
    acked = threading.Event()
    client.on_subscribe = lambda c, u, mid, reasons, p: acked.set()
    client.subscribe(topic, qos=1)
    assert acked.wait(10), f"no SUBACK for {topic}"


class Client:
    """A paho client that reports how its connection went and what it received."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None, tls: Path | None = None):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
        if user is not None:
            self.client.username_pw_set(user, password)
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls))
        self.connack: Any = None
        self.received: list[mqtt.MQTTMessage] = []
        self.client.on_connect = lambda c, u, f, reason, p: setattr(self, "connack", reason)
        self.client.on_message = lambda c, u, m: self.received.append(m)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(lambda: self.connack is not None, 10, "a CONNACK")

    @property
    def accepted(self) -> bool:
        return not self.connack.is_failure

    def close(self) -> None:
        disconnect(self.client)


def credentials(url: str) -> tuple[str, str]:
    userinfo = url.split("//", 1)[1].split("@", 1)[0]
    user, password = userinfo.split(":", 1)
    return user, password


@pytest.fixture
def broker_config(tmp_path: Path) -> Path:
    """A copy of the shipped mosquitto/ folder, as an operator has it before adding users."""
    folder = tmp_path / "mosquitto-config"
    shutil.copytree(SHIPPED_CONFIG_DIR, folder, ignore=fresh_clone_only)
    return folder


@pytest.fixture
def secured_broker(broker_config: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    """The shipped config running, with accounts: the bridge, devices greenhouse and coldroom,
    reader mytool. Yields the server and each account's URL."""
    urls = {
        "bridge": add(broker_config, "add-bridge"),
        "greenhouse": add(broker_config, "add", "greenhouse"),
        "coldroom": add(broker_config, "add", "coldroom"),
        "mytool": add(broker_config, "add", "mytool", "--reader"),
    }
    with shipped_mosquitto(broker_config).serving() as server:
        yield server, {name: url.replace(":1883", f":{server.port}") for name, url in urls.items()}


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(*args: Any, **kwargs: Any) -> Client:
        made.append(Client(*args, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


def self_signed_certificate(cert: Path, key: Path) -> None:
    """A certificate for 127.0.0.1, valid two days, that is its own CA (openssl)."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )


NGINX = ROOT / ".cache" / "nginx" / "usr" / "sbin" / "nginx"  # unpacked by scripts/setup.sh test


@contextlib.contextmanager
def running_nginx(folder: Path, site: str, ready: Callable[[], bool]) -> Iterator[None]:
    """nginx serving `site` (a file for /etc/nginx/sites-enabled) until the block ends."""
    assert NGINX.exists(), "nginx is unpacked by scripts/setup.sh test"
    (folder / "site.conf").write_text(site)
    temp = folder / "nginx-temp"
    temp.mkdir(exist_ok=True)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    paths = "".join(f"{kind}_temp_path {temp}/{kind};\n" for kind in kinds)
    # The part of /etc/nginx/nginx.conf a site file lives in, with this test's paths.
    (folder / "nginx.conf").write_text(
        f"daemon off;\npid {folder}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\naccess_log off;\n{paths}include {folder}/site.conf;\n}}\n"
    )
    with (folder / "nginx.log").open("wb") as log:
        process = subprocess.Popen(
            [str(NGINX), "-p", str(folder), "-e", "stderr", "-c", str(folder / "nginx.conf")], stdout=log, stderr=log
        )
    try:
        wait_until(lambda: process.poll() is not None or ready(), 20, "nginx to listen")
        assert process.poll() is None, (folder / "nginx.log").read_text()
        yield
    finally:
        process.terminate()
        process.wait(10)
