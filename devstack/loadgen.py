"""Load for the benchmarks: the bridge as a process, readings at a steady rate or as a backlog,
and what came back (stored counts, percentiles)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import requests
from paho.mqtt.enums import CallbackAPIVersion

from common.mqtt import disconnect
from common.reading import Reading, encode_reading, now_us
from devstack.servers import free_port

if TYPE_CHECKING:
    from bridge.influx import InfluxV1

DAY_S = 86_400

ROOT = Path(__file__).resolve().parent.parent


def publish_steadily(
    client: mqtt.Client, prefix: str, rate: float, total: int, devices: int
) -> tuple[list[int], float]:
    """Publish `total` readings at `rate` a second; return their unique ts (µs) and the seconds taken."""
    started = time.monotonic()
    sent: list[int] = []
    for i in range(total):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        device = f"dev-{i % devices:03d}"
        ts_us = now_us()
        while sent and ts_us <= sent[-1]:  # unique stamps, so each reading is found again
            ts_us += 1
        sent.append(ts_us)
        payload = encode_reading(Reading(device, ts_us, {"temperature": 21.5, "humidity": 40.0}, seq=i))
        client.publish(f"{prefix}/{device}/reading", payload, qos=1)
    return sent, time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def spread_ms(values: list[float], digits: int = 1) -> str:
    """`p50 .. ms, p99 .. ms, max .. ms`: how the benchmarks quote a latency."""
    return ", ".join(
        f"{name} {value:.{digits}f} ms"
        for name, value in (("p50", statistics.median(values)), ("p99", percentile(values, 99)), ("max", max(values)))
    )


def join_session(port: int, client_id: str, topic: str) -> None:
    """Create a persistent session subscribed to `topic` (QoS 1), then leave it: the broker
    queues for it from now on."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(topic, qos=1)
    time.sleep(0.5)
    disconnect(client)


def publish_backlog(port: int, prefix: str, readings: int, devices: int) -> float:
    """Publish `readings` (QoS 1) as fast as the broker takes them; returns the seconds taken.

    Waits for every 1,000th acknowledgement: paho's message ids wrap at 65,535, and a
    publish whose id is still in flight is refused (ERR_QUEUE_SIZE).
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{prefix}")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.monotonic()
    base = now_us() - readings * 10
    last = None
    for i in range(readings):
        device = f"dev-{i % devices:03d}"
        reading = Reading(device, base + i * 10, {"temperature": 20 + (i % 100) / 10, "humidity": 45.0}, seq=i)
        last = client.publish(f"{prefix}/{device}/reading", encode_reading(reading), qos=1)
        if i % 1000 == 999:
            last.wait_for_publish(60)
    assert last is not None
    last.wait_for_publish(60)
    elapsed = time.monotonic() - started
    disconnect(client)
    return elapsed


def start_bridge(
    broker_port: int,
    influx_url: str,
    prefix: str,
    log: Path,
    settings: dict[str, str] | None = None,
    root: Path = ROOT,
) -> tuple[subprocess.Popen[bytes], int]:
    """A real `python -m bridge` on the benchmark's servers, plus `settings` (SENSORPIPE_*);
    returns the process and the port of its web server. `root`: another checkout's bridge
    (with its own .venv), to compare a change against it."""
    web_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORPIPE_")} | {
        "SENSORPIPE_MQTT_URL": f"mqtt://127.0.0.1:{broker_port}",
        "SENSORPIPE_TOPIC_PREFIX": prefix,
        "SENSORPIPE_INFLUX_URL": influx_url,
        "SENSORPIPE_WEB_PORT": str(web_port),
        "SENSORPIPE_ALERT_DB": str(log.parent / f"alerts-{web_port}.sqlite"),  # not the user's own
        **(settings or {}),
    }
    python = root / ".venv" / "bin" / "python" if root != ROOT else Path(sys.executable)
    with log.open("wb") as out:
        process = subprocess.Popen([str(python), "-m", "bridge"], env=env, cwd=root, stdout=out, stderr=out)
    return process, web_port


def wait_healthy(url: str, bridge: subprocess.Popen[bytes], timeout: float = 180) -> None:
    """Return once the bridge at `url` answers /healthz with 200; raise if it exits or takes
    longer than `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bridge.poll() is not None:
            raise RuntimeError(f"the bridge exited with {bridge.returncode}")
        try:
            if requests.get(url + "/healthz", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the bridge did not become healthy in {timeout:g} s")


def write_requests(influx_url: str) -> int:
    """How many write requests InfluxDB has answered since it started (its /debug/vars)."""
    response = requests.get(influx_url + "/debug/vars", timeout=60)
    # One entry per HTTP listener, named "httpd" or "httpd:<bind address>" by version.
    return sum(
        int(entry["values"].get("writeReq", 0))
        for key, entry in response.json().items()
        if key.split(":")[0] == "httpd" and isinstance(entry, dict)
    )


def points_written(influx_url: str, database: str, retention_policy: str = "autogen") -> int:
    """How many points InfluxDB has written into `database`'s shards of that retention
    policy since it started (its /debug/vars): a point written again over itself counts
    again, so this tells a bridge that writes each reading once from one that writes it
    twice, which a query cannot (InfluxDB keeps one point per series and time)."""
    response = requests.get(influx_url + "/debug/vars", timeout=60)
    return sum(
        int(entry["values"].get("writePointsOk", 0))
        for entry in response.json().values()
        if isinstance(entry, dict)
        and entry.get("name") == "shard"
        and entry.get("tags", {}).get("database") == database
        and entry.get("tags", {}).get("retentionPolicy") == retention_policy
    )


def stored_count(influx_url: str, database: str = "sensors") -> int:
    """How many readings InfluxDB holds (0 while the database does not exist yet)."""
    response = requests.get(
        influx_url + "/query", params={"db": database, "q": "SELECT count(seq) FROM environment"}, timeout=60
    )
    series = response.json()["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def fill_raw(influx: InfluxV1, device: str, days: int, every_s: int) -> int:
    """Raw points of one device, every `every_s` seconds for `days` days up to now, written as
    line protocol straight into InfluxDB (the way an older bridge left them); how many."""
    end = now_us() // 1_000_000
    start = end - days * DAY_S
    lines: list[bytes] = []
    written = 0
    for n, second in enumerate(range(start, end, every_s)):
        temperature = 4.0 + (n % 600) / 100
        lines.append(
            b"environment,device=%s temperature=%r,humidity=%r,seq=%di %d000000"
            % (device.encode(), temperature, 55.0 + n % 17, n, second)
        )
        if len(lines) >= 50_000:
            influx.write(lines)
            written += len(lines)
            lines = []
    influx.write(lines)
    return written + len(lines)
