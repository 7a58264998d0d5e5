"""Latency and cost of the bridge at a steady rate: publish -> stored, publish -> browser.

    .venv/bin/python bench/latency.py [--rate 500] [--seconds 60] [--devices 50]

Starts a private Mosquitto and InfluxDB 1.6.7 and a real `python -m bridge`. A paho client
publishes readings at `--rate` (QoS 1), each stamped with the time it is published.
- publish -> stored: the bridge writes to InfluxDB through a small recording proxy; a
  reading counts as stored when InfluxDB answered 204 to the write that held it.
- publish -> Socket.IO: a python-socketio client connected to the bridge notes when each
  reading arrives.
All clocks are this machine's. Also prints the bridge's and InfluxDB's CPU time per reading
over the measured window, the write requests InfluxDB got per second, and the bridge's peak
resident memory (VmHWM). At lab scale: `--rate 25 --devices 50` (50 sensors, one reading
every 2 s each).
"""

from __future__ import annotations

import argparse
import http.client
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import socketio
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.reading import now_us  # noqa: E402
from devstack.loadgen import publish_steadily, spread_ms, start_bridge  # noqa: E402
from devstack.procstat import proc_cpu_s, proc_memory_mib  # noqa: E402
from devstack.servers import private_stack  # noqa: E402

PREFIX = "bench"


class RecordingProxy(ThreadingHTTPServer):
    """Forwards every request to InfluxDB; for each 204 write, notes when each line's
    timestamp (µs, the reading's publish time) was acknowledged."""

    def __init__(self, influx_port: int) -> None:
        self.influx_port = influx_port
        self.stored_at: dict[int, int] = {}
        self.writes = 0  # write requests InfluxDB answered 204
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), ProxyHandler)


class ProxyHandler(BaseHTTPRequestHandler):
    server: RecordingProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: one line per request would flood the terminal."""

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.influx_port, timeout=30)
        upstream.request(self.command, self.path, body=body or None, headers=dict(self.headers))
        response = upstream.getresponse()
        data = response.read()
        done_us = now_us()
        if self.command == "POST" and self.path.startswith("/write") and response.status == 204:
            stamps = [int(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines() if line]
            with self.server.lock:
                self.server.writes += 1
                for stamp in stamps:
                    self.server.stored_at.setdefault(stamp, done_us)
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        upstream.close()

    def do_GET(self) -> None:  # the name http.server calls
        self._forward()

    def do_POST(self) -> None:  # the name http.server calls
        self._forward()


def bare_subscriber_cpu(broker_port: int, rate: float, total: int, devices: int) -> float:
    """CPU seconds a paho subscriber that only acknowledges spends on the same stream."""
    baseline = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "bare_subscriber.py"),
            str(broker_port),
            "bench-bare",
            f"{PREFIX}/+/reading",
        ]
    )
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-latency-bare")
    publisher.connect("127.0.0.1", broker_port)
    publisher.loop_start()
    try:
        time.sleep(1)
        before = proc_cpu_s(baseline.pid)
        publish_steadily(publisher, PREFIX, rate, total, devices)
        time.sleep(1)
        return proc_cpu_s(baseline.pid) - before
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        baseline.terminate()
        baseline.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--no-browser", action="store_true", help="no Socket.IO client (to see its cost)")
    parser.add_argument("--bridge-root", type=Path, default=ROOT, help="another checkout's bridge, to compare")
    parser.add_argument(
        "--broker-inflight",
        type=int,
        default=None,
        help="Mosquitto's max_inflight_messages (its default is 20; the shipped config says 1000)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a bridge setting (SENSORPIPE_MQTT_VERSION=5)"
    )
    args = parser.parse_args()
    extra = "" if args.broker_inflight is None else f"max_inflight_messages {args.broker_inflight}"
    with tempfile.TemporaryDirectory() as folder, private_stack(Path(folder), broker_config=extra) as stack:
        broker, database = stack.broker, stack.influx
        total = int(args.rate * args.seconds)
        bare_cpu = bare_subscriber_cpu(broker.port, args.rate, total, args.devices)
        proxy = RecordingProxy(database.port)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
        settings = dict(item.split("=", 1) for item in args.set)
        bridge, web_port = start_bridge(
            broker.port, proxy_url, PREFIX, Path(folder) / "bridge.log", settings, root=args.bridge_root.resolve()
        )
        browser = socketio.Client()
        seen_at: dict[int, int] = {}

        def on_readings(readings: list[dict[str, Any]]) -> None:
            arrived = now_us()
            for reading in readings:
                seen_at.setdefault(round(float(reading["ts"]) * 1000), arrived)

        browser.on("readings", on_readings)

        try:
            for _ in range(0 if args.no_browser else 100):
                try:
                    browser.connect(f"http://127.0.0.1:{web_port}", transports=["websocket"])
                    break
                except socketio.exceptions.ConnectionError:
                    time.sleep(0.2)
            publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-latency")
            publisher.connect("127.0.0.1", broker.port)
            publisher.loop_start()
            time.sleep(1)  # let the bridge's subscription settle
            assert database.process is not None
            cpu_before = proc_cpu_s(bridge.pid)
            influx_before = proc_cpu_s(database.process.pid)
            writes_before = proxy.writes
            sent, elapsed = publish_steadily(publisher, PREFIX, args.rate, total, args.devices)
            deadline = time.monotonic() + 30
            expected_seen = 0 if args.no_browser else total
            while (len(proxy.stored_at) < total or len(seen_at) < expected_seen) and time.monotonic() < deadline:
                time.sleep(0.1)
            cpu = proc_cpu_s(bridge.pid) - cpu_before
            influx_cpu = proc_cpu_s(database.process.pid) - influx_before
            writes = proxy.writes - writes_before
            hwm = proc_memory_mib(bridge.pid)
            publisher.disconnect()
            publisher.loop_stop()
            browser.disconnect()
        finally:
            bridge.terminate()
            bridge.wait(30)
            proxy.shutdown()

    stored_ms = [(proxy.stored_at[ts] - ts) / 1000 for ts in sent if ts in proxy.stored_at]
    browser_ms = [(seen_at[ts] - ts) / 1000 for ts in sent if ts in seen_at]
    print(f"published {total} readings from {args.devices} devices at {total / elapsed:.0f}/s over {elapsed:.0f} s")
    for name, values in (("publish -> stored in InfluxDB", stored_ms), ("publish -> Socket.IO client", browser_ms)):
        if not values:
            continue
        print(f"{name}: {len(values)}/{total} seen, {spread_ms(values)}")
    print(f"bridge CPU: {cpu:.2f} s over the run, {cpu / total * 1e6:.0f} µs per reading")
    print(
        f"InfluxDB CPU: {influx_cpu / total * 1e6:.0f} µs per reading; bridge + InfluxDB "
        f"{(cpu + influx_cpu) / total * 1e6:.0f} µs per reading"
    )
    print(f"InfluxDB write requests: {writes} in {elapsed:.0f} s, {writes / elapsed:.2f} per second")
    print(
        f"baseline, a paho subscriber that only acknowledges the same stream: {bare_cpu / total * 1e6:.0f} µs "
        f"per reading; bridge/baseline {cpu / bare_cpu:.1f}x"
    )
    print(f"bridge peak memory (VmHWM): {hwm:.0f} MiB")
    other = f" --bridge-root {args.bridge_root}" if args.bridge_root != ROOT else ""
    other += f" --broker-inflight {args.broker_inflight}" if args.broker_inflight is not None else ""
    other += "".join(f" --set {item}" for item in args.set)
    print(
        f"reproduce: .venv/bin/python bench/latency.py --rate {args.rate:g} --seconds {args.seconds:g} "
        f"--devices {args.devices}{other}"
    )


if __name__ == "__main__":
    main()
