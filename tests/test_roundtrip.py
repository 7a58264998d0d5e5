"""Property: any reading the bridge accepts comes back from the real InfluxDB exactly as sent.

Device, tags, every metric value bit for bit, seq and the microsecond timestamp: if line
protocol escaping were wrong anywhere, some generated reading would come back different
(or inject a field or tag of its own).
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.influx import InfluxV1, quote_ident
from bridge.lineprotocol import to_line
from common.reading import (
    FORBIDDEN_METRICS,
    MAX_FUTURE_US,
    METRIC_NAME,
    RESERVED_KEYS,
    TAG_MAX_CHARS,
    Reading,
    encode_reading,
    now_us,
    parse_reading,
)
from common.topics import DEVICE_ID

# Line protocol's own characters often, the rest of Unicode too (no control characters
# and no backslash: the contract rejects those in tags).
tag_text = st.text(
    alphabet=st.sampled_from(" ,=")
    | st.sampled_from("\"'#:;{}/*é€ ")
    | st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\\"),
    min_size=1,
    max_size=TAG_MAX_CHARS,
)
# Not the payload's own keys (ts, seq, sensor, location) nor the names InfluxDB reserves.
metric_names = st.from_regex(METRIC_NAME, fullmatch=True).filter(
    lambda name: name not in FORBIDDEN_METRICS | RESERVED_KEYS
)
readings = st.builds(
    Reading,
    device=st.from_regex(DEVICE_ID, fullmatch=True),
    ts_us=st.integers(min_value=0, max_value=now_us()),
    metrics=st.dictionaries(
        metric_names,
        st.floats(allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=8,
    ),
    seq=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    sensor=st.none() | tag_text,
    location=st.none() | tag_text,
)
measurements = (f"m{n}" for n in itertools.count())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sent=readings)
def test_accepted_readings_round_trip_through_influxdb(influx: InfluxV1, sent: Reading) -> None:
    accepted = parse_reading(sent.device, encode_reading(sent), sent.ts_us + MAX_FUTURE_US)
    assert accepted == sent  # the payload form loses nothing either

    measurement = next(measurements)  # one per example: no merging with earlier examples
    influx.write([to_line(accepted, measurement)])
    series = influx.query(f"SELECT * FROM {quote_ident(measurement)}", epoch="u")
    assert len(series) == 1 and len(series[0]["values"]) == 1
    row = dict(zip(series[0]["columns"], series[0]["values"][0], strict=True))

    assert row.pop("time") == sent.ts_us
    assert row.pop("device") == sent.device
    assert row.pop("sensor", None) == sent.sensor
    assert row.pop("location", None) == sent.location
    assert row.pop("seq", None) == sent.seq
    # What is left are the metrics, and nothing else.
    # Bit for bit: compared as their hex form, so -0.0 is not taken for 0.0.
    assert {name: float(value).hex() for name, value in row.items() if value is not None} == {
        name: value.hex() for name, value in sent.metrics.items()
    }
