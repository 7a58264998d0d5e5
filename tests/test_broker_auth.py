"""The shipped Mosquitto config, run for real: who may connect, publish and read.

The broker runs `mosquitto/mosquitto.conf` as shipped (paths and ports moved to a test
folder and loopback: devstack.servers.shipped_mosquitto); users come from
scripts/broker-user, as an operator adds them.
"""

from __future__ import annotations

import json
import shutil
import signal
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge.influx import InfluxV1
from devstack.servers import SHIPPED_CONFIG_DIR, Server, shipped_mosquitto
from tests.conftest import ROOT, BridgeProcess, Program, fresh_clone_only, wait_until

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
        self.client.disconnect()
        self.client.loop_stop()


def credentials(url: str) -> tuple[str, str]:
    userinfo = url.split("//", 1)[1].split("@", 1)[0]
    user, password = userinfo.split(":", 1)
    return user, password


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A copy of the shipped mosquitto/ folder, as an operator has it before adding users."""
    folder = tmp_path / "mosquitto-config"
    shutil.copytree(SHIPPED_CONFIG_DIR, folder, ignore=fresh_clone_only)
    return folder


@pytest.fixture
def secured(config: Path) -> Iterator[tuple[Server, dict[str, str]]]:
    urls = {
        "bridge": add(config, "add-bridge"),
        "alpha": add(config, "add", "alpha"),
        "beta": add(config, "add", "beta"),
        "grafana": add(config, "add", "grafana", "--reader"),
    }
    server = shipped_mosquitto(config)
    server.start()
    yield server, {name: url.replace(":1883", f":{server.port}") for name, url in urls.items()}
    server.stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(*args: Any, **kwargs: Any) -> Client:
        made.append(Client(*args, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


def test_anonymous_unknown_and_wrong_password_are_refused(
    secured: tuple[Server, dict[str, str]], clients: Callable[..., Client]
) -> None:
    server, urls = secured
    alpha, _ = credentials(urls["alpha"])
    assert not clients(server.port).accepted
    assert not clients(server.port, "mallory", "guess").accepted
    assert not clients(server.port, alpha, "wrong").accepted
    assert clients(server.port, *credentials(urls["alpha"])).accepted


def test_a_device_writes_only_its_own_topics_and_readers_only_read(
    secured: tuple[Server, dict[str, str]], clients: Callable[..., Client]
) -> None:
    server, urls = secured
    bridge = clients(server.port, *credentials(urls["bridge"]))
    bridge.client.subscribe("sensors/#", qos=1)
    reader = clients(server.port, *credentials(urls["grafana"]))
    reader.client.subscribe("sensors/#", qos=1)
    time.sleep(0.5)
    alpha = clients(server.port, *credentials(urls["alpha"]))
    grafana = reader
    for client, topic in [
        (alpha, "sensors/alpha/reading"),  # its own: delivered
        (alpha, "sensors/beta/reading"),  # posing as beta: acknowledged (MQTT 3.1.1) and dropped
        (alpha, "sensors/beta/status"),
        (grafana, "sensors/alpha/reading"),  # a reader writes nothing
        (alpha, "homeassistant/sensor/alpha/temperature/config"),  # its own discovery config: allowed
    ]:
        client.client.publish(topic, json.dumps({"temperature": 20.0, "from": topic}), qos=1).wait_for_publish(5)
    wait_until(lambda: len(bridge.received) >= 1 and len(reader.received) >= 1, 10, "alpha's reading")
    time.sleep(1.0)  # anything forged would have arrived by now
    assert [m.topic for m in bridge.received] == ["sensors/alpha/reading"]
    assert [m.topic for m in reader.received] == ["sensors/alpha/reading"]


def test_the_bridge_receives_every_device_and_stores_nothing_forged(
    secured: tuple[Server, dict[str, str]],
    start_bridge: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    influx: InfluxV1,
    clients: Callable[..., Client],
) -> None:
    server, urls = secured
    start_bridge(on=server, SENSORPIPE_MQTT_URL=urls["bridge"], SENSORPIPE_TOPIC_PREFIX="sensors")
    publishers = [
        run_publisher(
            device,
            on=server,
            SENSORPIPE_MQTT_URL=urls[device],
            SENSORPIPE_TOPIC_PREFIX="sensors",
            SENSORPIPE_COUNT="20",
            SENSORPIPE_INTERVAL="0.05",
        )
        for device in ("alpha", "beta")
    ]
    alpha = clients(server.port, *credentials(urls["alpha"]))
    alpha.client.publish("sensors/beta/reading", json.dumps({"temperature": -99.0}), qos=1).wait_for_publish(5)
    for publisher in publishers:
        assert publisher.process.wait(60) == 0, publisher.log()

    def counts() -> dict[str, int]:
        series = influx.query('SELECT count(temperature) FROM environment GROUP BY "device"')
        return {s["tags"]["device"]: s["values"][0][1] for s in series}

    wait_until(lambda: counts() == {"alpha": 20, "beta": 20}, 30, "20 readings of each device")
    assert not influx.query("SELECT * FROM environment WHERE temperature = -99.0")


def test_users_added_and_removed_while_running_take_effect_on_reload(
    config: Path, secured: tuple[Server, dict[str, str]], clients: Callable[..., Client]
) -> None:
    server, _ = secured
    assert server.process is not None
    url = add(config, "add", "gamma").replace(":1883", f":{server.port}")
    assert not clients(server.port, *credentials(url)).accepted  # not reloaded yet
    broker_user(config, "list")
    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: clients(server.port, *credentials(url)).accepted, 10, "gamma accepted after SIGHUP")
    printed = broker_user(config, "remove", "gamma", reload=f"pid:{server.process.pid}")
    assert "removed gamma" in printed
    wait_until(lambda: not clients(server.port, *credentials(url)).accepted, 10, "gamma refused after removal")
    assert "alpha\tdevice" in broker_user(config, "list") and "grafana\treader" in broker_user(config, "list")


def test_the_tool_prints_the_pis_settings_and_refuses_bad_names(config: Path) -> None:
    printed = broker_user(config, "add", "greenhouse", "--host", "broker.lan")
    assert "sudo scripts/install-pi.sh --device greenhouse --broker mqtt://greenhouse:" in printed
    assert "@broker.lan:1883" in printed
    for bad in (["add", "my device"], ["add", "sensorpipe-bridge"], ["remove", "nobody"]):
        result = subprocess.run(
            [str(TOOL), "--dir", str(config), "--reload", "none", *bad], capture_output=True, text=True, check=False
        )
        assert result.returncode == 2 and result.stderr.startswith("broker-user: "), result.stderr


def test_optional_websockets_and_tls_listeners_start_with_the_same_users(
    config: Path, tmp_path: Path, clients: Callable[..., Client]
) -> None:
    conf_d = config / "conf.d"
    for name in ("websockets", "tls"):
        shutil.copy(conf_d / f"{name}.conf.example", conf_d / f"{name}.conf")
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
            str(conf_d / "privkey.pem"),
            "-out",
            str(conf_d / "fullchain.pem"),
        ],
        check=True,
        capture_output=True,
    )
    shutil.copy(conf_d / "fullchain.pem", conf_d / "ca.pem")
    url = add(config, "add", "alpha")
    server = shipped_mosquitto(config)
    server.start()
    try:
        ports = {
            name: int(
                next(
                    line.split()[1]
                    for line in (conf_d / f"{name}.conf").read_text().splitlines()
                    if line.startswith("listener ")
                )
            )
            for name in ("websockets", "tls")
        }
        user, password = credentials(url)
        assert clients(ports["tls"], user, password, tls=conf_d / "ca.pem").accepted
        with pytest.raises(ssl.SSLError):
            Client(ports["tls"], user, password, tls=Path(ssl.get_default_verify_paths().cafile or "/nonexistent"))
        ws = mqtt.Client(CallbackAPIVersion.VERSION2, transport="websockets")
        ws.username_pw_set(user, password)
        reasons: list[Any] = []
        ws.on_connect = lambda c, u, f, reason, p: reasons.append(reason)
        ws.connect("127.0.0.1", ports["websockets"])
        ws.loop_start()
        wait_until(lambda: reasons, 10, "a CONNACK over websockets")
        ws.disconnect()
        ws.loop_stop()
        assert not reasons[0].is_failure
        assert clients(server.port, user, password).accepted  # the plain listener still there
    finally:
        server.stop()
