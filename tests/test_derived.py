"""Dew point and absolute humidity (publisher/derived.py), against an independent reference.

The reference is the ITS-90 formulation of water's saturation vapour pressure (Hardy 1998,
the one calibration laboratories use), with the dew point found by bisection: not the
Magnus formula the publisher uses. Then end to end: a real publisher's readings, stored by
a real bridge, carry dew points within 0.1 °C of that reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from bridge.influx import InfluxV1
from publisher.derived import with_derived
from tests.conftest import BridgeProcess, Program
from tests.waiting import wait_until

# Hardy (1998): ln(e_s / Pa) = sum(g_i T^(i-2), i = 0..6) + g7 ln T, T in kelvin, over water.
HARDY = (-2.8365744e3, -6.028076559e3, 1.954263612e1, -2.737830188e-2, 1.6261698e-5, 7.0229056e-10, -1.8680009e-13)
HARDY_LN = 2.7150305


def saturation_pa(celsius: float) -> float:
    kelvin = celsius + 273.15
    return math.exp(sum(g * kelvin ** (i - 2) for i, g in enumerate(HARDY)) + HARDY_LN * math.log(kelvin))


def reference_dew_point(celsius: float, relative_humidity: float) -> float:
    target = relative_humidity / 100 * saturation_pa(celsius)
    low, high = -80.0, celsius
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if saturation_pa(middle) < target else (low, middle)
    return (low + high) / 2


def reference_absolute_humidity(celsius: float, relative_humidity: float) -> float:
    return relative_humidity / 100 * saturation_pa(celsius) / (461.5 * (celsius + 273.15)) * 1000


def test_the_reference_is_the_known_one() -> None:
    assert saturation_pa(0.0) == pytest.approx(611.2, abs=0.1)  # water's triple point, about
    assert saturation_pa(20.0) == pytest.approx(2339.3, abs=0.1)


@pytest.mark.parametrize("celsius", [-20.0, -10.0, 0.0, 4.0, 10.0, 20.0, 25.0, 30.0, 40.0, 50.0])
def test_dew_point_within_a_tenth_of_a_degree_from_minus_20_to_50(celsius: float) -> None:
    for relative_humidity in (5.0, 10.0, 20.0, 35.0, 50.0, 65.0, 80.0, 95.0, 100.0):
        derived = with_derived({"temperature": celsius, "humidity": relative_humidity})
        expected = reference_dew_point(celsius, relative_humidity)
        assert derived["dew_point"] == pytest.approx(expected, abs=0.1), (celsius, relative_humidity)
        assert derived["absolute_humidity"] == pytest.approx(
            reference_absolute_humidity(celsius, relative_humidity), rel=0.01, abs=0.01
        )


def test_without_both_or_at_zero_humidity_nothing_is_added() -> None:
    for metrics in ({"temperature": 21.0}, {"humidity": 40.0}, {"temperature": 21.0, "humidity": 0.0}, {}):
        assert with_derived(dict(metrics)) == metrics
    # A sensor that measures its own dew point keeps it.
    assert with_derived({"temperature": 21.0, "humidity": 40.0, "dew_point": 7.0})["dew_point"] == 7.0


def test_a_publishers_stored_readings_carry_their_dew_point(
    start_bridge: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    influx: InfluxV1,
) -> None:
    start_bridge()
    publisher = run_publisher("damp", SENSORPIPE_INTERVAL="0.1", SENSORPIPE_COUNT="5")
    assert publisher.process.wait(60) == 0, publisher.log()
    quiet = run_publisher("dry", SENSORPIPE_INTERVAL="0.1", SENSORPIPE_COUNT="3", SENSORPIPE_DERIVED="0")
    assert quiet.process.wait(60) == 0, quiet.log()

    def rows(device: str) -> list[dict[str, float]]:
        series = influx.query(f"SELECT * FROM environment WHERE device = '{device}'")
        if not series:
            return []
        columns = series[0]["columns"]
        return [dict(zip(columns, values, strict=True)) for values in series[0]["values"]]

    wait_until(lambda: len(rows("damp")) == 5 and len(rows("dry")) == 3, 30, "both devices' readings stored")
    for row in rows("damp"):
        assert row["dew_point"] == pytest.approx(reference_dew_point(row["temperature"], row["humidity"]), abs=0.1)
        assert row["absolute_humidity"] > 0
    assert all(row.get("dew_point") is None for row in rows("dry"))  # SENSORPIPE_DERIVED=0
