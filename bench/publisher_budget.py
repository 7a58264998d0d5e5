"""The publisher on a Pi's budget: CPU and memory at one reading every 2 s, and outbox replay.

    .venv/bin/python bench/publisher_budget.py [--minutes 10] [--backlog 100000]

Starts a private Mosquitto (loopback, temporary folder), then:
1. steady: a real `python -m publisher` (simulated sensor, one reading every 2 s) runs for
   `--minutes`; prints its CPU time as a share of one core and its peak resident memory
   (targets here: under 1 % of a core, under 60 MiB);
2. replay: an outbox is filled with `--backlog` readings through the publisher's own
   Outbox (as an outage would leave it), then a publisher starts with the broker up and a
   subscriber counts what arrives; prints the replay rate (target: 1,000 readings/s or
   more), checks the order, and that new readings kept flowing behind the backlog.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.reading import Reading, now_us  # noqa: E402
from devstack.procstat import proc_cpu_s, proc_memory_mib  # noqa: E402
from devstack.servers import mosquitto  # noqa: E402
from publisher.outbox import Outbox  # noqa: E402

PREFIX = "bench"


def start_publisher(broker_port: int, device: str, outbox: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SENSORPIPE_")},
        "SENSORPIPE_MQTT_URL": f"mqtt://127.0.0.1:{broker_port}",
        "SENSORPIPE_TOPIC_PREFIX": PREFIX,
        "SENSORPIPE_DEVICE": device,
        "SENSORPIPE_INTERVAL": "2",
        "SENSORPIPE_OUTBOX": str(outbox),
    }
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "publisher"], env=env, cwd=ROOT, stdout=out, stderr=out)


def steady(broker_port: int, folder: Path, minutes: float) -> None:
    publisher = start_publisher(broker_port, "steady", folder / "steady.sqlite", folder / "steady.log")
    try:
        time.sleep(10)  # start-up (imports, first connection) is not the steady state
        cpu_before, wall_before = proc_cpu_s(publisher.pid), time.monotonic()
        time.sleep(minutes * 60)
        cpu = proc_cpu_s(publisher.pid) - cpu_before
        wall = time.monotonic() - wall_before
        hwm = proc_memory_mib(publisher.pid)
    finally:
        publisher.terminate()
        publisher.wait(30)
    print(
        f"steady, one reading every 2 s for {wall / 60:.1f} min: CPU {cpu:.2f} s = {cpu / wall * 100:.3f} % of one "
        f"core ({cpu / (wall / 2) * 1000:.2f} ms per reading); peak memory (VmHWM) {hwm:.1f} MiB"
    )


class Counter:
    """Counts each seq's first arrival and checks they come in order."""

    def __init__(self, broker_port: int, backlog: int) -> None:
        self.backlog = backlog
        self.first_at: float | None = None
        self.backlog_done_at: float | None = None
        self.highest = -1
        self.out_of_order = 0
        self.duplicates = 0
        self.done = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker_port)
        self.client.subscribe(f"{PREFIX}/replay/reading", qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        seq = json.loads(message.payload)["seq"]
        if self.first_at is None:
            self.first_at = time.monotonic()
        if seq <= self.highest:
            self.duplicates += 1
            return
        if seq != self.highest + 1:
            self.out_of_order += 1
        self.highest = seq
        if seq == self.backlog - 1:
            self.backlog_done_at = time.monotonic()
        if seq >= self.backlog:  # a reading taken after the restart came out behind the backlog
            self.done.set()


def replay(broker_port: int, folder: Path, backlog: int) -> None:
    path = folder / "replay.sqlite"
    outbox = Outbox(path, "replay", backlog)
    start_us = now_us() - backlog * 2_000_000
    filled_at = time.monotonic()
    for _ in range(backlog):
        outbox.add(
            lambda seq: Reading(
                device="replay",
                ts_us=start_us + seq * 2_000_000,
                metrics={"temperature": 21.0, "humidity": 45.0},
                seq=seq,
            )
        )
    fill_s = time.monotonic() - filled_at
    outbox.close()
    print(f"outbox filled with {backlog:,} readings in {fill_s:.1f} s ({fill_s / backlog * 1e6:.0f} µs per add)")
    counter = Counter(broker_port, backlog)
    publisher = start_publisher(broker_port, "replay", path, folder / "replay.log")
    try:
        if not counter.done.wait(600):
            raise RuntimeError(f"replay incomplete after 600 s: highest seq {counter.highest}")
        cpu = proc_cpu_s(publisher.pid)
    finally:
        publisher.terminate()
        publisher.wait(30)
        counter.client.loop_stop()
    assert counter.first_at is not None and counter.backlog_done_at is not None
    elapsed = counter.backlog_done_at - counter.first_at
    print(
        f"replay of {backlog:,} readings: {elapsed:.1f} s, {backlog / elapsed:,.0f} readings/s; gaps or reorders: "
        f"{counter.out_of_order}, sent twice: {counter.duplicates}; a new reading (seq {counter.highest}) "
        f"followed the backlog; publisher CPU {cpu:.1f} s incl. start-up"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the steady run")
    parser.add_argument("--backlog", type=int, default=100_000, help="readings in the outbox before the replay")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        broker = mosquitto(folder / "mosquitto")
        broker.start()
        try:
            replay(broker.port, folder, args.backlog)
            if args.minutes > 0:
                steady(broker.port, folder, args.minutes)
        finally:
            broker.stop()
    print(f"reproduce: .venv/bin/python bench/publisher_budget.py --minutes {args.minutes:g} --backlog {args.backlog}")


if __name__ == "__main__":
    main()
