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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion

from bridge.influx import InfluxV1
from devstack.servers import Server, shipped_mosquitto
from tests.conftest import (
    TOOL,
    BridgeProcess,
    Client,
    Program,
    add,
    broker_user,
    credentials,
    self_signed_certificate,
    subscribe_acked,
)
from tests.waiting import wait_until


def test_anonymous_unknown_and_wrong_password_are_refused(
    secured_broker: tuple[Server, dict[str, str]], clients: Callable[..., Client]
) -> None:
    server, urls = secured_broker
    greenhouse, _ = credentials(urls["greenhouse"])
    assert not clients(server.port).accepted
    assert not clients(server.port, "mallory", "guess").accepted
    assert not clients(server.port, greenhouse, "wrong").accepted
    assert clients(server.port, *credentials(urls["greenhouse"])).accepted


def test_a_device_writes_only_its_own_topics_and_readers_only_read(
    secured_broker: tuple[Server, dict[str, str]], clients: Callable[..., Client]
) -> None:
    server, urls = secured_broker
    bridge = clients(server.port, *credentials(urls["bridge"]))
    subscribe_acked(bridge.client, "sensors/#")
    reader = clients(server.port, *credentials(urls["mytool"]))
    subscribe_acked(reader.client, "sensors/#")
    greenhouse = clients(server.port, *credentials(urls["greenhouse"]))
    mytool = reader
    for client, topic in [
        (greenhouse, "sensors/greenhouse/reading"),  # its own: delivered
        (greenhouse, "sensors/coldroom/reading"),  # posing as coldroom: acknowledged (MQTT 3.1.1) and dropped
        (greenhouse, "sensors/coldroom/status"),
        (mytool, "sensors/greenhouse/reading"),  # a reader writes nothing
        (greenhouse, "homeassistant/sensor/greenhouse/temperature/config"),  # its own discovery config: allowed
    ]:
        client.client.publish(topic, json.dumps({"temperature": 20.0, "from": topic}), qos=1).wait_for_publish(5)
    # Every publish above was acknowledged, so Mosquitto has queued whatever it delivers of
    # them; a marker published now reaches each subscriber after all of that.
    greenhouse.client.publish("sensors/greenhouse/reading", b'{"marker": 1}', qos=1).wait_for_publish(5)
    wait_until(
        lambda: all(any(m.payload == b'{"marker": 1}' for m in c.received) for c in (bridge, reader)), 10, "the marker"
    )
    assert [m.topic for m in bridge.received] == ["sensors/greenhouse/reading"] * 2
    assert [m.topic for m in reader.received] == ["sensors/greenhouse/reading"] * 2


def test_the_bridge_receives_every_device_and_stores_nothing_forged(
    secured_broker: tuple[Server, dict[str, str]],
    start_bridge: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    influx: InfluxV1,
    clients: Callable[..., Client],
) -> None:
    server, urls = secured_broker
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
        for device in ("greenhouse", "coldroom")
    ]
    greenhouse = clients(server.port, *credentials(urls["greenhouse"]))
    greenhouse.client.publish("sensors/coldroom/reading", json.dumps({"temperature": -99.0}), qos=1).wait_for_publish(5)
    for publisher in publishers:
        assert publisher.process.wait(60) == 0, publisher.log()

    def counts() -> dict[str, int]:
        series = influx.query('SELECT count(temperature) FROM environment GROUP BY "device"')
        return {s["tags"]["device"]: s["values"][0][1] for s in series}

    wait_until(lambda: counts() == {"greenhouse": 20, "coldroom": 20}, 30, "20 readings of each device")
    assert not influx.query("SELECT * FROM environment WHERE temperature = -99.0")


def test_a_device_hears_the_bridges_refusals_of_its_own_messages_only(
    secured_broker: tuple[Server, dict[str, str]],
    start_bridge: Callable[..., BridgeProcess],
    clients: Callable[..., Client],
) -> None:
    server, urls = secured_broker
    start_bridge(on=server, SENSORPIPE_MQTT_URL=urls["bridge"], SENSORPIPE_TOPIC_PREFIX="sensors")
    devices = {name: clients(server.port, *credentials(urls[name])) for name in ("greenhouse", "coldroom")}
    for device in devices.values():
        subscribe_acked(device.client, "sensors/_rejections/#")  # all of them: the ACL lets through its own
    for name, device in devices.items():  # one after the other: greenhouse's refusal goes out first
        device.client.publish(f"sensors/{name}/reading", b"garbage", qos=1).wait_for_publish(5)
        wait_until(lambda d=device: d.received, 20, f"{name} told of its refusal")  # type: ignore[misc]
    for name, device in devices.items():
        assert [m.topic for m in device.received] == [f"sensors/_rejections/{name}"]
        refusal = json.loads(device.received[0].payload)
        assert refusal["reason"] == "not_json" and refusal["kind"] == "reading"


def test_users_added_and_removed_while_running_take_effect_on_reload(
    broker_config: Path, secured_broker: tuple[Server, dict[str, str]], clients: Callable[..., Client]
) -> None:
    server, _ = secured_broker
    assert server.process is not None
    url = add(broker_config, "add", "gamma").replace(":1883", f":{server.port}")
    assert not clients(server.port, *credentials(url)).accepted  # not reloaded yet
    broker_user(broker_config, "list")
    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: clients(server.port, *credentials(url)).accepted, 10, "gamma accepted after SIGHUP")
    printed = broker_user(broker_config, "remove", "gamma", reload=f"pid:{server.process.pid}")
    assert "removed gamma" in printed
    wait_until(lambda: not clients(server.port, *credentials(url)).accepted, 10, "gamma refused after removal")
    listed = broker_user(broker_config, "list")
    assert "greenhouse\tdevice" in listed and "mytool\treader" in listed


def test_the_tool_prints_the_pis_settings_and_refuses_bad_names(broker_config: Path) -> None:
    printed = broker_user(broker_config, "add", "greenhouse", "--host", "broker.lan")
    assert "sudo scripts/install-pi.sh --device greenhouse --broker mqtt://greenhouse:" in printed
    assert "@broker.lan:1883" in printed
    for bad in (["add", "my device"], ["add", "sensorpipe-bridge"], ["remove", "nobody"]):
        command = [str(TOOL), "--dir", str(broker_config), "--reload", "none", *bad]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode == 2 and result.stderr.startswith("broker-user: "), result.stderr


def test_optional_websockets_and_tls_listeners_start_with_the_same_users(
    broker_config: Path, tmp_path: Path, clients: Callable[..., Client]
) -> None:
    conf_d = broker_config / "conf.d"
    for name in ("websockets", "tls"):
        shutil.copy(conf_d / f"{name}.conf.example", conf_d / f"{name}.conf")
    self_signed_certificate(conf_d / "fullchain.pem", conf_d / "privkey.pem")
    shutil.copy(conf_d / "fullchain.pem", conf_d / "ca.pem")
    url = add(broker_config, "add", "greenhouse")
    with shipped_mosquitto(broker_config).serving() as server:
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


def test_the_bridge_and_a_publisher_speak_mqtts(
    broker_config: Path,
    start_bridge: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    influx: InfluxV1,
) -> None:
    """`mqtts://` for both programs, to the shipped broker's optional TLS listener with a
    self-signed certificate that the programs trust through SSL_CERT_FILE, as they would a
    CA in the system's bundle: the readings are stored. They are given the TLS listener
    only."""
    conf_d = broker_config / "conf.d"
    shutil.copy(conf_d / "tls.conf.example", conf_d / "tls.conf")
    self_signed_certificate(conf_d / "fullchain.pem", conf_d / "privkey.pem")
    shutil.copy(conf_d / "fullchain.pem", conf_d / "ca.pem")
    bridge_url, device_url = add(broker_config, "add-bridge"), add(broker_config, "add", "greenhouse")
    trust = {"SSL_CERT_FILE": str(conf_d / "ca.pem")}
    with shipped_mosquitto(broker_config).serving() as server:
        # The listener's port as the broker got it (every listener moves to a free one here).
        port = next(
            int(line.split()[1])
            for line in (conf_d / "tls.conf").read_text().splitlines()
            if line.startswith("listener ")
        )

        def over_tls(url: str) -> str:
            assert url.startswith("mqtt://") and url.endswith(":1883"), url
            return "mqtts://" + url.removeprefix("mqtt://").removesuffix(":1883") + f":{port}"

        # Without the certificate trusted the handshake fails: said in the log and /healthz.
        untrusting = start_bridge(
            on=server,
            wait=False,
            SENSORPIPE_MQTT_URL=over_tls(bridge_url),
            SENSORPIPE_TOPIC_PREFIX="sensors",
            SENSORPIPE_MQTT_CLIENT_ID="untrusting",
        )
        wait_until(lambda: "cannot connect to the broker at mqtts://" in untrusting.log(), 30, "the failure said")
        assert bridge_url.split(":")[2].split("@")[0] not in untrusting.log()  # the password is not shown

        def health() -> tuple[int, str] | None:
            try:
                answer = requests.get(untrusting.url + "/healthz", timeout=5)
            except requests.ConnectionError:
                return None  # its web server is not up yet
            return answer.status_code, answer.text

        status, text = wait_until(health, 30, "/healthz to answer")
        assert status == 503 and "cannot connect to the broker" in text
        untrusting.stop()
        doubting = run_publisher(
            "greenhouse",
            on=server,
            SENSORPIPE_MQTT_URL=over_tls(device_url),
            SENSORPIPE_TOPIC_PREFIX="sensors",
            SENSORPIPE_OUTBOX=str(broker_config / "doubting-outbox.sqlite"),  # its readings stay its own
        )
        wait_until(lambda: "cannot connect to mqtts://" in doubting.log(), 30, "the publisher's failure said")
        doubting.stop()
        start_bridge(on=server, SENSORPIPE_MQTT_URL=over_tls(bridge_url), SENSORPIPE_TOPIC_PREFIX="sensors", **trust)
        publisher = run_publisher(
            "greenhouse",
            on=server,
            SENSORPIPE_MQTT_URL=over_tls(device_url),
            SENSORPIPE_TOPIC_PREFIX="sensors",
            SENSORPIPE_COUNT="5",
            SENSORPIPE_INTERVAL="0.1",
            **trust,
        )
        assert publisher.process.wait(60) == 0, publisher.log()

        def stored() -> int:
            series = influx.query("SELECT count(temperature) FROM environment")
            return int(series[0]["values"][0][1]) if series else 0

        wait_until(lambda: stored() == 5, 30, "the five readings stored")
