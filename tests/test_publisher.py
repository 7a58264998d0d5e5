"""The publisher with real processes: nothing lost when the broker or the publisher goes away.

Real Mosquitto, InfluxDB, bridge and publisher processes; the simulated sensor. Each test
counts every reading taken (seq 0..n-1 per device, from the publisher's own outbox) in
InfluxDB, and checks the order the broker delivered them in with a subscriber of its own.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge.influx import InfluxV1
from common.mqtt import MAX_INFLIGHT, disconnect
from devstack.servers import Server
from tests.conftest import ROOT, BridgeProcess, Mqtt, Program, base_env
from tests.waiting import wait_until


class OrderWatcher:
    """A persistent-session subscriber that records each device's seq in arrival order."""

    def __init__(self, server: Server, topic: str) -> None:
        self.seqs: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"watch-{uuid.uuid4().hex[:8]}", clean_session=False
        )
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self.client.connect("127.0.0.1", server.port)
        self.client.loop_start()
        # Only once the SUBACK is in does every reading published from now on reach it.
        assert subscribed.wait(10), f"no SUBACK for {topic}"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        device = message.topic.split("/")[-2]
        with self._lock:
            self.seqs.setdefault(device, []).append(json.loads(message.payload)["seq"])

    def assert_in_order(self, device: str, n: int) -> int:
        """Each seq's first arrival comes after all smaller ones; returns the redelivered count."""
        with self._lock:
            arrived = list(self.seqs.get(device, []))
        first: list[int] = []
        seen: set[int] = set()
        for seq in arrived:
            if seq not in seen:
                seen.add(seq)
                first.append(seq)
        assert first == list(range(n)), f"{device}: arrival order broken or incomplete"
        return len(arrived) - n

    def close(self) -> None:
        disconnect(self.client)


@pytest.fixture
def watcher(prefix: str) -> Iterator[Callable[[Server], OrderWatcher]]:
    made: list[OrderWatcher] = []

    def make(server: Server) -> OrderWatcher:
        made.append(OrderWatcher(server, f"{prefix}/+/reading"))
        return made[-1]

    yield make
    for w in made:
        w.close()


def seqs_stored(influx: InfluxV1, device: str) -> list[int]:
    series = influx.query(f"SELECT seq FROM environment WHERE device = '{device}'")
    return sorted(int(row[1]) for s in series for row in s["values"])


def wait_all_stored(influx: InfluxV1, device: str, n: int, timeout: float = 60) -> None:
    wait_until(lambda: len(seqs_stored(influx, device)) >= n, timeout, f"{n} readings of {device} stored")
    assert seqs_stored(influx, device) == list(range(n)), "missing or doubled seq"


@pytest.mark.slow
def test_broker_down_for_30_s_loses_nothing_and_keeps_the_order(
    start_bridge: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    private_broker: Server,
    influx: InfluxV1,
    watcher: Callable[[Server], OrderWatcher],
) -> None:
    start_bridge(on=private_broker)
    order = watcher(private_broker)
    n = 1000  # 20 per second for 50 s, 30 of them with no broker
    publisher = run_publisher("greenhouse", on=private_broker, SENSORPIPE_INTERVAL="0.05", SENSORPIPE_COUNT=str(n))
    wait_until(lambda: len(seqs_stored(influx, "greenhouse")) >= 100, 30, "100 readings stored")
    private_broker.stop(signal.SIGTERM)
    time.sleep(30)
    assert publisher.process.poll() is None, publisher.log()
    private_broker.start()
    assert publisher.process.wait(90) == 0, publisher.log()
    wait_all_stored(influx, "greenhouse", n)
    redelivered = order.assert_in_order("greenhouse", n)
    # Sent twice at most: what the publisher had in flight when the broker went (paho resends
    # it), and what the broker had in flight to this watcher (Mosquitto's window, 20).
    assert redelivered <= MAX_INFLIGHT + 20
    assert "readings wait in the outbox" in publisher.log()


def test_publisher_killed_with_sigkill_and_restarted_loses_nothing(
    start_bridge: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    broker: Server,
    influx: InfluxV1,
    watcher: Callable[[Server], OrderWatcher],
) -> None:
    start_bridge()
    order = watcher(broker)
    first = run_publisher("coldroom", SENSORPIPE_INTERVAL="0.01")
    wait_until(lambda: len(seqs_stored(influx, "coldroom")) >= 300, 30, "300 readings stored")
    first.stop(signal.SIGKILL)
    second = run_publisher("coldroom", SENSORPIPE_INTERVAL="0.01", SENSORPIPE_COUNT="300")
    assert second.process.wait(60) == 0, second.log()
    # Every reading ever taken: the second run's 300 after the seqs the first one used (its
    # own count, from its outbox, not from what reached the database).
    next_seq = re.search(r"next seq (\d+)", second.log())
    assert next_seq, second.log()
    n = int(next_seq.group(1)) + 300
    assert n >= 600
    wait_all_stored(influx, "coldroom", n)
    order.assert_in_order("coldroom", n)


def test_glitches_are_counted_in_health_and_never_stored(
    start_bridge: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    influx: InfluxV1,
    mqtt_client: Any,
    prefix: str,
    broker: Server,
) -> None:
    bridge = start_bridge()
    mqtt_client.subscribe(f"{prefix}/glitchy/health")
    publisher = run_publisher(
        "glitchy",
        SENSORPIPE_INTERVAL="0.02",
        SENSORPIPE_COUNT="200",
        SENSORPIPE_SIM_FAIL_RATE="0.2",
        SENSORPIPE_SIM_SPIKE_RATE="0.1",
        SENSORPIPE_HEALTH_INTERVAL="0.2",
    )
    assert publisher.process.wait(60) == 0, publisher.log()
    wait_all_stored(influx, "glitchy", 200)
    assert mqtt_client.received  # health came while it ran
    # The publisher's final word is the retained one: what a client subscribing now gets
    # (the last message the running subscription got may still be on its way).
    last = retained_health(broker, prefix, "glitchy")
    assert last["reads_failed"] > 0 and last["last_error"]
    assert last["rejected"].get("jump", 0) > 0
    assert last["reads_ok"] == 200 + sum(last["rejected"].values())
    assert last["outbox_depth"] == 0
    assert {"uptime_s", "outbox_dropped", "clock_ok", "version"} <= set(last)
    temperatures = [p["temperature"] for p in influx_points(influx, "glitchy")]
    assert max(temperatures) - min(temperatures) < 10  # no 20-40 °C spike got through
    devices = {d["device"]: d for d in bridge.get("/api/devices")}
    assert devices["glitchy"]["health"]["reads_failed"] == last["reads_failed"]


def influx_points(influx: InfluxV1, device: str) -> list[dict[str, Any]]:
    series = influx.query(f"SELECT temperature, humidity FROM environment WHERE device = '{device}'")
    return [dict(zip(s["columns"], row, strict=True)) for s in series for row in s["values"]]


def test_home_assistant_discovery_configs_are_retained(
    run_publisher: Callable[..., Program], mqtt_client: Any, prefix: str
) -> None:
    ha = f"{prefix}-ha"
    publisher = run_publisher(
        "kitchen", SENSORPIPE_COUNT="2", SENSORPIPE_HA_DISCOVERY="1", SENSORPIPE_HA_PREFIX=ha, SENSORPIPE_INTERVAL="0.1"
    )
    assert publisher.process.wait(30) == 0, publisher.log()
    mqtt_client.subscribe(f"{ha}/#")  # after the publisher left: only retained messages arrive
    wait_until(lambda: len(mqtt_client.received) >= 2, 10, "two discovery configs")
    configs = {m.topic: json.loads(m.payload) for m in mqtt_client.received}
    temperature = configs[f"{ha}/sensor/kitchen/temperature/config"]
    assert temperature["state_topic"] == f"{prefix}/kitchen/reading"
    assert temperature["availability_topic"] == f"{prefix}/kitchen/status"
    assert (temperature["device_class"], temperature["unit_of_measurement"]) == ("temperature", "°C")
    assert temperature["unique_id"] == "sensorpipe_kitchen_temperature"
    assert configs[f"{ha}/sensor/kitchen/humidity/config"]["unit_of_measurement"] == "%"


def test_a_publisher_whose_clock_is_ahead_learns_its_readings_are_refused(
    start_bridge: Callable[..., BridgeProcess], broker: Server, influx: InfluxV1, prefix: str, tmp_path: Path
) -> None:
    """The clock is really ahead: libfaketime (Debian's faketime) shifts the publisher's
    wall clock by 10 minutes, as an RTC-less Pi with a wrong time would have it."""
    bridge = start_bridge()
    env = base_env(broker, influx, prefix)
    env.update(
        SENSORPIPE_DEVICE="fast",
        SENSORPIPE_OUTBOX=str(tmp_path / "outbox-fast.sqlite"),
        SENSORPIPE_INTERVAL="0.5",
        SENSORPIPE_COUNT="4",
        FAKETIME_DONT_FAKE_MONOTONIC="1",  # only the wall clock is wrong on such a Pi
    )
    result = subprocess.run(
        ["faketime", "-f", "+10m", sys.executable, "-m", "publisher"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # The broker acknowledged all four, yet the run is not reported as delivered.
    assert result.returncode == 1, result.stderr
    assert "the bridge refused reading seq 0: ts_in_future" in result.stderr
    assert "check NTP" in result.stderr
    assert "the bridge refused" in result.stderr.splitlines()[-1]
    wait_until(lambda: bridge.get("/api/rejections")["counts"].get("ts_in_future") == 4, 20, "all four refused")
    assert influx.query("SELECT * FROM environment") == []
    # Its last health message says so too, for the dashboard.
    health = wait_until(lambda: (d := bridge.get("/api/devices?device=fast")) and d[0]["health"], 20, "health")
    assert health["refused"]["reason"] == "ts_in_future" and health["refused_count"] >= 1


def retained_health(server: Server, prefix: str, device: str) -> dict[str, Any]:
    """The health a client subscribing now gets: the publisher's last word, retained."""
    late = Mqtt(server)
    try:
        late.subscribe(f"{prefix}/{device}/health")
        wait_until(lambda: late.received, 10, f"the retained health of {device}")
        assert late.received[0].retain
        return dict(json.loads(late.received[0].payload))
    finally:
        late.close()


def test_a_full_outbox_drops_the_oldest_and_health_counts_them(
    start_bridge: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    private_broker: Server,
    influx: InfluxV1,
    prefix: str,
    tmp_path: Path,
) -> None:
    """The broker away longer than the outbox holds (50 readings here): the oldest go to make
    room, the publisher says so in its log, the newest are stored once the broker is back,
    and its health counts what went (`outbox_dropped`): the one hole in the seqs is exactly
    that many readings long."""
    start_bridge(on=private_broker)
    publisher = run_publisher(
        "tiny",
        on=private_broker,
        SENSORPIPE_INTERVAL="0.02",
        SENSORPIPE_OUTBOX_MAX="50",
        SENSORPIPE_COUNT="300",
        SENSORPIPE_HEALTH_INTERVAL="0.2",
    )
    wait_until(lambda: len(seqs_stored(influx, "tiny")) >= 20, 30, "readings stored")
    private_broker.stop(signal.SIGTERM)
    wait_until(lambda: "the outbox is full (50 readings)" in publisher.log(), 30, "the outbox full")
    # Dropped beyond what was sent and not yet acknowledged when the broker went (at most the
    # outbox's 50): paho sends those again after the reconnect, and their acknowledgement
    # takes them off the count (they are stored after all). Only the rest is a hole.
    last_stored = max(seqs_stored(influx, "tiny"))
    outbox = tmp_path / "outbox-tiny.sqlite"

    def oldest_kept() -> int:
        with closing(sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT coalesce(min(seq), 0) FROM outbox").fetchone()[0])

    wait_until(lambda: oldest_kept() > last_stored + 60, 30, "readings dropped that were never sent")
    private_broker.start()
    assert publisher.process.wait(90) == 0, publisher.log()
    dropped = retained_health(private_broker, prefix, "tiny")["outbox_dropped"]
    stored = seqs_stored(influx, "tiny")
    taken = range(300)  # SENSORPIPE_COUNT readings taken; each stored, or dropped and counted
    missing = sorted(set(taken) - set(stored))
    assert dropped > 0 and stored == sorted(set(stored)) and set(stored) <= set(taken)
    assert missing == list(range(missing[0], missing[0] + dropped))  # one hole, the oldest of the outage


def test_a_stuck_sensor_shows_in_health_and_the_log(
    start_bridge: Callable[..., BridgeProcess], run_publisher: Callable[..., Program], broker: Server, prefix: str
) -> None:
    """A simulated sensor whose values freeze after 5 reads: 165 identical reads in a row
    are counted (`unchanged_reads`) and the log asks whether it is stuck (at 150)."""
    bridge = start_bridge()
    publisher = run_publisher(
        "frozen", SENSORPIPE_INTERVAL="0.01", SENSORPIPE_COUNT="170", SENSORPIPE_SIM_STUCK_AFTER="5"
    )
    assert publisher.process.wait(60) == 0, publisher.log()
    assert "the last 150 reads gave identical values: is the sensor stuck?" in publisher.log()
    health = retained_health(broker, prefix, "frozen")
    assert health["unchanged_reads"] >= 150

    def bridge_copy() -> Any:
        known = {d["device"]: d for d in bridge.get("/api/devices")}
        return (known.get("frozen") or {}).get("health") or {}

    wait_until(lambda: bridge_copy().get("unchanged_reads") == health["unchanged_reads"], 10, "the bridge's copy")


def test_an_unclean_exit_leaves_the_last_will_offline(
    start_bridge: Callable[..., BridgeProcess], run_publisher: Callable[..., Program], broker: Server, prefix: str
) -> None:
    """A publisher killed with SIGKILL says nothing; the broker publishes its last will, the
    retained `offline`, and the bridge marks the device offline."""
    bridge = start_bridge()
    publisher = run_publisher("doomed", SENSORPIPE_INTERVAL="0.2")
    wait_until(lambda: any(d["device"] == "doomed" and d["online"] for d in bridge.get("/api/devices")), 20, "online")
    publisher.stop(signal.SIGKILL)
    watcher = Mqtt(broker)
    try:
        watcher.subscribe(f"{prefix}/doomed/status")
        wait_until(lambda: [m for m in watcher.received if m.payload == b"offline"], 30, "the will, retained")
        assert all(m.retain for m in watcher.received)
    finally:
        watcher.close()
    wait_until(lambda: not {d["device"]: d for d in bridge.get("/api/devices")}["doomed"]["online"], 20, "offline")


def test_a_publisher_whose_clock_is_unset_takes_no_readings_and_says_so(
    start_bridge: Callable[..., BridgeProcess], broker: Server, influx: InfluxV1, prefix: str, tmp_path: Path
) -> None:
    """A Pi that booted without network and without a real-time clock believes it is 1970
    (libfaketime sets the publisher's wall clock so): it takes no readings, the log says why,
    and its health (`clock_ok` false) reaches the bridge, so the dashboard shows it."""
    bridge = start_bridge()
    # libfaketime preloaded into the publisher itself (not the `faketime` wrapper, which
    # would take the SIGTERM), 20,000 days back (1972): an offset, as in the test above; an
    # absolute time makes libfaketime's own sleep fail with EINVAL in paho's thread.
    (library,) = Path("/usr/lib").glob("*/faketime/libfaketime.so.1")
    env = base_env(broker, influx, prefix) | {
        "SENSORPIPE_DEVICE": "unset",
        "SENSORPIPE_OUTBOX": str(tmp_path / "outbox-unset.sqlite"),
        "SENSORPIPE_INTERVAL": "0.1",
        "SENSORPIPE_HEALTH_INTERVAL": "0.2",
        "LD_PRELOAD": str(library),
        "FAKETIME": "-20000d",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    log_path = tmp_path / "publisher-unset.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "publisher"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "not taking readings until it is set" in log_path.read_text(), 30, "the log to say why")
        health = wait_until(
            lambda: ((d := bridge.get("/api/devices?device=unset")) and d[0].get("health")) or None, 30, "its health"
        )
        assert health["clock_ok"] is False and health["reads_ok"] == 0
        assert influx.query("SELECT * FROM environment WHERE device = 'unset'") == []
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert code == 0, log_path.read_text()[-3000:]
    assert "Traceback" not in log_path.read_text()


def test_the_health_check_says_whether_the_publisher_samples(
    run_publisher: Callable[..., Program], broker: Server, influx: InfluxV1, prefix: str, tmp_path: Path
) -> None:
    """`python -m publisher.check` (the simulated devices' health check in compose) with the
    publisher's own settings: 1 before it ever sampled, 0 while it samples, 1 once it stalls
    (SIGSTOP: no slot passes) for longer than 10 s, 0 again when it goes on."""
    env = base_env(broker, influx, prefix) | {
        "SENSORPIPE_DEVICE": "beat",
        "SENSORPIPE_OUTBOX": str(tmp_path / "outbox-beat.sqlite"),
    }

    def check() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "publisher.check"]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False)

    before = check()
    assert before.returncode == 1 and "no heartbeat yet" in before.stderr
    publisher = run_publisher("beat", SENSORPIPE_INTERVAL="0.2")
    alive = wait_until(lambda: (c := check()).returncode == 0 and c, 20, "the check to pass")
    assert "alive: sampled" in alive.stdout and "connected to the broker" in alive.stdout
    publisher.process.send_signal(signal.SIGSTOP)
    try:
        stalled = wait_until(lambda: (c := check()).returncode == 1 and c, 30, "the check to fail")
        assert "the publisher is stalled or gone" in stalled.stderr
    finally:
        publisher.process.send_signal(signal.SIGCONT)
    wait_until(lambda: check().returncode == 0, 20, "the check to pass again")
