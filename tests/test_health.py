"""The health message as code: what the publisher sends, the bridge reads back exactly, and
anything else is refused with `bad_health` (never a NaN on the dashboard, never a crash)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.health import Health, Refusal, clean_text, encode_health, parse_health
from common.reading import MAX_PAYLOAD_BYTES, RejectedMessage, now_us, parse_reading
from publisher.channel import Channel
from publisher.outbox import Outbox
from publisher.plausibility import Plausibility
from publisher.sampling import Sampler, SamplerConfig
from publisher.sensors import SENSORS, SimFaults, parse_sensor
from publisher.sensors.simulated import SimulatedSensor

REQUIRED = {"reads_ok": 1, "reads_failed": 0, "last_error": None, "outbox_depth": 0, "uptime_s": 5}


def test_an_empty_payload_clears_it() -> None:
    assert parse_health(b"") is None


def test_a_full_health_message_reads_back_exactly() -> None:
    health = Health(
        reads_ok=1520,
        reads_failed=3,
        last_error="Checksum did not validate. Try again.",
        outbox_depth=2,
        uptime_s=3050,
        last_error_at="2026-11-25T19:02:11Z",
        rejected={"jump": 1},
        unchanged_reads=0,
        outbox_dropped=0,
        clock_ok=True,
        interval_s=2.0,
        sensor="dht22",
        version="0.1.0",
        refused=Refusal("ts_in_future", "ts is 600 s ahead of the bridge's clock", 1_795_000_000_000.0, 17),
        refused_count=4,
    )
    assert parse_health(encode_health(health)) == health


def test_keys_it_does_not_know_are_ignored_not_refused() -> None:
    body = {**REQUIRED, "battery": {"volts": 3.1}, "future_key": [1, 2]}
    assert parse_health(json.dumps(body).encode()) == Health(1, 0, None, 0, 5.0)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"reads_ok": NaN}',
        json.dumps({**REQUIRED, "uptime_s": float("nan")}).encode(),
        json.dumps({**REQUIRED, "uptime_s": float("inf")}).encode(),
        b'{"reads_ok": 1, "reads_failed": 0, "last_error": null, "outbox_depth": 0, "uptime_s": 1e999}',
        b'{"reads_ok": ' + b"9" * 5000 + b"}",  # more digits than Python converts
        json.dumps({**REQUIRED, "reads_ok": 10**30}).encode(),
        b"[" * 10_000,
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b"{}",
        json.dumps({k: v for k, v in REQUIRED.items() if k != "last_error"}).encode(),
        json.dumps({**REQUIRED, "reads_ok": -1}).encode(),
        json.dumps({**REQUIRED, "reads_ok": True}).encode(),
        json.dumps({**REQUIRED, "reads_ok": 1.5}).encode(),
        json.dumps({**REQUIRED, "last_error": 42}).encode(),
        json.dumps({**REQUIRED, "last_error": "x" * 501}).encode(),
        json.dumps({**REQUIRED, "last_error": "line\nbreak"}).encode(),
        json.dumps({**REQUIRED, "sensor": "\ud800"}).encode(),
        json.dumps({**REQUIRED, "clock_ok": "yes"}).encode(),
        json.dumps({**REQUIRED, "interval_s": -2}).encode(),
        json.dumps({**REQUIRED, "rejected": {"Jump!": 1}}).encode(),
        json.dumps({**REQUIRED, "rejected": {"jump": -1}}).encode(),
        json.dumps({**REQUIRED, "rejected": {f"r{i}": 1 for i in range(33)}}).encode(),
        json.dumps({**REQUIRED, "refused": {"reason": "x", "at": float("nan")}}).encode(),
        json.dumps({**REQUIRED, "refused": "ts_in_future"}).encode(),
        json.dumps({**REQUIRED, "pad": "x" * MAX_PAYLOAD_BYTES}).encode(),
    ],
)
def test_anything_else_is_refused_as_bad_health(payload: bytes) -> None:
    with pytest.raises(RejectedMessage) as caught:
        parse_health(payload)
    assert caught.value.reason == "bad_health"


@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes_give_a_health_none_or_bad_health(payload: bytes) -> None:
    try:
        health = parse_health(payload)
    except RejectedMessage as exc:
        assert exc.reason == "bad_health"
    else:
        # Whatever is accepted serialises as standard JSON (no NaN) and reads back the same.
        assert health is None or parse_health(encode_health(health)) == health


@given(st.text())
def test_clean_text_makes_any_error_text_fit_for_health(text: str) -> None:
    body = {**REQUIRED, "last_error": clean_text(text)}
    assert parse_health(json.dumps(body).encode()) is not None


@pytest.mark.parametrize("sensor", SENSORS)
def test_what_the_publisher_sends_is_what_the_bridge_reads(tmp_path: Path, sensor: str) -> None:
    """Every publisher setting that ends up in the health message, at its limits."""
    outbox = Outbox(tmp_path / "o.sqlite", "d", 10)
    sampler = Sampler(
        SamplerConfig("d", sensor, interval=1e-3 if sensor == "simulated" else 86400.0, location="x" * 64, count=0),
        [Channel(parse_sensor(sensor), SimulatedSensor(1, SimFaults()), Plausibility({}, {}))],
        outbox,
        lambda: None,
    )
    sampler.channels[0].failed("DHT sensor not found, check wiring\n\x00\udcff" + "x" * 600)
    sampler.bridge_refused(Refusal("ts_in_future", "ahead", 1.0, 0), first_seq=0)
    health = sampler.health()
    assert parse_health(encode_health(health)) == health


@pytest.mark.parametrize("location", [None, "x" * 64, "Kühlraum 2 · Regal 3", "a,b=c d"])
def test_every_reading_the_publisher_takes_is_one_the_bridge_accepts(tmp_path: Path, location: str | None) -> None:
    """The settings that end up in a reading (sensor, location, the device id), at their
    limits, through the publisher's own path (sampler -> outbox payload) and the bridge's parser."""
    device = "d" * 64
    outbox = Outbox(tmp_path / "o.sqlite", device, 10)
    for sensor in SENSORS:
        sampler = Sampler(
            SamplerConfig(device, sensor, interval=0.001, location=location, count=1),
            [Channel(parse_sensor(sensor), SimulatedSensor(1, SimFaults()), Plausibility({}, {}))],
            outbox,
            lambda: None,
        )
        sampler.run(threading.Event())  # one reading, then it stops (count=1)
    for entry in outbox.after(-1, 10):
        reading = parse_reading(device, entry.payload, now_us() + 1)
        assert (reading.seq, reading.location) == (entry.seq, location)
