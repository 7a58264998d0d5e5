"""The bridge's memory under what anyone can send: many devices, and floods of rejected messages.

    .venv/bin/python bench/memory.py [--devices 20000] [--rejections 10000] [--topic-kib 60]
                                     [--bridge-root DIR]

Starts a private Mosquitto and InfluxDB 1.6.7 and a real `python -m bridge` (from this
checkout, or from `--bridge-root`, another checkout with its own .venv, to compare), then:
1. `--devices` devices each send a reading, a retained status and a retained health message;
2. `--rejections` messages arrive on topics of `--topic-kib` KiB each (a device id far too
   long: each is rejected as bad_device).
After each step, once the bridge has received everything, prints its resident memory
(VmRSS) and what the step added. Targets: memory bounded by SENSORPIPE_MAX_DEVICES (10,000 by
default) however many devices send, and a flood of rejections adding next to nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import requests
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.reading import Reading, encode_reading, now_us  # noqa: E402
from devstack.loadgen import start_bridge, wait_healthy  # noqa: E402
from devstack.procstat import proc_memory_mib  # noqa: E402
from devstack.servers import private_stack  # noqa: E402

PREFIX = "bench"
HEALTH = {
    "reads_ok": 1520,
    "reads_failed": 3,
    "last_error": "Checksum did not validate. Try again.",
    "outbox_depth": 0,
    "uptime_s": 3050,
    "interval_s": 2.0,
    "sensor": "dht22",
    "version": "0.1.0",
}


def received(web_port: int) -> int:
    """The bridge's count of messages received (from /metrics)."""
    text = requests.get(f"http://127.0.0.1:{web_port}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith("sensorpipe_readings_received_total "):
            return int(float(line.split()[1]))
    return 0


def publish_all(client: mqtt.Client, messages: list[tuple[str, bytes, bool]]) -> None:
    """QoS 1, waiting for every 500th acknowledgement (paho's ids wrap at 65,535)."""
    last = None
    for index, (topic, payload, retain) in enumerate(messages):
        last = client.publish(topic, payload, qos=1, retain=retain)
        if index % 500 == 499:
            last.wait_for_publish(120)
    if last is not None:
        last.wait_for_publish(120)


def wait_received(web_port: int, expected: int) -> None:
    deadline = time.monotonic() + 900
    while (count := received(web_port)) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the bridge received {count} of {expected} messages in 900 s")
        time.sleep(0.5)
    time.sleep(2)  # let the worker finish the last batch and the allocator settle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--rejections", type=int, default=10_000)
    parser.add_argument("--topic-kib", type=int, default=60)
    parser.add_argument("--bridge-root", type=Path, default=ROOT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, private_stack(Path(folder)) as stack:
        bridge, web_port = start_bridge(
            stack.broker.port, stack.influx_url, PREFIX, Path(folder) / "bridge.log", root=args.bridge_root.resolve()
        )
        try:
            wait_healthy(f"http://127.0.0.1:{web_port}", bridge, 60)
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-memory")
            client.max_inflight_messages_set(1000)
            client.max_queued_messages_set(0)
            client.connect("127.0.0.1", stack.broker.port)
            client.loop_start()
            start_rss = proc_memory_mib(bridge.pid, "VmRSS")
            print(f"bridge from {args.bridge_root.resolve()}: {start_rss:.0f} MiB resident when started")

            health = json.dumps(HEALTH).encode()
            messages: list[tuple[str, bytes, bool]] = []
            for index in range(args.devices):
                device = f"device-{index:06d}"
                reading = Reading(device, now_us(), {"temperature": 20.5, "humidity": 45.0}, seq=index)
                messages += [
                    (f"{PREFIX}/{device}/reading", encode_reading(reading), False),
                    (f"{PREFIX}/{device}/status", b"online", True),
                    (f"{PREFIX}/{device}/health", health, True),
                ]
            publish_all(client, messages)
            wait_received(web_port, len(messages))
            devices_rss = proc_memory_mib(bridge.pid, "VmRSS")
            print(
                f"after {args.devices:,} devices (reading, status, health each): {devices_rss:.0f} MiB "
                f"(+{devices_rss - start_rss:.0f} MiB)"
            )

            long_level = "x" * (args.topic_kib * 1024)
            payload = b'{"temperature": 1}'
            flood = [(f"{PREFIX}/{long_level}{i}/reading", payload, False) for i in range(args.rejections)]
            publish_all(client, flood)
            wait_received(web_port, len(messages) + len(flood))
            flood_rss = proc_memory_mib(bridge.pid, "VmRSS")
            print(
                f"after {args.rejections:,} rejected messages with {args.topic_kib} KiB topics: {flood_rss:.0f} MiB "
                f"(+{flood_rss - devices_rss:.0f} MiB)"
            )
            client.disconnect()
            client.loop_stop()
        finally:
            bridge.terminate()
            bridge.wait(30)
    print(
        f"reproduce: .venv/bin/python bench/memory.py --devices {args.devices} --rejections {args.rejections} "
        f"--topic-kib {args.topic_kib}" + (f" --bridge-root {args.bridge_root}" if args.bridge_root != ROOT else "")
    )


if __name__ == "__main__":
    main()
