"""Alerts: what judging readings against 1,000 rules costs, and how fast a crossing is told.

    .venv/bin/python bench/alerts.py [--rules 1000] [--devices 500] [--rate 500] [--seconds 30]
    .venv/bin/python bench/alerts.py --replicas            # part 3 only
    .venv/bin/python bench/alerts.py --refusing --seconds 40   # part 4 only
    .venv/bin/python bench/alerts.py --replicas --without-rules [--bridge-root <checkout>]

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
3. `--replicas`: the last run of 2 with two bridges in a share group and Redis, one leading
   the alerts (bridge/alerts/shared.py): both bridges' CPU per reading, and the crossings'
   publish -> webhook received.
4. `--refusing`: the last run of 2 with the webhook answering 500 for its first 20 s: the
   readings stored a second while it refuses and after (from /api/pipeline), and whether
   every crossing was notified in the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
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
from devstack.loadgen import publish_steadily, spread_ms, start_bridge, wait_healthy  # noqa: E402
from devstack.procstat import proc_cpu_s  # noqa: E402
from devstack.servers import private_stack  # noqa: E402

PREFIX = "bench"
BRIDGE_ROOT = [ROOT]  # --bridge-root: another checkout's bridge, to compare


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
        self.refuse_until = 0.0  # monotonic: answer 500 until then
        self.refused = 0

        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                title = str(body.get("title", ""))
                if time.monotonic() < server.refuse_until:
                    server.refused += 1
                    self.send_response(500)
                else:
                    if title.startswith("FIRING: hot on "):
                        server.arrived.setdefault(title.removeprefix("FIRING: hot on "), now_us())
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@dataclass
class Run:
    cpu_us: float  # the bridges' CPU per reading
    latencies_ms: list[float]  # crossing published -> webhook received
    stored_rates: tuple[float, float] = (0.0, 0.0)  # readings stored a second: webhook refusing, then not


def stored_total(web_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/api/pipeline", timeout=10) as answer:
        return int(json.load(answer)["stored"])


def end_to_end(
    rules_file: Path | None,
    crossings_too: bool,
    rate: float,
    seconds: float,
    devices: int,
    folder: Path,
    replicas: int = 1,
    refuse_s: float = 0.0,
) -> Run:
    """One run: `crossings_too`: also a new device above 8 ten times a second (each one fires
    and is notified); `replicas`: that many bridges in a share group with Redis; `refuse_s`:
    the webhook answers 500 for the first that many seconds."""
    hook = Webhook()
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    run_folder = folder / f"run-{len(list(folder.glob('run-*')))}"
    with private_stack(run_folder, with_redis=replicas > 1) as stack:
        settings = {"SENSORPIPE_ALERT_NOTIFY": f"json://127.0.0.1:{hook.server_address[1]}/hook"}
        if rules_file:
            settings["SENSORPIPE_ALERT_RULES"] = str(rules_file)
        if stack.redis is not None:
            settings["SENSORPIPE_REDIS_URL"] = f"redis://127.0.0.1:{stack.redis.port}/0"
            settings["SENSORPIPE_SHARE_GROUP"] = "bench"
        bridges = []
        try:
            for n in range(replicas):
                own = settings | {"SENSORPIPE_MQTT_CLIENT_ID": f"bench-bridge-{n}"}
                log = run_folder / f"bridge-{n}.log"
                bridges.append(start_bridge(stack.broker.port, stack.influx_url, PREFIX, log, own, root=BRIDGE_ROOT[0]))
            for bridge, web_port in bridges:
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
            cpu_before = sum(proc_cpu_s(bridge.pid) for bridge, _ in bridges)
            hook.refuse_until = time.monotonic() + refuse_s
            marks = [(time.monotonic(), stored_total(bridges[0][1]))]
            if crossings_too:
                crossing.start()
            total = int(rate * seconds)
            if refuse_s:  # the stored count when the webhook takes notifications again
                threading.Timer(refuse_s, lambda: marks.append((time.monotonic(), stored_total(bridges[0][1])))).start()
            publish_steadily(client, PREFIX, rate, total, devices)
            marks.append((time.monotonic(), stored_total(bridges[0][1])))
            stop.set()
            if crossings_too:
                crossing.join()
                deadline = time.monotonic() + 90
                while len(hook.arrived) < len(sent) and time.monotonic() < deadline:
                    time.sleep(0.1)
            time.sleep(1.5)  # the last write interval
            cpu = sum(proc_cpu_s(bridge.pid) for bridge, _ in bridges) - cpu_before
            client.disconnect()
            client.loop_stop()
        finally:
            for bridge, _ in bridges:
                bridge.terminate()
            for bridge, _ in bridges:
                bridge.wait(30)
            hook.shutdown()
    latencies = [(hook.arrived[d] - t) / 1000 for d, t in sent.items() if d in hook.arrived]
    if crossings_too and len(latencies) < len(sent):
        print(f"  {len(sent) - len(latencies)} of {len(sent)} crossings were not notified within 90 s")
    rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(marks)]
    result = Run(cpu / (total + len(sent)) * 1e6, latencies)
    if refuse_s and len(rates) == 2:
        result.stored_rates = (rates[0], rates[1])
        print(f"  the webhook refused {hook.refused} deliveries in its first {refuse_s:g} s")
    return result


def latency_line(what: str, latencies: list[float]) -> str:
    return (
        f"crossing published -> webhook received, {what} ({len(latencies)} crossings, for = 0): "
        f"{spread_ms(latencies, 0)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--replicas", action="store_true", help="only part 3: two bridges sharing the alerts")
    parser.add_argument("--refusing", action="store_true", help="only part 4: the webhook refusing for 20 s")
    parser.add_argument("--without-rules", action="store_true", help="part 3 with no rules and no crossings")
    parser.add_argument("--bridge-root", type=Path, default=ROOT, help="another checkout's bridge, to compare")
    args = parser.parse_args()
    BRIDGE_ROOT[0] = args.bridge_root
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        rules_file = folder / "rules.toml"
        rules_file.write_text(rules_toml(args.rules, args.devices))
        common = (args.rate, args.seconds, args.devices, folder)
        if args.replicas:
            rules = None if args.without_rules else rules_file
            two = end_to_end(rules, not args.without_rules, *common, replicas=2)
            print(f"two bridges sharing the alerts through Redis: {two.cpu_us:.0f} µs of CPU per reading (both)")
            if two.latencies_ms:
                print(latency_line("two bridges", two.latencies_ms))
        elif args.refusing:
            refusing = end_to_end(rules_file, True, *common, refuse_s=20)
            during, after = refusing.stored_rates
            print(
                f"readings stored a second at {args.rate:g}/s while the webhook refused (first 20 s): "
                f"{during:.0f}; after: {after:.0f} (ratio {during / after:.2f}); "
                f"{len(refusing.latencies_ms)} crossings notified in the end"
            )
        else:
            single_parts(args, rules_file, common)
    flags = " --replicas" if args.replicas else " --refusing" if args.refusing else ""
    flags += " --without-rules" if args.without_rules else ""
    flags += f" --bridge-root {args.bridge_root}" if args.bridge_root != ROOT else ""
    print(
        f"reproduce: .venv/bin/python bench/alerts.py --rules {args.rules} --devices {args.devices} "
        f"--rate {args.rate:g} --seconds {args.seconds:g}{flags}"
    )


def single_parts(args: argparse.Namespace, rules_file: Path, common: tuple[float, float, int, Path]) -> None:
    runs = in_process(rules_file, args.devices, common[3])
    print(
        f"alert sink, {args.rules} rules, {args.devices} devices, in-process: median "
        f"{statistics.median(runs):.1f} µs of CPU per reading (runs: {', '.join(f'{r:.1f}' for r in runs)})"
    )
    plain = end_to_end(None, False, *common)
    rules = end_to_end(rules_file, False, *common)
    firing = end_to_end(rules_file, True, *common)
    print(
        f"bridge at {args.rate:g} readings/s, µs of CPU per reading: {plain.cpu_us:.0f} without rules, "
        f"{rules.cpu_us:.0f} with {args.rules + 1} rules (judging: {rules.cpu_us - plain.cpu_us:+.0f}), "
        f"{firing.cpu_us:.0f} with 10 alerts a second fired, journaled, published and notified"
    )
    if firing.latencies_ms:
        print(latency_line("one bridge", firing.latencies_ms))


if __name__ == "__main__":
    main()
