"""End to end with real processes: simulated publishers -> Mosquitto -> bridge -> InfluxDB and API."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
import socketio
from paho.mqtt.enums import CallbackAPIVersion

from bridge.influx import InfluxV1
from common.reading import format_ts, now_us
from devstack.loadgen import points_written
from tests.conftest import BridgeProcess, Mqtt, Program, points
from tests.test_rejections import bridge_metrics
from tests.waiting import wait_until


def test_simulated_publishers_reach_influxdb_and_the_api(
    start_bridge: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    influx: InfluxV1,
) -> None:
    bridge = start_bridge()
    publishers = [
        run_publisher(device, SENSORPIPE_COUNT="5", SENSORPIPE_INTERVAL="0.2", SENSORPIPE_LOCATION="Lab 1")
        for device in ("sim-a", "sim-b")
    ]
    for publisher in publishers:
        assert publisher.process.wait(30) == 0, publisher.log()

    stored = wait_until(lambda: len(found := points(influx)) == 10 and found, what="10 points in InfluxDB")
    for device in ("sim-a", "sim-b"):
        mine = [p for p in stored if p["device"] == device]
        assert [p["seq"] for p in mine] == [0, 1, 2, 3, 4]
        assert all(p["location"] == "Lab 1" and p["sensor"] == "simulated" for p in mine)
        assert all(isinstance(p["temperature"], float | int) and 0 < p["humidity"] < 100 for p in mine)

    # The publishers said goodbye: retained status `offline`, seen by the bridge.
    devices = wait_until(
        lambda: (listed := bridge.get("/api/devices")) and all(d["online"] is False for d in listed) and listed,
        what="both devices offline",
    )
    assert [d["device"] for d in devices] == ["sim-a", "sim-b"]
    newest = max((p for p in stored if p["device"] == "sim-a"), key=lambda p: p["time"])
    # What it measured, and the dew point and absolute humidity the publisher derives.
    metrics = ("temperature", "humidity", "dew_point", "absolute_humidity")
    assert devices[0]["latest"] == {metric: newest[metric] for metric in metrics}
    assert devices[0]["seq"] == 4
    assert abs(devices[0]["last_seen"] - newest["time"]) < 1

    assert "writing with the v1 API" in bridge.log()  # chosen from 1.6.7's /ping
    history = bridge.get("/api/history?device=sim-a&metric=temperature&since=15m&points=1000")
    assert history["interval_ms"] == 0  # 5 readings fit in 1000 points: as stored
    # Times in ms with the microseconds as a fraction, as live readings carry them: one
    # reading seen both ways is one point on the chart.
    micro = influx.query("SELECT temperature FROM environment WHERE device = 'sim-a'", epoch="u")[0]["values"]
    assert history["points"] == [[us / 1000, value] for us, value in micro]
    assert any(us % 1000 for us, _ in micro)  # real sub-millisecond times: the check above is not vacuous


def test_history_is_downsampled_on_the_server_into_bucket_means(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, influx: InfluxV1, prefix: str
) -> None:
    bridge = start_bridge()
    minute_us = 60_000_000
    start_us = (now_us() // minute_us - 20) * minute_us  # 20 readings, one a minute, on minute marks
    sent = {start_us + i * minute_us: float(i) for i in range(20)}
    for ts_us, value in sent.items():
        mqtt_client.publish(f"{prefix}/desk/reading", {"ts": format_ts(ts_us), "temperature": value})
    wait_until(lambda: len(points(influx)) == 20, what="20 points")

    raw = bridge.get("/api/history?device=desk&metric=temperature&since=1h&points=1000")
    assert raw["points"] == [[ts_us / 1000, value] for ts_us, value in sent.items()]

    # 1 h in 6 points: 10-minute buckets aligned to the clock, each the mean, min and max of
    # its readings at the bucket's middle; buckets without readings are nulls (a gap).
    coarse = bridge.get("/api/history?device=desk&metric=temperature&since=1h&points=6")
    assert coarse["interval_ms"] == 600_000
    buckets: dict[int, list[float]] = {}
    for ts_us, value in sent.items():
        buckets.setdefault(ts_us // 600_000_000 * 600_000, []).append(value)
    filled = [row for row in coarse["points"] if row[1] is not None]
    expected = [[start + 300_000, sum(vs) / len(vs), min(vs), max(vs)] for start, vs in sorted(buckets.items())]
    # All 20 readings are in the hour: no bucket lost. Twenty minutes span two 10-minute buckets
    # when they start on a ten-minute mark (one run in ten, by the clock), else three.
    assert filled == expected and len(expected) in (2, 3)
    assert len(coarse["points"]) <= 6
    # The empty buckets may sit on either side of the filled ones (the bucket holding "now" is
    # empty when the last reading fell in the previous one); each is a whole null row.
    assert all(row[1:] == [None, None, None] for row in coarse["points"] if row not in filled)
    stamps = [row[0] for row in coarse["points"]]
    assert all(later - earlier == 600_000 for earlier, later in itertools.pairwise(stamps))

    # A custom range, in epoch ms: the first ten readings only.
    first = list(sent)[:10]
    custom = bridge.get(
        f"/api/history?device=desk&metric=temperature&from={first[0] / 1000}&to={first[-1] / 1000}&points=100"
    )
    assert [row[0] for row in custom["points"]] == [ts_us / 1000 for ts_us in first]
    bad = requests.get(bridge.url + "/api/history?device=desk&metric=temperature&from=5&to=1", timeout=10)
    assert bad.status_code == 400 and "before" in bad.json()["error"]
    for query, named in [
        ("points=\u00b2", "points"),  # "²" passes str.isdigit()
        ("points=\u0661\u0662", "points"),  # Arabic-Indic digits, which int() takes
        ("from=0&to=9300000000000", "2262"),  # past the last time InfluxDB can store
        ("from=nan&to=1", "from"),
        ("from=1e3&to=2e3", "from"),
        ("since=1y", "since"),
    ]:
        answer = requests.get(f"{bridge.url}/api/history?device=desk&metric=temperature&{query}", timeout=10)
        assert answer.status_code == 400 and named in answer.json()["error"], (query, answer.text)
    reserved = requests.get(bridge.url + "/api/history?device=desk&metric=time", timeout=10)
    assert reserved.status_code == 400 and "metric" in reserved.json()["error"]

    nothing = bridge.get("/api/history?device=desk&metric=humidity&since=1h&points=6")
    assert nothing["points"] == []

    # The overview's sparklines, several devices in one request: the same bucket means.
    spark = bridge.get("/api/sparklines?device=desk&device=nobody&since=1h&points=6")
    assert spark["interval_ms"] == 600_000 and list(spark["devices"]) == ["desk"]
    assert spark["devices"]["desk"] == {"temperature": [row[:2] for row in filled]}
    many = "&".join(f"device=d{i}" for i in range(101))
    assert requests.get(f"{bridge.url}/api/sparklines?{many}", timeout=10).status_code == 400
    assert requests.get(f"{bridge.url}/api/sparklines?device=a,b", timeout=10).status_code == 400


def test_hand_published_reading_is_stored_and_shown(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, influx: InfluxV1, prefix: str
) -> None:
    bridge = start_bridge()
    before = now_us()
    mqtt_client.publish(f"{prefix}/desk/reading", b'{"temperature": 22.5}')
    stored = wait_until(lambda: points(influx), what="the point")
    assert len(stored) == 1
    assert stored[0]["device"] == "desk"
    assert stored[0]["temperature"] == 22.5
    assert before / 1000 - 1 <= stored[0]["time"] <= now_us() / 1000 + 1  # stamped on receipt
    devices = wait_until(lambda: bridge.get("/api/devices"), what="the device in the API")
    assert devices[0]["device"] == "desk" and devices[0]["latest"] == {"temperature": 22.5}


def test_socketio_subscriptions_hold_from_the_handshake_and_change_by_event(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str
) -> None:
    bridge = start_bridge()
    seen: dict[str, list[str]] = {"a only": [], "everything": []}
    clients: list[socketio.Client] = []
    try:
        for name, auth in (("a only", {"devices": ["a"]}), ("everything", None)):
            client = socketio.Client()
            client.on("readings", lambda readings, name=name: seen[name].extend(r["device"] for r in readings))
            client.connect(bridge.url, transports=["websocket"], auth=auth, wait_timeout=10)
            clients.append(client)
        mqtt_client.publish(f"{prefix}/b/reading", {"temperature": 1.0})  # first: b reaches nobody subscribed to a
        mqtt_client.publish(f"{prefix}/a/reading", {"temperature": 2.0})
        wait_until(lambda: seen["a only"] and len(seen["everything"]) == 2, 15, "the readings")
        assert seen == {"a only": ["a"], "everything": ["b", "a"]}

        everything = clients[1]
        assert everything.call("subscribe", {"devices": ["b"]}, timeout=10) == {"ok": True, "devices": ["b"]}
        assert everything.call("subscribe", {"devices": "b"}, timeout=10)["ok"] is False  # not a list: unchanged
        mqtt_client.publish(f"{prefix}/a/reading", {"temperature": 3.0})
        mqtt_client.publish(f"{prefix}/b/reading", {"temperature": 4.0})
        wait_until(lambda: len(seen["a only"]) == 2 and len(seen["everything"]) == 3, 15, "the second readings")
        assert seen == {"a only": ["a", "a"], "everything": ["b", "a", "b"]}

        refused = socketio.Client()
        reasons: list[Any] = []
        refused.on("connect_error", reasons.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            refused.connect(bridge.url, transports=["websocket"], auth={"devices": ["not a device id"]}, wait_timeout=5)
        assert "device ids" in str(reasons)
    finally:
        for client in clients:
            client.disconnect()


def test_a_reading_sent_again_is_stored_once_and_written_at_most_once_per_arrival(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, influx: InfluxV1, prefix: str
) -> None:
    """The same reading twice, then a correction for the same time: one point, the later
    value, and InfluxDB asked to write at most once per message (its own count of points
    written, which a bridge writing each reading twice would double: a query cannot tell,
    InfluxDB keeps one point per series and time)."""
    bridge = start_bridge()
    ts = format_ts(now_us())
    for value in (20.0, 20.0, 21.0):
        mqtt_client.publish(f"{prefix}/desk/reading", {"ts": ts, "seq": 1, "temperature": value})
    mqtt_client.publish(f"{prefix}/desk/reading", {"ts": ts[:-4] + "999Z", "temperature": 19.0})
    wait_until(lambda: len(points(influx)) == 2 and points(influx)[0]["temperature"] == 21.0, what="two points")
    counted = wait_until(lambda: (m := bridge_metrics(bridge))["sensorpipe_readings_stored_total"] == 2 and m, what="2")
    assert counted["sensorpipe_readings_rewritten_total"] == 2
    assert 2 <= points_written(influx.target.url, influx.target.database) <= 4


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_what_the_bridge_stored_the_broker_does_not_send_again(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str, broker: Any, version: str
) -> None:
    """The bridge's acknowledgements reach the broker (it writes them itself, several PUBACKs
    in one packet): once it has stored a burst and stopped, its session holds nothing, so a
    reading published afterwards is the first and only message a client taking the session
    over receives."""
    bridge = start_bridge(SENSORPIPE_MQTT_VERSION=version)
    base = now_us() - 10_000_000
    for seq in range(300):
        mqtt_client.publish(f"{prefix}/desk/reading", {"ts": format_ts(base + seq), "seq": seq, "temperature": 20.0})

    def all_done() -> bool:
        metrics = bridge_metrics(bridge)
        return metrics["sensorpipe_readings_stored_total"] == 300 and metrics["sensorpipe_ingest_unacknowledged"] == 0

    wait_until(all_done, what="300 readings stored and acknowledged")
    assert bridge.stop() == 0
    received: list[int] = []
    session = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bridge-{prefix}", clean_session=False, manual_ack=True
    )
    session.on_message = lambda client, userdata, message: received.append(json.loads(message.payload)["seq"])
    session.connect("127.0.0.1", broker.port)
    session.loop_start()
    try:
        mqtt_client.publish(f"{prefix}/desk/reading", {"seq": 1000, "temperature": 20.0})
        wait_until(lambda: 1000 in received, what="the reading published after the bridge stopped")
        assert received == [1000]
    finally:
        session.disconnect()
        session.loop_stop()


def test_two_readings_a_fraction_of_a_millisecond_apart_are_two_points(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, influx: InfluxV1, prefix: str
) -> None:
    start_bridge()
    for ts in ("2026-11-25T11:16:11.000100Z", "2026-11-25T11:16:11.000200Z"):
        mqtt_client.publish(f"{prefix}/desk/reading", {"ts": ts, "temperature": 1.5})
    found = wait_until(
        lambda: len(p := influx.query("SELECT temperature FROM environment")) == 1 and len(p[0]["values"]) == 2,
        what="two points",
    )
    assert found


def test_bridge_started_before_influxdb_database_exists_creates_it(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, influx: InfluxV1, prefix: str
) -> None:
    influx.query(f'DROP DATABASE "{influx.target.database}"', write=True)
    start_bridge()
    mqtt_client.publish(f"{prefix}/desk/reading", {"temperature": 3.0})
    wait_until(lambda: points(influx), what="the point in the re-created database")
