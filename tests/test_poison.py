"""No input stalls the pipeline: poison messages through the real bridge, between good
readings of another device. Every good reading is stored and acknowledged, every bad one
is refused with its reason, and the bridge goes on (and says it is healthy)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.influx import InfluxV1
from bridge.router import Ignored, Refused, Router, ToStore
from common.reading import format_ts, now_us
from common.topics import KINDS, Topics
from devstack.servers import Server
from tests.conftest import BridgeProcess, Mqtt
from tests.test_rejections import bridge_metrics
from tests.waiting import wait_until

HEALTH = {"reads_ok": 1, "reads_failed": 0, "last_error": None, "outbox_depth": 0, "uptime_s": 5}

# (device, kind, payload, retained, reason): the cases that stalled ingest for every device,
# blanked the dashboard or were stored again on every reconnect (issue "No input can stall").
POISON: list[tuple[str, str, bytes, bool, str]] = [
    ("big", "reading", b'{"temperature": ' + b"9" * 5000 + b"}", False, "not_json"),
    ("big", "reading", b'{"seq": ' + b"9" * 5000 + b', "temperature": 1}', False, "not_json"),
    ("big", "reading", b'{"ts": ' + b"9" * 5000 + b', "temperature": 1}', False, "not_json"),
    ("lone", "reading", b'{"location": "\\ud800", "temperature": 1}', False, "bad_tag"),
    ("lone", "reading", b'{"sensor": "\\udcfc", "temperature": 1}', False, "bad_tag"),
    ("latin1", "reading", b'{"location": "K\xfcche", "temperature": 1}', False, "not_utf8"),
    ("nel", "reading", '{"location": "cold\x85room", "temperature": 1}'.encode(), False, "bad_tag"),
    ("deep", "health", b"[" * 10_000, False, "bad_health"),
    ("bigh", "health", b'{"reads_ok": ' + b"9" * 5000 + b"}", False, "bad_health"),
    ("nan", "health", b'{"reads_ok": NaN}', True, "bad_health"),
    ("_", "reading", b'{"temperature": 1}', False, "bad_device"),  # `_` levels are not all the bridge's
    ("_alerts", "reading", b'{"temperature": 1}', False, "bad_device"),
]


@pytest.fixture
def bridge(start_bridge: Callable[..., BridgeProcess]) -> Iterator[BridgeProcess]:
    yield start_bridge(SENSORPIPE_WRITE_INTERVAL_MS="50")  # poison and good readings share batches, quickly


def strict_json(response: requests.Response) -> Any:
    """The body as standard JSON: NaN or Infinity in it fails the test."""

    def refuse(token: str) -> None:
        raise AssertionError(f"{response.url} answered {token}, which is not JSON")

    return json.loads(response.text, parse_constant=refuse)


def good_reading(seq: int) -> dict[str, Any]:
    return {"ts": format_ts(now_us()), "seq": seq, "temperature": 20 + seq / 100}


def stored_seqs(influx: InfluxV1, device: str) -> list[int]:
    series = influx.query(f"SELECT seq FROM environment WHERE device = '{device}'")
    return sorted(row[1] for s in series for row in s["values"])


def test_poison_between_good_readings_is_refused_alone_and_the_rest_is_stored(
    bridge: BridgeProcess, mqtt_client: Mqtt, influx: InfluxV1, prefix: str
) -> None:
    for seq, (device, kind, payload, retained, _) in enumerate(POISON):
        mqtt_client.publish(f"{prefix}/steady/reading", good_reading(seq))
        mqtt_client.publish(f"{prefix}/{device}/{kind}", payload, retain=retained)
    mqtt_client.publish(f"{prefix}/steady/reading", good_reading(len(POISON)))

    wait_until(lambda: len(stored_seqs(influx, "steady")) == len(POISON) + 1, 30, "every good reading stored")
    counts = wait_until(
        lambda: sum((c := bridge.get("/api/rejections")["counts"]).values()) == len(POISON) and c,
        30,
        "every poison message refused",
    )
    assert counts == Counter(reason for *_, reason in POISON)
    assert stored_seqs(influx, "steady") == list(range(len(POISON) + 1))
    metrics = wait_until(lambda: (m := bridge_metrics(bridge))["sensorpipe_ingest_unacknowledged"] == 0 and m)
    assert metrics["sensorpipe_readings_stored_total"] == len(POISON) + 1
    assert metrics["sensorpipe_ingest_stalled"] == 0
    health = requests.get(bridge.url + "/healthz", timeout=10)
    assert health.status_code == 200, health.text

    # Every answer is standard JSON; the retained NaN health was refused, not shown.
    devices = {d["device"]: d for d in strict_json(requests.get(bridge.url + "/api/devices", timeout=10))}
    assert "nan" not in devices and devices["steady"]["latest"]
    strict_json(requests.get(bridge.url + "/api/rejections", timeout=10))

    # A valid health, then an empty retained one: shown, then cleared.
    mqtt_client.publish(f"{prefix}/nan/health", json.dumps(HEALTH), retain=True)
    wait_until(lambda: [d["health"] for d in bridge.get("/api/devices?device=nan")] == [HEALTH], 20, "health shown")
    mqtt_client.publish(f"{prefix}/nan/health", b"", retain=True)
    wait_until(lambda: [d["health"] for d in bridge.get("/api/devices?device=nan")] == [None], 20, "health cleared")


def test_a_retained_reading_is_refused_not_stored_again_on_every_reconnect(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, influx: InfluxV1, prefix: str
) -> None:
    # Without ts, each delivery would be stamped anew: one message, a point per reconnect.
    mqtt_client.publish(f"{prefix}/stuck/reading", b'{"temperature": 21.5}', retain=True)
    first = start_bridge()
    wait_until(lambda: first.get("/api/rejections")["counts"] == {"retained": 1}, 20, "the retained refused")
    assert first.stop() == 0
    again = start_bridge()  # subscribes anew: the broker sends the retained one again
    wait_until(lambda: again.get("/api/rejections")["counts"] == {"retained": 1}, 20, "refused again")
    assert influx.query("SELECT * FROM environment") == []


# --- the fuzz ---------------------------------------------------------------------------

# A topic level as Mosquitto takes it in a publish: any text but "/" and the wildcards, and
# none of what it refuses as malformed UTF-8 (control characters, surrogates, noncharacters;
# a client that sends one is disconnected).
levels = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cn"), blacklist_characters="/+#"), max_size=70)
numbers = (
    st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([-(10**400), 2**63, 1e308])
)
# More digits than Python converts (4,300) cannot even be built as an int here: as bytes.
long_numbers = st.tuples(
    st.sampled_from(["temperature", "seq", "ts", "reads_ok", "uptime_s"]), st.integers(4290, 5200)
).map(lambda pair: b'{"%s": %s, "temperature": 1}' % (pair[0].encode(), b"9" * pair[1]))
texts = st.text(max_size=80) | st.sampled_from(["\ud800", "K\udcfcche", "a\x85b", "C:\\lab", "x" * 65, ""])
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4)
)
reading_keys = st.sampled_from(["ts", "seq", "sensor", "location", "temperature", "humidity", "time", "Temp", ""])
times = st.sampled_from([format_ts(now_us()), format_ts(now_us() + 3_600_000_000), "2026-13-01T00:00:00Z", -1, 1e300])
readingish = st.dictionaries(reading_keys, scalars | times, max_size=6)
healthish = st.fixed_dictionaries(
    {k: st.just(v) for k, v in HEALTH.items() if k not in ("uptime_s", "last_error", "sensor")},
    optional={"uptime_s": numbers, "last_error": texts, "sensor": texts, "rejected": json_values},
)


def dumps(value: object) -> bytes:
    # ensure_ascii: lone surrogates travel as \ud800 escapes, NaN as the bare token NaN.
    return json.dumps(value).encode()


payloads = (
    st.binary(max_size=120)
    | json_values.map(dumps)
    | readingish.map(dumps)
    | healthish.map(dumps)
    | long_numbers
    | st.sampled_from([b"", b"online", b"offline", b"[" * 10_000, b"\xff", b"{" * 3])
)
messages = st.lists(
    st.tuples(levels, st.sampled_from([*KINDS, "other"]), payloads, st.booleans()), min_size=1, max_size=8
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=messages)
@example(batch=[(device, kind, payload, retained) for device, kind, payload, retained, _ in POISON])
def test_fuzz_any_message_is_stored_or_refused_and_nothing_stalls(
    bridge: BridgeProcess, mqtt_client: Mqtt, influx: InfluxV1, prefix: str, batch: list[tuple[str, str, bytes, bool]]
) -> None:
    """The bridge's own router is the oracle for what each message is (its rules are tested
    in test_reading.py and test_health.py); this checks that the real bridge, over MQTT and
    InfluxDB, does exactly that for every message and never stops or lags behind."""
    router = Router(Topics(prefix), "environment")
    before = bridge_metrics(bridge)
    rejected_before = Counter(bridge.get("/api/rejections")["counts"])
    good_start = int(before.get("sensorpipe_readings_received_total", 0)) * 1000  # fresh seqs per example
    expected_rejections: Counter[str] = Counter()
    expected_stored = arrivals = 0
    for offset, (level, kind, payload, retained) in enumerate(batch):
        topic = f"{prefix}/{level}/{kind}"
        mqtt_client.publish(f"{prefix}/steady/reading", good_reading(good_start + offset))
        mqtt_client.publish(topic, payload, retain=retained)
        if kind == "other":
            continue  # matches none of the bridge's subscriptions: never arrives
        arrivals += 1
        # A subscriber already there gets a retained message with the retain flag cleared
        # (MQTT 3.1.1): for the bridge it is a live message like any other.
        outcome = router.route(topic, payload, False, now_us())
        if isinstance(outcome, Refused):
            # `unreadable` is the router's net for its own bugs: no input may land there.
            assert outcome.error.reason != "unreadable", (topic, payload[:100])
            expected_rejections[outcome.error.reason] += 1
        elif isinstance(outcome, ToStore):
            expected_stored += 1
        assert not isinstance(outcome, Ignored)
    received = before.get("sensorpipe_readings_received_total", 0) + arrivals + len(batch)

    def caught_up() -> dict[str, float] | None:
        metrics = bridge_metrics(bridge)
        done = metrics["sensorpipe_readings_received_total"] == received
        return metrics if done and metrics["sensorpipe_ingest_unacknowledged"] == 0 else None

    metrics = wait_until(caught_up, 30, f"{arrivals + len(batch)} messages received and acknowledged")
    rejected = Counter(bridge.get("/api/rejections")["counts"]) - rejected_before
    assert rejected == expected_rejections
    stored = metrics["sensorpipe_readings_stored_total"] + metrics["sensorpipe_readings_rewritten_total"]
    before_stored = before["sensorpipe_readings_stored_total"] + before["sensorpipe_readings_rewritten_total"]
    assert stored - before_stored == expected_stored + len(batch)
    goods = set(stored_seqs(influx, "steady"))
    assert set(range(good_start, good_start + len(batch))) <= goods, "a good reading was lost"
    assert requests.get(bridge.url + "/healthz", timeout=10).status_code == 200
    strict_json(requests.get(bridge.url + "/api/devices", timeout=10))


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
def test_devices_beyond_the_bound_are_stored_but_not_shown(
    start_bridge: Callable[..., BridgeProcess],
    mqtt_client: Mqtt,
    influx: InfluxV1,
    prefix: str,
    redis_server: Server,
    shared: bool,
) -> None:
    settings = {"SENSORPIPE_MAX_DEVICES": "2"}
    if shared:
        settings["SENSORPIPE_REDIS_URL"] = f"redis://127.0.0.1:{redis_server.port}/0"
    bridge = start_bridge(**settings)
    for device in ("a", "b", "c"):
        mqtt_client.publish(f"{prefix}/{device}/reading", good_reading(0))
    wait_until(lambda: stored_seqs(influx, "c") == [0], 20, "the third device's reading stored")
    mqtt_client.publish(f"{prefix}/c/status", b"online", retain=True)
    metrics = wait_until(lambda: (m := bridge_metrics(bridge))["sensorpipe_devices_untracked_total"] >= 2 and m)
    assert metrics["sensorpipe_devices"] == 2
    assert [d["device"] for d in bridge.get("/api/devices")] == ["a", "b"]
    # Clearing a retained status of a device never seen makes no device either.
    mqtt_client.publish(f"{prefix}/ghost/status", b"", retain=True)
    mqtt_client.publish(f"{prefix}/a/reading", good_reading(1))
    wait_until(lambda: stored_seqs(influx, "a") == [0, 1], 20, "a's next reading")
    assert [d["device"] for d in bridge.get("/api/devices")] == ["a", "b"]


def test_a_reading_that_comes_again_is_counted_once_as_stored(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, influx: InfluxV1, prefix: str
) -> None:
    bridge = start_bridge()
    reading = good_reading(7)
    for _ in range(3):  # as an outbox resends after a crash, or the broker redelivers
        mqtt_client.publish(f"{prefix}/desk/reading", reading)
    pipeline = wait_until(
        lambda: (p := bridge.get("/api/pipeline"))["stored"] + p["rewritten"] == 3 and p, 20, "all three written"
    )
    assert (pipeline["stored"], pipeline["rewritten"], pipeline["received"]) == (1, 2, 3)
    assert stored_seqs(influx, "desk") == [7]
