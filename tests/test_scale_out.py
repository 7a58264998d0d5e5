"""Two bridge replicas sharing the work: a shared MQTT subscription splits the readings,
Redis carries Socket.IO between them and holds what the API shows. Real Mosquitto 2.0,
InfluxDB 1.6.7 and Redis 7 (Debian's), real bridge processes."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import socketio
import yaml

from bridge.influx import InfluxV1
from devstack.servers import Server, free_port, redis, shipped_mosquitto
from tests.composekit import (
    bridge_env,
    compose,
    dashboard_password,
    dockerfile_cmd,
    in_this_venv,
    init_project,
    run_command,
    run_init,
    service_env,
)
from tests.conftest import ROOT, BridgeProcess, Mqtt, assert_stopped_cleanly, replicas, running_nginx
from tests.faults import DEVICES, PER_DEVICE, SteadyPublisher, assert_exactly_all_stored, stored_count
from tests.waiting import wait_until


def two_replicas_mid_run(
    start: Callable[[str], BridgeProcess], run: Callable[[], SteadyPublisher], influx: InfluxV1
) -> tuple[BridgeProcess, SteadyPublisher]:
    """Replicas a and b, then the steady run started by `run`, 5,000 readings in: (b, the run)."""
    start("a")
    b = start("b")
    publisher = run()  # after both subscribed: nothing is published before there is a session for it
    wait_until(lambda: stored_count(influx) >= 5000, 60, "5,000 readings stored")
    return b, publisher


def stored_by(bridge: BridgeProcess) -> float:
    return stored_by_port(bridge.port, {})


class LiveCounter:
    """A Socket.IO client on one replica counting each (device, seq) it receives."""

    def __init__(self, bridge: BridgeProcess) -> None:
        self.seen: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()
        self.client = socketio.Client()
        self.client.on("readings", self._on_readings)
        self.client.connect(bridge.url, transports=["websocket"], wait_timeout=10)

    def _on_readings(self, readings: list[dict[str, Any]]) -> None:
        with self._lock:
            self.seen.update((r["device"], r["seq"]) for r in readings)


def test_two_replicas_store_everything_once_and_every_browser_sees_everything_once(
    start_bridge: Callable[..., BridgeProcess],
    redis_server: Server,
    steady: Callable[[Server], SteadyPublisher],
    broker: Server,
    influx: InfluxV1,
    mqtt_client: Mqtt,
    prefix: str,
) -> None:
    start = replicas(start_bridge, redis_server, prefix)
    a, b = start("a"), start("b")
    on_a = LiveCounter(a)
    publisher = steady(broker)
    assert publisher.wait_done(60)
    assert_exactly_all_stored(influx, 90)
    assert stored_by(a) > 0 and stored_by(b) > 0  # both did part of the work
    assert stored_by(a) + stored_by(b) == len(DEVICES) * PER_DEVICE
    # The browser on A got every reading, B's included, each exactly once.
    total = len(DEVICES) * PER_DEVICE
    wait_until(lambda: len(on_a.seen) == total, 30, "every reading on replica A's client")
    assert set(on_a.seen.values()) == {1}
    on_a.client.disconnect()

    # What the API answers is the same from both.
    mqtt_client.publish(f"{prefix}/room-00/reading", b"garbage")
    mqtt_client.publish(f"{prefix}/room-00/status", "online", retain=True)
    wait_until(lambda: requests.get(a.url + "/api/rejections", timeout=10).json()["counts"], 20, "the rejection")

    def answers(bridge: BridgeProcess) -> tuple[Any, ...]:
        def get(path: str) -> Any:
            return requests.get(bridge.url + path, timeout=10).json()

        pipeline = {k: v for k, v in get("/api/pipeline").items() if k in {"stored", "rejected"}}
        return get("/api/devices"), get("/api/rejections"), pipeline

    wait_until(lambda: answers(a) == answers(b), 20, "the same answers from both replicas")
    devices, rejections, pipeline = answers(a)
    assert len(devices) == len(DEVICES) and devices[0]["online"] is True
    assert all(d["seq"] == PER_DEVICE - 1 for d in devices[1:])
    assert rejections["counts"] == {"not_json": 1}
    assert pipeline["stored"] == len(DEVICES) * PER_DEVICE


def test_a_replica_killed_with_sigkill_and_restarted_loses_nothing(
    start_bridge: Callable[..., BridgeProcess],
    redis_server: Server,
    steady: Callable[[Server], SteadyPublisher],
    broker: Server,
    influx: InfluxV1,
    prefix: str,
) -> None:
    start = replicas(start_bridge, redis_server, prefix)
    b, publisher = two_replicas_mid_run(start, lambda: steady(broker), influx)
    b.stop(signal.SIGKILL)  # its share waits in its persistent session (Mosquitto 2.0)
    assert publisher.wait_done(60)
    start("b")
    assert_exactly_all_stored(influx, 90)


def test_a_replica_stopped_for_good_hands_its_share_to_the_others(
    start_bridge: Callable[..., BridgeProcess],
    redis_server: Server,
    steady: Callable[[Server], SteadyPublisher],
    broker: Server,
    influx: InfluxV1,
    prefix: str,
) -> None:
    b, publisher = two_replicas_mid_run(replicas(start_bridge, redis_server, prefix), lambda: steady(broker), influx)
    assert b.stop(signal.SIGTERM) == 0  # a planned stop: it leaves the group first
    assert "new readings go to the other bridges" in b.log()
    assert publisher.wait_done(60)
    assert_exactly_all_stored(influx, 90)  # without B ever coming back


def test_storage_goes_on_while_redis_is_away(
    start_bridge: Callable[..., BridgeProcess],
    tmp_path: Path,
    mqtt_client: Mqtt,
    influx: InfluxV1,
    prefix: str,
) -> None:
    private = redis(tmp_path / "redis")
    private.start()
    bridge = start_bridge(SENSORPIPE_REDIS_URL=f"redis://127.0.0.1:{private.port}/0")
    private.stop()  # the shared view goes stale; readings must still be stored and acknowledged
    for seq in range(20):
        mqtt_client.publish(f"{prefix}/desk/reading", {"temperature": 20.0, "seq": seq})
    wait_until(lambda: stored_count(influx) == 20, 30, "20 readings stored without Redis")
    health = requests.get(bridge.url + "/healthz", timeout=10)
    assert health.status_code == 503 and any(r.startswith("Redis") for r in health.json()["reasons"])


def test_the_compose_scale_profile_runs_for_real(tmp_path: Path, redis_server: Server, influx: InfluxV1) -> None:
    """The scale profile's services run outside Docker with the environment compose gives them
    (scripts/compose-init --scale): the shipped broker with its accounts, both bridges, nginx
    with nginx/scale.conf, a simulated device. Host names become 127.0.0.1 and free ports; the
    bridges write to InfluxDB 1.6.7 through the v1 API (2.7 cannot run here)."""
    project = init_project(tmp_path / "project", "--scale")
    result = compose(project, "--profile", "scale", "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    secrets, _ = run_init(project, services)  # takes what compose-init put in .env
    broker = shipped_mosquitto(project / "mosquitto")
    broker.start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        ports = {}
        for name in ("bridge", "bridge-b"):
            ports[name] = free_port()
            env = bridge_env(services[name], broker.port, influx.target.url, ports[name], secrets) | {
                "SENSORPIPE_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/1",
                # InfluxDB 1.6.7 itself here (the stack's 2.x settings are tested in test_compose.py).
                "SENSORPIPE_INFLUX_API": "v1",
                "SENSORPIPE_INFLUX_DB": influx.target.database,
                "SENSORPIPE_INFLUX_TOKEN": "",
            }
            with (tmp_path / f"{name}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(in_this_venv(dockerfile_cmd()), cwd=ROOT, env=env, stdout=log, stderr=log)
                )
        wait_until(lambda: all(_healthy(port) for port in ports.values()), 60, "both bridges healthy")
        web = free_port()
        site = (ROOT / "nginx" / "scale.conf").read_text().replace("listen 8080;", f"listen 127.0.0.1:{web};")
        site = site.replace("server bridge:5000", f"server 127.0.0.1:{ports['bridge']}")
        site = site.replace("server bridge-b:5000", f"server 127.0.0.1:{ports['bridge-b']}")
        (tmp_path / "nginx").mkdir()
        with running_nginx(tmp_path / "nginx", site, lambda: _healthy(web)):
            password = dashboard_password(secrets)
            browser = socketio.Client()
            seen: Counter[int] = Counter()
            browser.on("readings", lambda batch: seen.update(r["seq"] for r in batch))
            browser.connect(
                f"http://127.0.0.1:{web}",
                transports=["websocket"],
                wait_timeout=10,
                headers={"Authorization": f"Bearer {password}"},
            )
            sim = services["sim-greenhouse"]
            sim_env = service_env(sim, broker.port, secrets) | {
                "SENSORPIPE_OUTBOX": str(tmp_path / "outbox.sqlite"),
                "SENSORPIPE_INTERVAL": "0.05",
                "SENSORPIPE_COUNT": "40",
            }
            publisher = run_command(sim, sim_env)
            assert publisher.returncode == 0, publisher.stderr
            wait_until(lambda: stored_count(influx) == 40, 30, "40 readings stored")
            wait_until(lambda: len(seen) == 40, 20, "40 readings through nginx, whichever bridge stored them")
            assert set(seen.values()) == {1}
            bearer = {"Authorization": f"Bearer {password}"}
            per_bridge = [stored_by_port(port, bearer) for port in ports.values()]
            assert sum(per_bridge) == 40 and min(per_bridge) > 0  # both took a share
            devices = requests.get(f"http://127.0.0.1:{web}/api/devices", headers=bearer, timeout=10).json()
            assert [d["device"] for d in devices] == ["sim-greenhouse"]
            browser.disconnect()
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
        broker.stop()
    for name, process in zip(("bridge", "bridge-b"), processes, strict=True):
        assert_stopped_cleanly(process, tmp_path / f"{name}.log", name)


def _healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def stored_by_port(port: int, headers: dict[str, str]) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=10).text
    line = next(line for line in text.splitlines() if line.startswith("sensorpipe_readings_stored_total "))
    return float(line.split()[1])
