"""Ingest ceiling: how fast the bridge drains a backlog into InfluxDB, beside a bare subscriber.

    .venv/bin/python bench/ingest.py [--readings 200000] [--devices 100]

Starts a private Mosquitto and InfluxDB 1.6.7 (loopback, temporary folders). Two persistent
sessions subscribe and go away: one for a bare paho subscriber that only acknowledges, one
for the bridge. Then the backlog is published (QoS 1, 100 devices) and queued for both.
The bare subscriber drains its copy first, then the bridge (a real `python -m bridge`
process) drains its copy into InfluxDB; the time runs until InfluxDB holds every reading.
Prints both rates, their ratio, and the command to reproduce. `--broker-inflight 20` runs the
broker with Mosquitto's default window (the bridge asks for its own with MQTT 5's Receive
Maximum); `--bridge-root` runs another checkout's bridge, to compare.
"""

from __future__ import annotations

import argparse
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

from devstack.loadgen import join_session, publish_backlog, start_bridge, stored_count, write_requests  # noqa: E402
from devstack.procstat import proc_cpu_s, proc_memory_mib  # noqa: E402
from devstack.servers import private_stack  # noqa: E402

PREFIX = "bench"


def bare_drain(port: int, client_id: str, expected: int) -> float:
    """Seconds for a paho subscriber that only acknowledges to receive `expected` messages."""
    done = threading.Event()
    count = 0
    first: list[float] = []

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal count
        if not first:
            first.append(time.monotonic())
        client.ack(message.mid, message.qos)
        count += 1
        if count >= expected:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True)
    client.on_message = on_message
    started = time.monotonic()
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not done.wait(600):
        raise RuntimeError(f"bare subscriber got {count} of {expected}")
    elapsed = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def bridge_drain(
    port: int, influx_url: str, client_id: str, expected: int, log: Path, root: Path, settings: dict[str, str]
) -> tuple[float, float, float, int]:
    """(seconds the bridge takes for `expected` readings at its drain rate, its CPU seconds,
    its peak resident memory in MiB, the write requests InfluxDB got)."""
    started = time.monotonic()
    writes_before = write_requests(influx_url)
    settings = {"SENSORPIPE_MQTT_CLIENT_ID": client_id, **settings}
    bridge, _ = start_bridge(port, influx_url, PREFIX, log, settings, root=root)
    try:
        # The clock starts at the first stored reading: Python's start-up is not ingest.
        first: tuple[float, int] | None = None
        while (count := stored_count(influx_url)) < expected:
            if bridge.poll() is not None:
                raise RuntimeError(f"bridge exited, see {log}")
            if time.monotonic() - started > 900:
                raise RuntimeError(f"bridge stored {count} of {expected} in 900 s")
            if first is None and count:
                first = (time.monotonic(), count)
            time.sleep(0.1)
        if first is None:  # all stored between two looks: nothing to time
            raise RuntimeError(f"the bridge stored all {expected} readings at once: too few to time, give more")
        elapsed = (time.monotonic() - first[0]) * expected / (expected - first[1])
        cpu = proc_cpu_s(bridge.pid)
        hwm = proc_memory_mib(bridge.pid)
        writes = write_requests(influx_url) - writes_before
    finally:
        bridge.terminate()
        bridge.wait(30)
    return elapsed, cpu, hwm, writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument(
        "--broker-inflight",
        type=int,
        default=None,
        help="Mosquitto's max_inflight_messages (its default is 20; the shipped config says 1000)",
    )
    parser.add_argument("--bridge-root", type=Path, default=ROOT, help="another checkout's bridge, to compare")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a bridge setting")
    args = parser.parse_args()
    extra = "" if args.broker_inflight is None else f"max_inflight_messages {args.broker_inflight}"
    with tempfile.TemporaryDirectory() as folder, private_stack(Path(folder), broker_config=extra) as stack:
        broker, influx_url = stack.broker, stack.influx_url
        join_session(broker.port, "bench-bare", f"{PREFIX}/+/reading")
        join_session(broker.port, "bench-bridge", f"{PREFIX}/+/reading")
        publish_s = publish_backlog(broker.port, PREFIX, args.readings, args.devices)
        print(f"backlog: {args.readings} readings from {args.devices} devices published in {publish_s:.1f} s")
        assert broker.process is not None
        rss = proc_memory_mib(broker.process.pid, "VmRSS")
        print(
            f"Mosquitto holding it for 2 sessions ({2 * args.readings} queued messages): {rss:.0f} MiB resident, "
            f"{rss * 1024 / (2 * args.readings):.2f} KiB per queued message"
        )
        bare_s = bare_drain(broker.port, "bench-bare", args.readings)
        bare_rate = args.readings / bare_s
        print(f"bare paho subscriber (ack only): {bare_s:.1f} s, {bare_rate:,.0f} readings/s")
        bridge_s, cpu_s, hwm, writes = bridge_drain(
            broker.port,
            influx_url,
            "bench-bridge",
            args.readings,
            Path(folder) / "bridge.log",
            args.bridge_root,
            dict(item.split("=", 1) for item in args.set),
        )
        bridge_rate = args.readings / bridge_s
        print(
            f"bridge into InfluxDB: {bridge_s:.1f} s, {bridge_rate:,.0f} readings/s "
            f"(bridge CPU {cpu_s:.1f} s, {cpu_s / args.readings * 1e6:.0f} µs per reading, incl. start-up)"
        )
        print(f"InfluxDB write requests: {writes:,}, {args.readings / max(1, writes):.1f} readings per request")
        print(f"ratio bridge/bare: {bridge_rate / bare_rate:.2f}")
        print(f"bridge peak memory (VmHWM): {hwm:.0f} MiB")
    options = f" --broker-inflight {args.broker_inflight}" if args.broker_inflight is not None else ""
    options += f" --bridge-root {args.bridge_root}" if args.bridge_root != ROOT else ""
    options += "".join(f" --set {item}" for item in args.set)
    print(f"reproduce: .venv/bin/python bench/ingest.py --readings {args.readings} --devices {args.devices}{options}")


if __name__ == "__main__":
    main()
