"""No reading lost or doubled when the bridge dies or InfluxDB goes away (real processes)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from bridge.influx import InfluxTarget, InfluxV1
from common.reading import Reading, encode_reading, now_us
from devstack.loadgen import points_written
from devstack.servers import Server, influxdb, wait_influx_ready
from tests.conftest import BridgeProcess, Mqtt
from tests.test_rejections import bridge_metrics
from tests.waiting import wait_until

DEVICES = [f"dev-{i}" for i in range(5)]


def publish_readings(client: Mqtt, prefix: str, first_seq: int, count: int) -> None:
    """`count` readings for every device, seq first_seq.., each with its own microsecond ts."""
    base_us = now_us() - 60_000_000
    for seq in range(first_seq, first_seq + count):
        for index, device in enumerate(DEVICES):
            reading = Reading(device, base_us + seq * 1000 + index, {"temperature": 20 + seq / 1000}, seq=seq)
            client.client.publish(f"{prefix}/{device}/reading", encode_reading(reading), qos=1)
    client.publish(f"{prefix}/marker/status", "online")  # waits for everything before it too


def stored_seqs(influx: InfluxV1) -> dict[str, list[int]]:
    series = influx.query('SELECT seq FROM environment GROUP BY "device"')
    return {s["tags"]["device"]: sorted(row[1] for row in s["values"]) for s in series}


def all_stored(influx: InfluxV1, total: int) -> bool:
    seqs = stored_seqs(influx)
    return sum(len(v) for v in seqs.values()) >= total * len(DEVICES)


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_kill_9_of_the_bridge_loses_and_doubles_nothing(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, influx: InfluxV1, prefix: str, version: str
) -> None:
    """Either MQTT version keeps the session (and what it queued) across a kill -9."""
    bridge = start_bridge(SENSORPIPE_MQTT_VERSION=version)
    publish_readings(mqtt_client, prefix, 0, 400)
    wait_until(lambda: sum(map(len, stored_seqs(influx).values())) > 200, what="some readings stored")
    bridge.stop(signal.SIGKILL)
    publish_readings(mqtt_client, prefix, 400, 400)  # queued by the broker for the bridge's session
    second = start_bridge(SENSORPIPE_MQTT_VERSION=version)
    wait_until(lambda: all_stored(influx, 800), 60, "all 4,000 readings")
    assert stored_seqs(influx) == {device: list(range(800)) for device in DEVICES}
    # Only what the killed bridge had received but not acknowledged came again (DUP, counted
    # in `redelivered`; none when it had caught up before the kill), and only that may have
    # been written twice: InfluxDB's own count of points written, which a bridge writing every
    # reading twice would double (a query cannot tell: one point per series and time).
    redelivered = bridge_metrics(second)["sensorpipe_readings_redelivered_total"]
    assert 4000 <= points_written(influx.target.url, influx.target.database) <= 4000 + redelivered


def test_influxdb_down_then_back_loses_nothing_and_health_says_why(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str, tmp_path: Path
) -> None:
    server: Server = influxdb(tmp_path / "influxdb")
    server.start()
    wait_influx_ready(server.port)
    influx = InfluxV1(InfluxTarget(f"http://127.0.0.1:{server.port}", "sensors"))
    try:
        bridge = start_bridge(SENSORPIPE_INFLUX_URL=influx.target.url, SENSORPIPE_INFLUX_DB="sensors")
        publish_readings(mqtt_client, prefix, 0, 100)
        wait_until(lambda: all_stored(influx, 100), what="the first 500 readings")

        server.stop()
        publish_readings(mqtt_client, prefix, 100, 200)

        def unhealthy() -> dict[str, object] | None:
            response = requests.get(bridge.url + "/healthz", timeout=10)
            return response.json() if response.status_code == 503 else None

        health = wait_until(unhealthy, what="/healthz to say 503")
        assert any("InfluxDB" in reason for reason in health["reasons"])
        history = requests.get(bridge.url + "/api/history?device=dev-0&metric=temperature&since=1h", timeout=30)
        assert history.status_code == 503 and history.json()["error"]  # said, not an empty chart

        server.start()
        wait_influx_ready(server.port)
        wait_until(lambda: all_stored(influx, 300), 90, "the readings held back while InfluxDB was down")
        assert stored_seqs(influx) == {device: list(range(300)) for device in DEVICES}
        wait_until(lambda: requests.get(bridge.url + "/healthz", timeout=10).status_code == 200, what="healthy")
    finally:
        influx.close()
        server.stop()
