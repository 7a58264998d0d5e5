"""Several sensors on one publisher, and calibration (publisher/channel.py, publisher/calibration.py).

End to end with real processes: a publisher reads two simulated sensors, one of which fails
half its reads, with a correction on each; a real bridge stores the readings in a real
InfluxDB and serves the health. No reading of the good sensor may be missing, the failures
are the failing sensor's alone, and the corrections are in the values and in the health.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.influx import InfluxV1
from common.reading import METRIC_NAME
from publisher.calibration import Correction, in_force, parse_calibration
from publisher.sensors import parse_sensors
from tests.conftest import BridgeProcess, Program
from tests.test_derived import reference_dew_point
from tests.waiting import wait_until

COUNT = 40
FREEZER = "freezer_temperature=-20.3:-20.0,4.1:4.0"  # the probe read 0.3 low at -20 and 0.1 high at 4


def near_tenth(value: float, within: float = 2e-3) -> bool:
    """The simulated sensor gives tenths; a corrected value mostly does not."""
    return abs(value * 10 - round(value * 10)) < within * 10


def test_two_sensors_one_failing_every_good_reading_there_corrections_applied_and_reported(
    start_bridge: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    influx: InfluxV1,
) -> None:
    bridge = start_bridge()
    publisher = run_publisher(
        "cold-room",
        SENSORPIPE_SENSORS="simulated simulated,name=freezer,fail_rate=0.5",
        SENSORPIPE_CALIBRATION=f"temperature=-0.04 {FREEZER}",
        SENSORPIPE_INTERVAL="0.1",  # shorter than a retry: a failed read is not retried in its slot
        SENSORPIPE_COUNT=str(COUNT),
        SENSORPIPE_HEALTH_INTERVAL="0.5",
    )
    assert publisher.process.wait(120) == 0, publisher.log()

    def rows() -> list[dict[str, Any]]:
        series = influx.query("SELECT * FROM environment WHERE device = 'cold-room'")
        if not series:
            return []
        columns = series[0]["columns"]
        return [dict(zip(columns, values, strict=True)) for values in series[0]["values"]]

    wait_until(lambda: len(rows()) == COUNT, 30, f"all {COUNT} readings stored")
    stored = rows()
    # The good sensor's metrics in every reading: none of its readings missing.
    assert all(row["temperature"] is not None and row["humidity"] is not None for row in stored)
    with_freezer = [row for row in stored if row["freezer_temperature"] is not None]
    assert 0 < len(with_freezer) < COUNT  # the failing one: only in the readings where it read
    assert {row["sensor"] for row in stored} == {"simulated+simulated"}
    # The offset: every stored temperature is a tenth less 0.04.
    assert all(near_tenth(row["temperature"] + 0.04) and not near_tenth(row["temperature"]) for row in stored)
    # The two-point correction: undone, each value is a tenth again; as stored, most are not.
    correction = parse_calibration(FREEZER)["freezer_temperature"]
    assert all(near_tenth((row["freezer_temperature"] - correction.offset) / correction.gain) for row in with_freezer)
    assert sum(not near_tenth(row["freezer_temperature"]) for row in with_freezer) > len(with_freezer) / 2
    # The dew point comes from the corrected values, each sensor's from its own.
    for row in stored:
        assert row["dew_point"] == pytest.approx(reference_dew_point(row["temperature"], row["humidity"]), abs=0.1)
    for row in with_freezer:
        expected = reference_dew_point(row["freezer_temperature"], row["freezer_humidity"])
        assert row["freezer_dew_point"] == pytest.approx(expected, abs=0.1)

    [device] = bridge.get("/api/devices?device=cold-room")
    health = device["health"]
    sensors = health["sensors"]
    assert set(sensors) == {"simulated", "freezer"}
    assert sensors["simulated"]["reads_failed"] == 0 and sensors["simulated"]["reads_ok"] == COUNT
    assert sensors["freezer"]["reads_failed"] == COUNT - len(with_freezer)
    assert sensors["freezer"]["last_error"]
    assert health["reads_failed"] == sensors["freezer"]["reads_failed"]
    calibration = health["calibration"]
    assert calibration["temperature"]["gain"] == 1.0 and calibration["temperature"]["offset"] == -0.04
    assert calibration["freezer_temperature"]["points"] == [[-20.3, -20.0], [4.1, 4.0]]
    assert calibration["freezer_temperature"]["gain"] == pytest.approx(24 / 24.4)
    assert calibration["temperature"]["since"].endswith("Z")


def test_since_is_kept_over_restarts_and_starts_again_when_the_correction_changes(tmp_path: Path) -> None:
    record = tmp_path / "calibration-d.json"
    first = in_force(parse_calibration("temperature=-0.4 humidity=38:40,75:75"), record)
    assert set(first) == {"temperature", "humidity"}
    (body := json.loads(record.read_text()))["temperature"]["since"] = "2026-01-01T00:00:00Z"
    record.write_text(json.dumps(body))  # as if written at a start in January
    again = in_force(parse_calibration("temperature=-0.4 humidity=38:40,75:75"), record)
    assert again["temperature"].since == "2026-01-01T00:00:00Z"
    assert again["humidity"].since == first["humidity"].since
    changed = in_force(parse_calibration("temperature=-0.5"), record)
    assert changed["temperature"].since != "2026-01-01T00:00:00Z" and "humidity" not in changed
    assert set(json.loads(record.read_text())) == {"temperature"}
    record.write_text("{not json")
    assert in_force({"temperature": Correction(1.0, 0.2)}, record)["temperature"].offset == 0.2  # said in the log


def test_a_two_point_correction_maps_the_points_onto_the_reference() -> None:
    correction = parse_calibration("t=-20.3:-20.0,4.1:4.0")["t"]
    assert correction.apply(-20.3) == -20.0 and correction.apply(4.1) == 4.0
    assert math.isclose(correction.apply(0.0), correction.offset, abs_tol=1e-3)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("dht22 dht22", "two sensors are called 'dht22'"),
        ("dht22 sht4x", "dht22 and sht4x would both publish temperature"),
        ("simulated simulated,name=room", None),
        ("ds18b20,name=a ds18b20,name=b,id=28-0123456789ab", None),
        ("bme280,address=0x75", "a BME280 answers at 0x76 or 0x77 only"),
        ("sht4x,address=", None),
        ("dht22,pin", "'pin' is no option=value of this driver"),
        ("dht22,pin=D4,pin=D5", "pin is given twice"),
        ("dht-kernel,model=dht21", "use one of dht22, dht11"),
        ("simulated,name=a,fail_rate=2", "fail_rate=2"),
        ("bmp180", "unknown driver 'bmp180'"),
    ],
)
def test_sensor_entries(text: str, problem: str | None) -> None:
    if problem is None:
        assert parse_sensors(text)
    else:
        with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
            parse_sensors(text)


def test_metric_names_say_which_sensor() -> None:
    room, freezer = parse_sensors("bme280 ds18b20,name=freezer")
    assert room.metrics == ("temperature", "humidity", "pressure", "dew_point", "absolute_humidity")
    assert freezer.metrics == ("freezer_temperature",)


TOKENS = st.sampled_from(
    [
        "dht22",
        "dht11",
        "dht-kernel",
        "ds18b20",
        "bme280",
        "sht4x",
        "simulated",
        "name=",
        "pin=",
        "id=",
        "address=",
        "device=",
        "model=",
        "fail_rate=",
        "a",
        "freezer",
        "D4",
        "D28",
        "0x76",
        "0x44",
        "1e309",
        "nan",
        "-1",
        ",",
        "=",
        " ",
        "28-0123456789ab",
        "iio:device0",
        "\udcff",
        "é",
    ]
)


@given(st.one_of(st.text(max_size=200), st.lists(TOKENS, max_size=30).map("".join)))
def test_any_sensors_text_is_specs_or_a_clear_error(text: str) -> None:
    try:
        specs = parse_sensors(text)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        return
    metrics = [metric for spec in specs for metric in spec.metrics]
    assert len(metrics) == len(set(metrics)) and all(METRIC_NAME.fullmatch(metric) for metric in metrics)
    assert len({spec.key for spec in specs}) == len(specs)


NUMBER = st.one_of(st.floats(), st.integers(-(10**400), 10**400)).map(str)
ENTRY = st.tuples(st.sampled_from(["temperature", "humidity", "x_y", "Temp", ""]), NUMBER, NUMBER, NUMBER, NUMBER)


@given(
    st.one_of(
        st.text(max_size=200),
        st.lists(ENTRY.map(lambda e: f"{e[0]}={e[1]}"), max_size=4).map(" ".join),
        st.lists(ENTRY.map(lambda e: f"{e[0]}={e[1]}:{e[2]},{e[3]}:{e[4]}"), max_size=4).map(" ".join),
    )
)
def test_any_calibration_text_is_finite_corrections_or_a_clear_error(text: str) -> None:
    try:
        corrections = parse_calibration(text)
    except ValueError as exc:
        assert str(exc)
        return
    for metric, correction in corrections.items():
        assert METRIC_NAME.fullmatch(metric)
        assert math.isfinite(correction.gain) and math.isfinite(correction.offset) and 0.5 <= correction.gain <= 2
        assert math.isfinite(correction.apply(20.0))


def test_a_correction_whose_offset_overflows_is_refused() -> None:
    with pytest.raises(ValueError, match="offset is not a finite number"):
        parse_calibration("t=-1.7e308:1e308,-1.6e308:1.1e308")
