"""20,000 readings from 50 devices through real Mosquitto, bridge and InfluxDB, with a fault
mid-run. Each time InfluxDB ends up with exactly the 20,000: none missing, none doubled."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from bridge.influx import InfluxTarget, InfluxV1
from devstack.servers import Server, influxdb, wait_influx_ready
from tests.conftest import BridgeProcess, Mqtt
from tests.faults import CuttableProxy, SilentServer, SteadyPublisher, assert_exactly_all_stored, stored_count
from tests.test_rejections import bridge_metrics
from tests.waiting import wait_settled, wait_until


def healthz(bridge: BridgeProcess) -> tuple[int, dict[str, Any]]:
    response = requests.get(bridge.url + "/healthz", timeout=10)
    return response.status_code, response.json()


def test_bridge_killed_with_sigkill_and_restarted(
    start_bridge: Callable[..., BridgeProcess],
    steady: Callable[[Server], SteadyPublisher],
    broker: Server,
    influx: InfluxV1,
) -> None:
    bridge = start_bridge()
    publisher = steady(broker)
    wait_until(lambda: stored_count(influx) >= 5000, 60, "5,000 readings stored")
    bridge.stop(signal.SIGKILL)
    start_bridge()
    assert publisher.wait_done(60)
    assert_exactly_all_stored(influx, 60)


@pytest.mark.slow
def test_influxdb_stopped_for_30_s(
    start_bridge: Callable[..., BridgeProcess],
    steady: Callable[[Server], SteadyPublisher],
    broker: Server,
    tmp_path: Path,
) -> None:
    server = influxdb(tmp_path / "influxdb")
    server.start()
    wait_influx_ready(server.port)
    influx = InfluxV1(InfluxTarget(f"http://127.0.0.1:{server.port}", "sensors"))
    try:
        bridge = start_bridge(SENSORPIPE_INFLUX_URL=influx.target.url, SENSORPIPE_INFLUX_DB="sensors")
        publisher = steady(broker)
        wait_until(lambda: stored_count(influx) >= 3000, 60, "3,000 readings stored")
        server.stop()
        down_at = time.monotonic()
        _, body = wait_until(lambda: (h := healthz(bridge))[0] == 503 and h, 30, "/healthz 503")
        assert any("InfluxDB" in reason for reason in body["reasons"])
        assert publisher.wait_done(60)  # the broker takes them meanwhile
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
        server.start()
        wait_influx_ready(server.port)
        assert_exactly_all_stored(influx, 120)
        wait_until(lambda: healthz(bridge)[0] == 200, 30, "/healthz 200 again")
        assert bridge.process.poll() is None  # it kept running throughout
    finally:
        influx.close()
        server.stop()


def test_mosquitto_restarted_with_sigterm(
    start_bridge: Callable[..., BridgeProcess],
    steady: Callable[[Server], SteadyPublisher],
    private_broker: Server,
    influx: InfluxV1,
) -> None:
    bridge = start_bridge(on=private_broker)
    publisher = steady(private_broker)
    wait_until(lambda: stored_count(influx) >= 5000, 60, "5,000 readings stored")
    private_broker.stop(signal.SIGTERM)  # saves its sessions and queues
    private_broker.start()
    assert publisher.wait_done(90)
    assert_exactly_all_stored(influx, 90)
    assert bridge.process.poll() is None


@pytest.mark.slow
def test_bridge_cut_off_from_the_broker_for_60_s(
    start_bridge: Callable[..., BridgeProcess],
    steady: Callable[[Server], SteadyPublisher],
    broker: Server,
    influx: InfluxV1,
) -> None:
    proxy = CuttableProxy(broker.port)
    try:
        bridge = start_bridge(SENSORPIPE_MQTT_URL=f"mqtt://127.0.0.1:{proxy.port}")
        publisher = steady(broker)
        wait_until(lambda: stored_count(influx) >= 3000, 60, "3,000 readings stored")
        proxy.cut()
        cut_at = time.monotonic()
        _, body = wait_until(lambda: (h := healthz(bridge))[0] == 503 and h, 30, "/healthz 503")
        assert any("MQTT" in reason for reason in body["reasons"])
        assert publisher.wait_done(60)
        # What the bridge had taken in before the cut is written within its write interval
        # (and comes again later, unacknowledged): the count settles, then nothing can arrive.
        before = wait_settled(lambda: stored_count(influx), 2, what="the stored count")
        time.sleep(max(0.0, 60 - (time.monotonic() - cut_at)))
        assert stored_count(influx) == before
        proxy.restore()
        assert_exactly_all_stored(influx, 120)
        wait_until(lambda: healthz(bridge)[0] == 200, 60, "/healthz 200 again")
    finally:
        proxy.close()


def test_a_hung_influxdb_turns_healthz_503_with_ingest_stalled(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str
) -> None:
    """The stand-in (tests/faults.py) is no InfluxDB: it takes each request and never answers,
    which a real server cannot be made to do on purpose."""
    silent = SilentServer()
    try:
        bridge = start_bridge(
            wait=False,
            SENSORPIPE_INFLUX_URL=f"http://127.0.0.1:{silent.port}",
            SENSORPIPE_INFLUX_API="v1",
            SENSORPIPE_STALL_AFTER_S="3",
        )
        wait_until(lambda: _answers(bridge), 60, "the bridge's web server")
        mqtt_client.publish(f"{prefix}/desk/reading", b'{"temperature": 21.5}')
        # The write waits 10 s for an answer that never comes, and is then retried: the
        # stall shows after 3 s, while the batch is still in hand.
        _, body = wait_until(
            lambda: (
                (h := healthz(bridge))[0] == 503 and any(r.startswith("ingest stalled") for r in h[1]["reasons"]) and h
            ),
            30,
            "/healthz 503 saying ingest is stalled",
        )
        assert body["unacknowledged"] >= 1
        metrics = bridge_metrics(bridge)
        assert metrics["sensorpipe_ingest_stalled"] == 1
        assert metrics["sensorpipe_ingest_waiting_seconds"] > 3
        assert metrics["sensorpipe_ingest_unacknowledged"] >= 1
        assert bridge.process.poll() is None
    finally:
        silent.close()


def _answers(bridge: BridgeProcess) -> bool:
    try:
        requests.get(bridge.url + "/healthz", timeout=10)
    except requests.ConnectionError:
        return False
    return True
