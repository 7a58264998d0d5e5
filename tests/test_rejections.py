"""Bad messages through the real bridge: rejected with their reason, never stored, no crash."""

from __future__ import annotations

import json
from collections.abc import Callable

import requests

from bridge.influx import InfluxV1
from common.reading import MAX_PAYLOAD_BYTES, format_ts, now_us
from tests.conftest import BridgeProcess, Mqtt, points
from tests.waiting import wait_until

# (topic below the prefix, payload, reason shown at /api/rejections). A topic of another
# depth never matches the bridge's subscriptions (`<prefix>/+/reading`), so never arrives.
BAD_MESSAGES: list[tuple[str, bytes, str]] = [
    ("desk/reading", b"garbage", "not_json"),
    ("desk/reading", b"\xc3\x28", "not_utf8"),
    ("desk/reading", b"[21.5]", "not_object"),
    ("desk/reading", b'{"temperature": NaN}', "bad_metric_value"),
    ("desk/reading", b'{"temperature": "warm"}', "bad_metric_value"),
    ("desk/reading", b'{"temperature": true}', "bad_metric_value"),
    ("desk/reading", b'{"Temp": 1}', "bad_metric_name"),
    ("desk/reading", b'{"ts": "soon", "temperature": 1}', "bad_ts"),
    (
        "desk/reading",
        json.dumps({"ts": format_ts(now_us() + 3_600_000_000), "temperature": 1}).encode(),
        "ts_in_future",
    ),
    ("desk/reading", b'{"seq": -4, "temperature": 1}', "bad_seq"),
    ("desk/reading", b"{}", "no_metrics"),
    ("desk/reading", json.dumps({f"m{i}": i for i in range(40)}).encode(), "too_many_metrics"),
    ("desk/reading", b'{"t": 1, "pad": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}', "too_large"),
    ("desk/reading", b'{"location": "", "temperature": 1}', "bad_tag"),
    ("bad,device/reading", b'{"temperature": 1}', "bad_device"),
    ("bad device/reading", b'{"temperature": 1}', "bad_device"),
    ("küche/reading", b'{"temperature": 1}', "bad_device"),  # device ids are ASCII
    ("desk/status", b"sleeping", "bad_status"),
    ("desk/health", b"not json", "bad_health"),
]


def test_bad_messages_are_listed_with_their_reason_and_nothing_is_stored(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, influx: InfluxV1, prefix: str
) -> None:
    bridge = start_bridge()
    for topic, payload, _ in BAD_MESSAGES:
        mqtt_client.publish(f"{prefix}/{topic}", payload)
    mqtt_client.publish(f"{prefix}/desk/reading", b'{"temperature": 20.5}')  # a good one after them

    wait_until(lambda: points(influx), what="the good reading stored")
    listed = wait_until(
        lambda: len((body := bridge.get("/api/rejections"))["latest"]) >= len(BAD_MESSAGES) and body,
        what="every rejection listed",
    )
    expected_counts: dict[str, int] = {}
    for _, _, reason in BAD_MESSAGES:
        expected_counts[reason] = expected_counts.get(reason, 0) + 1
    assert listed["counts"] == expected_counts
    # Newest first, each with its topic, reason and the start of its payload.
    assert [(r["topic"], r["reason"]) for r in listed["latest"]] == [
        (f"{prefix}/{t}", reason) for t, _, reason in reversed(BAD_MESSAGES)
    ]
    garbage = next(r for r in listed["latest"] if r["reason"] == "not_json")
    assert garbage["payload_start"] == "garbage" and garbage["detail"]
    assert len(next(r for r in listed["latest"] if r["reason"] == "too_large")["payload_start"]) <= 200

    stored = points(influx)
    assert [(p["device"], p["temperature"]) for p in stored] == [("desk", 20.5)]
    assert bridge.process.poll() is None
    # Counted once the batch's write is done (its rollups are written after the reading).
    metrics = wait_until(
        lambda: (m := bridge_metrics(bridge))["sensorpipe_readings_stored_total"] == 1 and m, what="the count"
    )
    assert metrics['sensorpipe_readings_rejected_total{reason="not_json"}'] == 1
    assert metrics["sensorpipe_ingest_batch_size_count"] == metrics["sensorpipe_influxdb_write_seconds_count"] >= 1
    assert metrics["sensorpipe_ingest_unacknowledged"] == 0
    assert metrics["sensorpipe_mqtt_connected"] == metrics["sensorpipe_influxdb_writes_ok"] == 1


def bridge_metrics(bridge: BridgeProcess) -> dict[str, float]:
    text = requests.get(bridge.url + "/metrics", timeout=10).text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_the_list_keeps_the_latest_100_newest_first_and_counts_them_all(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str
) -> None:
    bridge = start_bridge()
    for i in range(105):
        mqtt_client.publish(f"{prefix}/desk/reading", f"bad-{i}".encode())
    listed = wait_until(
        lambda: (body := bridge.get("/api/rejections"))["counts"].get("not_json") == 105 and body, 20, "105 counted"
    )
    assert [r["payload_start"] for r in listed["latest"]] == [f"bad-{i}" for i in range(104, 4, -1)]


def test_a_reading_influxdb_1x_refuses_is_listed_acknowledged_and_the_rest_stored(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, influx: InfluxV1, prefix: str
) -> None:
    """The real InfluxDB 1.6.7 refuses a float where the measurement holds strings (a field
    type conflict): that reading is listed as `influx_refused` with InfluxDB's reason and
    acknowledged (never retried for ever), the readings beside it in the batch are stored."""
    # Now: InfluxDB keeps a field's type per shard (a week here), so the conflict is with this week's.
    influx.write([f'environment,device=legacy temperature="warm" {now_us() - 1_000_000}'])
    bridge = start_bridge()
    mqtt_client.publish(f"{prefix}/desk/reading", {"temperature": 20.0})
    mqtt_client.publish(f"{prefix}/desk/reading", {"humidity": 41.0})
    listed = wait_until(lambda: (body := bridge.get("/api/rejections"))["latest"] and body, 20, "the refusal listed")
    (refused,) = listed["latest"]
    assert refused["reason"] == "influx_refused" and "conflict" in refused["detail"]
    wait_until(lambda: [p.get("humidity") for p in points(influx, "WHERE device = 'desk'")] == [41.0], what="stored")
    assert requests.get(bridge.url + "/healthz", timeout=10).status_code == 200
