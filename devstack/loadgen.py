"""Load for the benchmarks: readings at a steady rate, and percentiles of what came back."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt

from common.reading import Reading, encode_reading, now_us


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
