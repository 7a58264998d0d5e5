"""Two bridge replicas sharing the work: a shared MQTT subscription splits the readings,
Redis carries Socket.IO between them and holds what the API shows. Real Mosquitto 2.0,
InfluxDB 1.6.7 and Redis 7 (Debian's), real bridge processes."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import socketio

from bridge.influx import InfluxV1
from devstack.servers import Server, redis
from tests.conftest import BridgeProcess, Mqtt
from tests.faults import DEVICES, PER_DEVICE, SteadyPublisher, assert_exactly_all_stored, stored_count
from tests.waiting import wait_until


def replicas(
    start_bridge: Callable[..., BridgeProcess], redis_server: Server, prefix: str
) -> Callable[[str], BridgeProcess]:
    def start(name: str, wait: bool = True) -> BridgeProcess:
        return start_bridge(
            wait=wait,
            SENSORPIPE_MQTT_CLIENT_ID=f"bridge-{prefix}-{name}",
            SENSORPIPE_SHARE_GROUP=f"bridges-{prefix}",
            SENSORPIPE_REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0",
        )

    return start


def stored_by(bridge: BridgeProcess) -> float:
    text = requests.get(bridge.url + "/metrics", timeout=10).text
    line = next(line for line in text.splitlines() if line.startswith("sensorpipe_readings_stored_total "))
    return float(line.split()[1])


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
    start("a")
    b = start("b")
    publisher = steady(broker)
    wait_until(lambda: stored_count(influx) >= 5000, 60, "5,000 readings stored")
    b.stop(signal.SIGKILL)  # its share waits in its persistent session (Mosquitto 2.0)
    assert publisher.wait_done(60)
    start("b")
    assert_exactly_all_stored(influx, 90)


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
