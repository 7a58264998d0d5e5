"""The reading contract as code: what is accepted, how it is read, and every rejection reason."""

from __future__ import annotations

import json

import pytest

from bridge import lineprotocol
from bridge.lineprotocol import to_line
from common import reading as module
from common.reading import MAX_PAYLOAD_BYTES, Reading, RejectedMessage, encode_reading, parse_reading, parse_ts
from common.topics import Topics

NOW_US = 1_795_000_000_000_000  # 2026-11-18T11:06:40Z


def parse(payload: bytes | str | dict[str, object], device: str = "pi-kitchen") -> Reading:
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    return parse_reading(device, payload, NOW_US)


def test_a_full_reading_is_read_exactly() -> None:
    reading = parse(
        '{"ts": "2026-11-18T08:00:00.123456Z", "seq": 17, "sensor": "dht22", "location": "Living room",'
        ' "temperature": 21.4, "humidity": 45}'
    )
    assert reading == Reading(
        device="pi-kitchen",
        ts_us=1_794_988_800_123_456,
        metrics={"temperature": 21.4, "humidity": 45.0},
        seq=17,
        sensor="dht22",
        location="Living room",
    )
    assert isinstance(reading.metrics["humidity"], float)  # DHT11 ints become floats


def test_without_ts_the_receive_time_is_used() -> None:
    assert parse({"temperature": 22.5}).ts_us == NOW_US


@pytest.mark.parametrize(
    ("ts", "expected_us"),
    [
        ("2026-11-25T11:16:11.924Z", 1_795_605_371_924_000),
        ("2026-11-25T12:16:11.924+01:00", 1_795_605_371_924_000),
        ("2026-11-25t11:16:11z", 1_795_605_371_000_000),
        ("2026-11-25T11:16:11.123456789Z", 1_795_605_371_123_456),
        (1_795_605_371, 1_795_605_371_000_000),
        (1_795_605_371.5, 1_795_605_371_500_000),
    ],
)
def test_ts_forms(ts: object, expected_us: int) -> None:
    assert parse_ts(ts) == expected_us


def test_encode_then_parse_is_identity() -> None:
    reading = Reading("d1", NOW_US - 1, {"temperature": -3.25, "co2": 415.0}, seq=3, location="Cold room")
    assert parse_reading("d1", encode_reading(reading), NOW_US) == reading


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe{}", "not_utf8"),
        (b"{not json", "not_json"),
        (b"", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"text"', "not_object"),
        (b"22.5", "not_object"),
        (b'{"temperature": 1}' + b" " * MAX_PAYLOAD_BYTES, "too_large"),
        (b'{"temperature": NaN}', "bad_metric_value"),
        (b'{"temperature": Infinity}', "bad_metric_value"),
        (b'{"temperature": -Infinity}', "bad_metric_value"),
        (b'{"temperature": 1e999}', "bad_metric_value"),
        (b'{"temperature": ' + b"9" * 400 + b"}", "bad_metric_value"),
        ({"temperature": True}, "bad_metric_value"),
        ({"temperature": "21.5"}, "bad_metric_value"),
        ({"temperature": None}, "bad_metric_value"),
        ({"temperature": [1]}, "bad_metric_value"),
        ({"Temperature": 1}, "bad_metric_name"),
        ({"1temp": 1}, "bad_metric_name"),
        ({"temp-c": 1}, "bad_metric_name"),
        ({"a" * 65: 1}, "bad_metric_name"),
        ({"time": 1}, "bad_metric_name"),
        ({"device": 1}, "bad_metric_name"),
        ({}, "no_metrics"),
        ({"ts": "2026-11-18T09:46:40Z"}, "no_metrics"),
        ({f"m{i}": i for i in range(33)}, "too_many_metrics"),
        ({"ts": "yesterday", "t": 1}, "bad_ts"),
        ({"ts": "2026-11-18T09:46:40", "t": 1}, "bad_ts"),
        ({"ts": "2026-11-19", "t": 1}, "bad_ts"),
        ({"ts": "2026-13-01T00:00:00Z", "t": 1}, "bad_ts"),
        ({"ts": "2026-11-18T09:46:40+25:00", "t": 1}, "bad_ts"),
        ({"ts": -1, "t": 1}, "bad_ts"),
        ({"ts": True, "t": 1}, "bad_ts"),
        ({"ts": None, "t": 1}, "bad_ts"),
        ({"ts": 1e300, "t": 1}, "bad_ts"),
        ({"ts": NOW_US / 1e6 + 301, "t": 1}, "ts_in_future"),
        ({"seq": -1, "t": 1}, "bad_seq"),
        ({"seq": 1.5, "t": 1}, "bad_seq"),
        ({"seq": "1", "t": 1}, "bad_seq"),
        ({"seq": True, "t": 1}, "bad_seq"),
        ({"sensor": "", "t": 1}, "bad_tag"),
        ({"sensor": 22, "t": 1}, "bad_tag"),
        ({"location": "x" * 65, "t": 1}, "bad_tag"),
        ({"location": "a\nb", "t": 1}, "bad_tag"),
        ({"location": "C:\\lab", "t": 1}, "bad_tag"),
        ({"location": "cold\x85room", "t": 1}, "bad_tag"),  # C1 control (NEL)
        ({"location": "\x9b2J", "t": 1}, "bad_tag"),  # C1 control (CSI: a terminal command)
        ({"location": "K\udcfcche", "t": 1}, "bad_tag"),  # a Latin-1 byte as Python reads it
        (b'{"sensor": "\\ud800", "t": 1}', "bad_tag"),  # a lone surrogate, escaped in JSON
        (b'{"t": ' + b"9" * 5000 + b"}", "not_json"),  # more digits than Python converts
        (b'{"seq": ' + b"9" * 5000 + b', "t": 1}', "not_json"),
        (b'{"ts": ' + b"9" * 5000 + b', "t": 1}', "not_json"),
        (b"[" * 10_000, "not_json"),  # deeper than the parser's stack
        (b'{"t": ' + b"[" * 5000 + b"]" * 5000 + b"}", "not_json"),
        ({"seq": 2**63, "t": 1}, "bad_seq"),
    ],
)
def test_rejections(payload: bytes | dict[str, object], reason: str) -> None:
    with pytest.raises(RejectedMessage) as caught:
        parse(payload)
    assert caught.value.reason == reason


def test_a_rejection_names_the_readings_seq_when_it_has_one() -> None:
    with pytest.raises(RejectedMessage) as caught:
        parse({"seq": 17, "ts": NOW_US / 1e6 + 600, "t": 1})
    assert (caught.value.reason, caught.value.seq) == ("ts_in_future", 17)
    with pytest.raises(RejectedMessage) as caught:
        parse({"seq": -1, "t": 1})
    assert caught.value.seq is None


def test_ts_up_to_five_minutes_ahead_is_accepted() -> None:
    assert parse({"ts": NOW_US / 1e6 + 299, "t": 1}).ts_us == NOW_US + 299_000_000


def test_32_metrics_and_16_kib_are_the_limits() -> None:
    assert len(parse({f"m{i}": i for i in range(32)}).metrics) == 32
    body = b'{"t": 1}'
    assert parse(body + b" " * (MAX_PAYLOAD_BYTES - len(body))).metrics == {"t": 1.0}


@pytest.mark.parametrize(
    "topic",
    [
        "sensors/desk",
        "sensors/desk/reading/extra",
        "other/desk/reading",
        "sensors/desk/readings",
        "sensors//reading",
        "sensors/-desk/reading",
        "sensors/a,b/reading",
        "sensors/a=b/reading",
        "sensors/a b/reading",
        'sensors/a"b/reading',
        "sensors/a\\b/reading",
        "sensors/a\nb/reading",
        "sensors/küche/reading",
        "sensors/" + "d" * 65 + "/reading",
    ],
)
def test_bad_topics_are_rejected(topic: str) -> None:
    with pytest.raises(RejectedMessage) as caught:
        Topics("sensors").parse(topic)
    assert caught.value.reason in {"bad_topic", "bad_device"}


def test_topic_layout() -> None:
    topics = Topics("lab/floor2")
    assert topics.reading("pi.1_a-b") == "lab/floor2/pi.1_a-b/reading"
    assert topics.parse("lab/floor2/pi.1_a-b/status") == ("pi.1_a-b", "status")
    assert topics.parse("lab/floor2/" + "d" * 64 + "/health") == ("d" * 64, "health")


def test_what_was_found_valid_is_remembered_within_bounds_and_changes_no_verdict() -> None:
    """The bridge remembers tag values, metric names and line starts it has seen (one check
    per device, not per reading); a flood of distinct ones must not grow memory, and a bad
    value after a good one is still refused."""
    for i in range(module.KNOWN_GOOD_MAX + 500):
        got = parse(json.dumps({"sensor": f"s{i}", "location": f"room {i}", f"m{i}": 1}).encode())
        assert to_line(got, "environment").startswith(f"environment,device=pi-kitchen,location=room\\ {i},sensor=s{i} ")
    assert 0 < len(module._good_tags) <= module.KNOWN_GOOD_MAX
    assert 0 < len(module._good_metric_names) <= module.KNOWN_GOOD_MAX
    assert 0 < len(lineprotocol._starts) <= module.KNOWN_GOOD_MAX
    assert 0 < len(lineprotocol._field_keys) <= module.KNOWN_GOOD_MAX
    refused: list[tuple[dict[str, object], str]] = [
        ({"sensor": "a\nb", "t": 1}, "bad_tag"),
        ({"Bad": 1}, "bad_metric_name"),
    ]
    for payload, reason in refused:
        with pytest.raises(RejectedMessage) as caught:
            parse(payload)
        assert caught.value.reason == reason
    # The same device with another location is another line, not the remembered one.
    first = to_line(Reading("dev-1", 1, {"t": 1.0}, location="a"), "environment")
    second = to_line(Reading("dev-1", 1, {"t": 1.0}, location="b"), "environment")
    assert first.startswith("environment,device=dev-1,location=a ")
    assert second.startswith("environment,device=dev-1,location=b ")
