"""What the publisher refuses to publish: values outside the sensor's range, one-read jumps."""

from __future__ import annotations

from publisher.plausibility import Plausibility
from publisher.sensors.dht import RANGES


def judge(*reads: dict[str, float], confirm: int = 3) -> list[str | None]:
    plausibility = Plausibility(RANGES["dht22"], {"temperature": 5.0, "humidity": 20.0}, confirm=confirm)
    return [plausibility.check(read) for read in reads]


def test_values_outside_the_sensors_range_are_refused() -> None:
    assert judge({"temperature": 21.0}, {"temperature": 81.0}, {"humidity": -0.1}, {"humidity": 100.0}) == [
        None,
        "out_of_range",
        "out_of_range",
        None,
    ]


def test_a_one_read_spike_is_refused_and_the_level_after_it_accepted() -> None:
    assert judge(
        {"temperature": 21.0, "humidity": 45.0},
        {"temperature": 48.0, "humidity": 45.0},
        {"temperature": 21.2, "humidity": 45.1},
        {"temperature": 21.1, "humidity": 5.0},
        {"temperature": 21.1, "humidity": 44.0},
    ) == [None, "jump", None, "jump", None]


def test_a_real_step_is_accepted_once_confirmed() -> None:
    # The sensor was carried outside: three reads agreeing with each other make the new level.
    assert judge({"temperature": 21.0}, {"temperature": 5.0}, {"temperature": 5.2}, {"temperature": 5.1}) == [
        None,
        "jump",
        "jump",
        None,
    ]
    # Spikes that do not agree with each other never confirm one another.
    assert judge({"temperature": 21.0}, {"temperature": 60.0}, {"temperature": -20.0}, {"temperature": 60.0}) == [
        None,
        "jump",
        "jump",
        "jump",
    ]


def test_a_limit_of_zero_turns_the_jump_check_off() -> None:
    plausibility = Plausibility(RANGES["dht22"], {"temperature": 0.0})
    assert plausibility.check({"temperature": 10.0}) is None
    assert plausibility.check({"temperature": 70.0}) is None
