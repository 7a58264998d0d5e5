"""The dashboard's budget: many browsers live, a week of history, the first page load.

    .venv/bin/python bench/dashboard.py [--clients 200] [--rate 50] [--seconds 30] [--web-threads 300]

Starts a private Mosquitto and InfluxDB 1.6.7 and a real `python -m bridge`, then:
1. fan-out: `--clients` Socket.IO clients (websocket transport, spread over 4 processes so
   the clients' own Python does not become the bottleneck) each receive every reading while
   readings are published at `--rate` a second, each stamped with its publish time; prints
   delivery latency p50/p99 over all clients and readings (target p99 < 250 ms) and how
   many readings any client missed (target 0). Each live client holds one of the bridge's
   web threads, and live clients may hold four fifths of them: `--web-threads`
   (SENSORPIPE_WEB_THREADS) must leave room for `--clients`;
2. history: 7 days of one device at one reading every 2 s (302,400 points) are written to
   InfluxDB; `/api/history?since=7d&points=1000` is timed 7 times (target: median < 300 ms,
   at most 1,000 points);
3. first load: the bytes of the overview page and every file it loads (target < 300 KB).
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import requests
import socketio
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.lineprotocol import to_line  # noqa: E402
from common.reading import Reading, now_us  # noqa: E402
from devstack.loadgen import publish_steadily, spread_ms, start_bridge, wait_healthy  # noqa: E402
from devstack.servers import private_stack  # noqa: E402

PREFIX = "bench"
PROCESSES = 4


def client_group(url: str, count: int, pipe: Connection) -> None:
    """Connect `count` clients; on "stop", send back each client's latencies (ms) and count."""
    received: list[list[float]] = [[] for _ in range(count)]
    clients = []
    for index in range(count):
        client = socketio.Client()

        def on_readings(readings: list[dict[str, Any]], mine: list[float] = received[index]) -> None:
            arrived_ms = now_us() / 1000
            mine.extend(arrived_ms - float(r["ts"]) for r in readings)

        client.on("readings", on_readings)
        client.connect(url, transports=["websocket"], wait_timeout=30)
        clients.append(client)
    pipe.send("connected")
    pipe.recv()  # "stop"
    pipe.send(received)
    for client in clients:
        client.disconnect()


def fan_out(url: str, broker_port: int, clients: int, rate: float, seconds: float) -> None:
    pipes = []
    workers = []
    per = [clients // PROCESSES + (1 if i < clients % PROCESSES else 0) for i in range(PROCESSES)]
    for count in per:
        parent, child = multiprocessing.Pipe()
        worker = multiprocessing.Process(target=client_group, args=(url, count, child), daemon=True)
        worker.start()
        pipes.append(parent)
        workers.append(worker)
    for pipe in pipes:
        if not pipe.poll(120):
            raise RuntimeError("clients did not connect within 120 s")
        pipe.recv()
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-dashboard")
    publisher.connect("127.0.0.1", broker_port)
    publisher.loop_start()
    time.sleep(1)
    total = int(rate * seconds)
    publish_steadily(publisher, PREFIX, rate, total, 50)
    time.sleep(3)  # the last readings on their way
    latencies: list[float] = []
    missed = 0
    for pipe in pipes:
        pipe.send("stop")
        for mine in pipe.recv():
            latencies.extend(mine)
            missed += max(0, total - len(mine))
    for worker in workers:
        worker.join(30)
    publisher.disconnect()
    publisher.loop_stop()
    print(
        f"fan-out: {clients} Socket.IO clients, {total} readings at {rate:g}/s: latency {spread_ms(latencies)}; "
        f"missed {missed} of {clients * total}"
    )


def history(url: str, influx_url: str) -> None:
    end = now_us()
    step = 2_000_000
    lines = [
        to_line(Reading("week", end - i * step, {"temperature": 20 + (i % 500) / 100}, seq=i), "environment")
        for i in range(302_400)
    ]
    for start in range(0, len(lines), 10_000):
        response = requests.post(
            influx_url + "/write",
            params={"db": "sensors", "precision": "u"},
            data="\n".join(lines[start : start + 10_000]).encode(),
            timeout=60,
        )
        response.raise_for_status()
    timings = []
    points = 0
    for _ in range(7):
        started = time.perf_counter()
        query = {"device": "week", "metric": "temperature", "since": "7d", "points": "1000"}
        response = requests.get(url + "/api/history", params=query, timeout=30)
        timings.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        points = len(response.json()["points"])
    print(
        f"history: 7 d of one device, 302,400 readings -> {points} points: median {statistics.median(timings):.0f} ms "
        f"(runs: {', '.join(f'{t:.0f}' for t in timings)})"
    )


def first_load(url: str) -> None:
    page = requests.get(url + "/", timeout=10)
    total = len(page.content)
    parts = [f"page {len(page.content)}"]
    for path in re.findall(r'(?:src|href)="(/(?:static|vendor)/[^"]+)"', page.text):
        body = requests.get(url + path, timeout=10).content
        total += len(body)
        parts.append(f"{path.rsplit('/', 1)[-1]} {len(body)}")
    api = sum(len(requests.get(url + p, timeout=10).content) for p in ("/api/devices", "/api/pipeline"))
    print(
        f"first load: {total / 1024:.0f} KiB in files, uncompressed ({', '.join(parts)} bytes); API answers {api} bytes"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--web-threads", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, private_stack(Path(folder)) as stack:
        broker, influx_url = stack.broker, stack.influx_url
        settings = {"SENSORPIPE_WEB_THREADS": str(args.web_threads)}
        bridge, web_port = start_bridge(broker.port, influx_url, PREFIX, Path(folder) / "bridge.log", settings)
        url = f"http://127.0.0.1:{web_port}"
        try:
            wait_healthy(url, bridge, 30)
            fan_out(url, broker.port, args.clients, args.rate, args.seconds)
            history(url, influx_url)
            first_load(url)
        finally:
            bridge.terminate()
            bridge.wait(30)
    print(
        f"reproduce: .venv/bin/python bench/dashboard.py --clients {args.clients} --rate {args.rate:g} "
        f"--seconds {args.seconds:g} --web-threads {args.web_threads}"
    )


if __name__ == "__main__":
    main()
