"""Alerts: what judging readings against 1,000 rules costs, and how fast a crossing is told.

    .venv/bin/python bench/alerts.py [--rules 1000] [--devices 500] [--rate 500] [--seconds 30]

1. In-process: the bridge's alert sink (bridge/alerts/service.py, with its SQLite journal in
   a temporary folder) judges 100,000 readings of `--devices` devices against `--rules` rules
   (a warm rule on each device's temperature, a dry rule on its humidity, per device id;
   2 % of readings cross a threshold, for 30 s of reading time before it fires). Prints the
   CPU per reading (median of 5 runs).
2. End to end: a private Mosquitto and InfluxDB, a real `python -m bridge` and a local
   webhook (Apprise `json://`), readings at `--rate`: without rules, with the rules, and
   with the rules while, 10 times a second, a reading above 8 comes for a new device (each
   fires: journal, MQTT, Socket.IO, webhook): the bridge's CPU per reading for each, and
   publish -> webhook received, p50/p99/max.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.alerts.journal import Journal  # noqa: E402
from bridge.alerts.notify import Notifier  # noqa: E402
from bridge.alerts.service import AlertService  # noqa: E402
from common.reading import Reading, encode_reading, now_us  # noqa: E402
from common.topics import Topics  # noqa: E402
from devstack.loadgen import percentile, publish_steadily, start_bridge, wait_healthy  # noqa: E402
from devstack.procstat import proc_cpu_s  # noqa: E402
from devstack.servers import private_stack  # noqa: E402

PREFIX = "bench"


def rules_toml(rules: int, devices: int) -> str:
    """`rules` rules: warm (temperature above 30) and dry (humidity below 20) per device, in
    turn; the steady load (21.5 °C, 40 %) breaks none of them. And `hot`: above 8 for x*."""
    tables = []
    for i in range(rules):
        device = f"dev-{(i // 2) % devices:03d}"
        if i % 2 == 0:
            body = 'metric = "temperature"\nabove = 30.0\nclear = 29.0\nfor = "30s"'
        else:
            body = 'metric = "humidity"\nbelow = 20.0\nclear = 22.0'
        tables.append(f'[[rule]]\nid = "r{i}"\ndevices = ["{device}"]\n{body}\n')
    tables.append('[[rule]]\nid = "hot"\ndevices = ["x*"]\nmetric = "temperature"\nabove = 8.0\n')
    return "\n".join(tables)


def in_process(rules_file: Path, devices: int, folder: Path) -> list[float]:
    """µs of CPU per reading for the alert sink, over 5 runs of 100,000 readings."""
    journal = Journal(folder / "alerts.sqlite")
    service = AlertService(journal, Notifier(journal, [], lambda device: ""), Topics(PREFIX), rules_file, devices)
    results = []
    base = now_us() - 10**9
    for run in range(5):
        chunks = []
        for start in range(0, 100_000, 50):  # as the pipeline hands them over: a chunk at a time
            chunk = []
            for i in range(start, start + 50):
                n = run * 100_000 + i
                warm = n % 50 == 0  # 2 %: a crossing, judged, journaled when the state changes
                metrics = {"temperature": 31.0 if warm else 21.5, "humidity": 40.0}
                chunk.append(Reading(f"dev-{n % devices:03d}", base + n * 1000, metrics))
            chunks.append(chunk)
        started = time.process_time()
        for chunk in chunks:
            service.accepted(chunk)
        results.append((time.process_time() - started) / 100_000 * 1e6)
    journal.close()
    return results


class Webhook(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.arrived: dict[str, int] = {}  # device -> µs when its firing notification came

        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                title = str(body.get("title", ""))
                if title.startswith("FIRING: hot on "):
                    server.arrived.setdefault(title.removeprefix("FIRING: hot on "), now_us())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def end_to_end(
    rules_file: Path | None, crossings_too: bool, rate: float, seconds: float, devices: int, folder: Path
) -> tuple[float, list[float]]:
    """(bridge µs of CPU per reading, crossing -> webhook ms) for one run; `crossings_too`:
    also a new device above 8 ten times a second (each one fires and is notified)."""
    hook = Webhook()
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    with private_stack(folder / f"run-{len(list(folder.glob('run-*')))}") as stack:
        settings = {"SENSORPIPE_ALERT_NOTIFY": f"json://127.0.0.1:{hook.server_address[1]}/hook"}
        if rules_file:
            settings["SENSORPIPE_ALERT_RULES"] = str(rules_file)
        bridge, web_port = start_bridge(stack.broker.port, stack.influx_url, PREFIX, folder / "bridge.log", settings)
        try:
            wait_healthy(f"http://127.0.0.1:{web_port}", bridge)
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-alerts")
            client.max_inflight_messages_set(1000)
            client.connect("127.0.0.1", stack.broker.port)
            client.loop_start()
            sent: dict[str, int] = {}
            stop = threading.Event()

            def crossings() -> None:
                k = 0
                while not stop.wait(0.1):
                    device = f"x{k}"
                    sent[device] = now_us()
                    reading = Reading(device, sent[device], {"temperature": 9.5})
                    client.publish(f"{PREFIX}/{device}/reading", encode_reading(reading), qos=1)
                    k += 1

            crossing = threading.Thread(target=crossings, daemon=True)
            cpu_before = proc_cpu_s(bridge.pid)
            if crossings_too:
                crossing.start()
            total = int(rate * seconds)
            publish_steadily(client, PREFIX, rate, total, devices)
            stop.set()
            if crossings_too:
                crossing.join()
                deadline = time.monotonic() + 30
                while len(hook.arrived) < len(sent) and time.monotonic() < deadline:
                    time.sleep(0.1)
            time.sleep(1.5)  # the last write interval
            cpu = proc_cpu_s(bridge.pid) - cpu_before
            client.disconnect()
            client.loop_stop()
        finally:
            bridge.terminate()
            bridge.wait(30)
            hook.shutdown()
    latencies = [(hook.arrived[d] - t) / 1000 for d, t in sent.items() if d in hook.arrived]
    if crossings_too and len(latencies) < len(sent):
        print(f"  {len(sent) - len(latencies)} of {len(sent)} crossings were not notified within 30 s")
    return cpu / (total + len(sent)) * 1e6, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        rules_file = folder / "rules.toml"
        rules_file.write_text(rules_toml(args.rules, args.devices))
        runs = in_process(rules_file, args.devices, folder)
        print(
            f"alert sink, {args.rules} rules, {args.devices} devices, in-process: median "
            f"{statistics.median(runs):.1f} µs of CPU per reading (runs: {', '.join(f'{r:.1f}' for r in runs)})"
        )
        plain_cpu, _ = end_to_end(None, False, args.rate, args.seconds, args.devices, folder)
        rules_cpu, _ = end_to_end(rules_file, False, args.rate, args.seconds, args.devices, folder)
        firing_cpu, latencies = end_to_end(rules_file, True, args.rate, args.seconds, args.devices, folder)
        print(
            f"bridge at {args.rate:g} readings/s, µs of CPU per reading: {plain_cpu:.0f} without rules, "
            f"{rules_cpu:.0f} with {args.rules + 1} rules (judging: {rules_cpu - plain_cpu:+.0f}), "
            f"{firing_cpu:.0f} with 10 alerts a second fired, journaled, published and notified"
        )
        if latencies:
            print(
                f"crossing published -> webhook received ({len(latencies)} crossings, for = 0): "
                f"p50 {statistics.median(latencies):.0f} ms, p99 {percentile(latencies, 99):.0f} ms, "
                f"max {max(latencies):.0f} ms"
            )
    print(
        f"reproduce: .venv/bin/python bench/alerts.py --rules {args.rules} --devices {args.devices} "
        f"--rate {args.rate:g} --seconds {args.seconds:g}"
    )


if __name__ == "__main__":
    main()
