"""The side doors of docs/side-doors.md, run as documented: MQTT tools, InfluxQL, nginx.

Commands are taken from the docs (or checked to be there word for word) and run against the
real servers: the shipped broker config with a reader account, InfluxDB 1.6.7 through
Debian's `influx` shell, nginx 1.22 (Debian's package, unpacked by scripts/setup.sh) in
front of a real bridge. Node-RED, Home Assistant and Grafana cannot run here: their example
files are checked for what they must say.
"""

from __future__ import annotations

import json
import re
import shlex
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
import socketio
import websocket
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from bridge.influx import InfluxV1
from bridge.lineprotocol import to_line
from bridge.rollups import Rollups
from bridge.store import InfluxStore, StoreMetrics
from common.reading import Reading, now_us
from common.topics import Topics
from devstack.servers import Server, free_port
from publisher.discovery import discovery_messages
from publisher.sensors import parse_sensor
from tests.conftest import ROOT, BridgeProcess, Mqtt, credentials, running_nginx, self_signed_certificate
from tests.waiting import wait_until

DOCS = ROOT / "docs" / "side-doors.md"
EXAMPLES = ROOT / "docs" / "examples"
# The nginx test's certificate is self-signed: not verifying it is the point, not a slip.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


def documented(prefix: str) -> list[str]:
    """The indented command lines of docs/side-doors.md that start with `prefix`."""
    return [line.strip() for line in DOCS.read_text().splitlines() if line.startswith("    " + prefix)]


# --- MQTT -----------------------------------------------------------------------------------


def test_documented_mosquitto_sub_commands_work_with_a_reader_account(
    secured_broker: tuple[Server, dict[str, str]],
) -> None:
    server, urls = secured_broker
    reader, password = credentials(urls["mytool"])
    client = mqtt.Client(CallbackAPIVersion.VERSION2)  # a device's account: the test client is anonymous
    client.username_pw_set(*credentials(urls["greenhouse"]))
    client.connect("127.0.0.1", server.port)
    client.loop_start()
    client.publish("sensors/greenhouse/status", "online", qos=1, retain=True).wait_for_publish(5)
    bridge = mqtt.Client(CallbackAPIVersion.VERSION2)  # the bridge's account, which writes refusals
    bridge.username_pw_set(*credentials(urls["bridge"]))
    bridge.connect("127.0.0.1", server.port)
    bridge.loop_start()
    refusal = json.dumps({"reason": "not_json", "detail": "not JSON", "at": time.time() * 1000, "seq": None})
    commands = documented("mosquitto_sub ")
    assert len(commands) == 4
    for command in commands:
        if "_rejections" in command:  # retained only while this command runs: the others read sensors/#
            bridge.publish("sensors/_rejections/greenhouse", refusal, qos=1, retain=True).wait_for_publish(5)
        args = shlex.split(command.replace("BROKER", "127.0.0.1").replace("mytool", reader))
        args = [password if a == "PASSWORD" else a for a in args] + ["-p", str(server.port)]
        if "-W" not in args:
            args += ["-C", "1", "-W", "10"]
        sub = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Publish until mosquitto_sub (-C 1) has one and exits: it may not have subscribed yet.
        deadline = time.monotonic() + 10
        while sub.poll() is None and time.monotonic() < deadline:
            reading = {"ts": time.time(), "seq": 1, "temperature": 21.5}
            client.publish("sensors/greenhouse/reading", json.dumps(reading), qos=1).wait_for_publish(5)
            time.sleep(0.5)
        out, err = sub.communicate(timeout=20)
        assert out.strip(), f"{command}: nothing received ({err})"
        if "status" in command:
            assert "sensors/greenhouse/status online" in out
        elif "_rejections" in command:
            assert f"sensors/_rejections/greenhouse {refusal}" in out
            bridge.publish("sensors/_rejections/greenhouse", b"", qos=1, retain=True).wait_for_publish(5)
        elif "-v" in args:
            assert out.startswith("sensors/greenhouse/")
        else:
            assert json.loads(out.splitlines()[0])["temperature"] == 21.5
    for each in (client, bridge):
        each.loop_stop()
        each.disconnect()


def test_node_red_flow_subscribes_to_readings_and_holds_no_credentials() -> None:
    flow = json.loads((EXAMPLES / "node-red-flow.json").read_text())
    nodes = {node["type"]: node for node in flow}
    assert nodes["mqtt in"]["topic"] == Topics("sensors").filter("reading")
    assert nodes["mqtt in"]["qos"] == "1" and nodes["mqtt in"]["datatype"] == "json"
    assert nodes["mqtt in"]["broker"] == nodes["mqtt-broker"]["id"]
    assert not {"credentials", "user", "password"} & set(nodes["mqtt-broker"])
    assert "msg.topic.split('/')[1]" in nodes["function"]["func"]


def test_home_assistant_yaml_matches_what_discovery_announces() -> None:
    sensors = yaml.safe_load((EXAMPLES / "home-assistant.yaml").read_text())["mqtt"]["sensor"]
    announced = {
        config["unique_id"]: config
        for _, config in discovery_messages(
            "homeassistant", Topics("sensors"), "greenhouse", (parse_sensor("dht22"),), None, derived=True
        )
    }
    for sensor in sensors:
        config = announced[sensor["unique_id"]]
        for key in ("unique_id", "state_topic", "availability_topic", "device_class", "state_class"):
            assert sensor[key] == config[key], key
        metric = config["device_class"]
        assert sensor["value_template"] == f"{{{{ value_json.{metric} }}}}"


# --- InfluxDB ------------------------------------------------------------------------------


@pytest.fixture
def two_days(influx: InfluxV1) -> list[Reading]:
    """Two days of readings, one every 10 minutes, from two devices."""
    now = now_us()
    readings = [
        Reading(
            device=device,
            ts_us=now - i * 600_000_000,
            metrics={"temperature": 20.0 + (i % 12) / 2 + offset, "humidity": 50.0 - (i % 7)},
            seq=288 - i,
            sensor="dht22",
        )
        for device, offset in (("greenhouse", 5.0), ("coldroom", -16.0))
        for i in range(288)
    ]
    influx.write([to_line(r, "environment") for r in readings])
    return readings


def influx_shell(influx: InfluxV1, statement: str) -> list[dict[str, Any]]:
    host, port = influx.target.url.removeprefix("http://").split(":")
    result = subprocess.run(
        [
            "influx",
            "-host",
            host,
            "-port",
            port,
            "-database",
            influx.target.database,
            "-format",
            "json",
            "-execute",
            statement,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and "ERR" not in result.stdout, f"{statement}: {result.stdout}{result.stderr}"
    answer = json.loads(result.stdout)
    # The shell asks for chunked answers: one statement's series may come in several results.
    return [series for part in answer["results"] for series in part.get("series", [])]


def test_the_documented_influxql_queries_answer(influx: InfluxV1, two_days: list[Reading]) -> None:
    text = (EXAMPLES / "influxql.sql").read_text()
    statements = [s.strip() for s in re.sub(r"--.*", "", text).split(";") if s.strip()]
    assert len(statements) == 4
    latest, hourly, daily, counts = (influx_shell(influx, s) for s in statements)
    newest = max((r for r in two_days if r.device == "greenhouse"), key=lambda r: r.ts_us)
    assert latest[0]["values"][0][1:] == [newest.metrics["temperature"], newest.metrics["humidity"]]
    assert {s["tags"]["device"] for s in hourly} == {"greenhouse", "coldroom"}
    assert all(23 <= len(s["values"]) <= 25 for s in hourly)
    for series in daily:
        assert all(low <= high for _, low, high in series["values"])
    assert {s["tags"]["device"]: s["values"][0][1] for s in counts} == {"greenhouse": 6, "coldroom": 6}
    # The one-liners in the docs and the README, as typed (database name and server aside).
    readme = (ROOT / "README.md").read_text()
    for command in documented("influx -database sensors -execute ") + re.findall(
        r"^    (influx -database sensors -execute .+)$", readme, flags=re.MULTILINE
    ):
        statement = shlex.split(command)[-1].replace("sim-coldroom", "coldroom")
        assert influx_shell(influx, statement), command
    # Grafana's panel query, with what Grafana fills in for its macros.
    (panel,) = documented('SELECT mean("temperature")')
    filled = panel.replace("$timeFilter", "time > now() - 6h").replace("$__interval", "10m")
    assert {s["tags"]["device"] for s in influx_shell(influx, filled)} == {"greenhouse", "coldroom"}
    grafana = yaml.safe_load((EXAMPLES / "grafana-datasource.yaml").read_text())
    assert all(source["jsonData"]["dbName"] == "sensors" for source in grafana["datasources"])


def test_the_grafana_dashboard_reads_raw_points_then_the_rollups(influx: InfluxV1) -> None:
    """docs/examples/grafana-dashboard.json: its queries, with what Grafana fills in for
    $timeFilter, $__interval and $device, against ten days of a device stored with rollups
    (the bridge's store, in-process)."""
    store: InfluxStore[int] = InfluxStore(
        influx, StoreMetrics(CollectorRegistry()), rollups=Rollups(influx, "environment", exclusive=True)
    )
    now = now_us()
    for day in range(10):
        for i in range(day * 144, day * 144 + 144):  # one every 10 minutes
            reading = Reading("greenhouse", now - i * 600_000_000, {"temperature": 18.0 + i % 9, "humidity": 60.0})
            store.add(to_line(reading, "environment").encode(), reading, i)
        assert not store.flush(threading.Event()).refused
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    (variable,) = dashboard["templating"]["list"]
    assert {row[1] for s in influx_shell(influx, variable["query"]) for row in s["values"]} == {"greenhouse"}
    two_days_ago_ns = (now - 2 * 86_400_000_000) * 1000  # the shell answers in ns
    for panel in dashboard["panels"]:
        metric = panel["title"].split()[0]
        raw, rolled = (
            influx_shell(
                influx,
                target["query"]
                .replace("$timeFilter", "time > now() - 10d")
                .replace("$__interval", "6h")
                .replace("$device", "greenhouse"),
            )
            for target in panel["targets"]
        )
        assert [s["tags"]["device"] for s in raw] == ["greenhouse"] == [s["tags"]["device"] for s in rolled]
        recent = [row for row in raw[0]["values"] if row[1] is not None]
        older = [row for row in rolled[0]["values"] if row[1] is not None]
        six_hours_ns = 6 * 3_600_000_000_000  # a bucket of $__interval starts before its first point
        assert recent and all(row[0] >= two_days_ago_ns - six_hours_ns for row in recent), metric
        assert older and all(row[0] <= two_days_ago_ns for row in older), metric
        assert all(low <= mean <= high for _, mean, low, high in older), metric  # mean, min, max


# --- the dashboard behind nginx ---------------------------------------------------------------


@pytest.fixture
def nginx(tmp_path: Path, start_bridge: Callable[..., BridgeProcess]) -> Iterator[tuple[int, int, BridgeProcess]]:
    """docs/examples/nginx-sensorpipe.conf in front of a bridge set up as docs/side-doors.md
    says for it: (http port, https port, bridge)."""
    bridge = start_bridge(SENSORPIPE_WEB_PROXIES="1")
    http_port, https_port = free_port(), free_port()
    self_signed_certificate(tmp_path / "cert.pem", tmp_path / "key.pem")
    site = (EXAMPLES / "nginx-sensorpipe.conf").read_text()
    site = site.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
    site = site.replace("/etc/letsencrypt/live/sensors.example.org/fullchain.pem", str(tmp_path / "cert.pem"))
    site = site.replace("/etc/letsencrypt/live/sensors.example.org/privkey.pem", str(tmp_path / "key.pem"))
    site = site.replace("http://127.0.0.1:5000", f"http://127.0.0.1:{bridge.port}")
    with running_nginx(tmp_path, site, lambda: _answers(https_port)):
        yield http_port, https_port, bridge


def _answers(port: int) -> bool:
    try:
        requests.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=2)
    except requests.ConnectionError:
        return False
    return True


def test_nginx_example_serves_the_dashboard_over_tls_with_live_websockets(
    nginx: tuple[int, int, BridgeProcess], mqtt_client: Mqtt, prefix: str
) -> None:
    http_port, https_port, _ = nginx
    plain = requests.get(f"http://127.0.0.1:{http_port}/", allow_redirects=False, timeout=10)
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")
    page = requests.get(f"https://127.0.0.1:{https_port}/", verify=False, timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()

    received: list[Any] = []
    client = socketio.Client(ssl_verify=False)
    client.on("readings", received.extend)
    # websocket-client sends `Origin: https://127.0.0.1:<port>`, as a browser on that page does.
    client.connect(f"https://127.0.0.1:{https_port}", transports=["websocket"], wait_timeout=10)
    try:
        assert client.transport() == "websocket"
        mqtt_client.publish(f"{prefix}/behind-proxy/reading", {"temperature": 19.5})
        wait_until(lambda: any(r["device"] == "behind-proxy" for r in received), 15, "a reading through nginx")
    finally:
        client.disconnect()
    # The handshake itself: the page's origin gets Engine.IO's open packet, another gets a 400.
    url = f"wss://127.0.0.1:{https_port}/socket.io/?EIO=4&transport=websocket"
    tls = {"cert_reqs": ssl.CERT_NONE}
    own = websocket.create_connection(url, origin=f"https://127.0.0.1:{https_port}", sslopt=tls, timeout=10)
    assert str(own.recv()).startswith("0{")
    own.close()
    with pytest.raises(websocket.WebSocketBadStatusException, match="400"):
        websocket.create_connection(url, origin="https://evil.example", sslopt=tls, timeout=10)
