"""The DHT driver and the sampling loop against a hand-written fake of the Adafruit device.

A fake, because no Raspberry Pi and no DHT22 are attached here (the hardware boundary; the
README lists every stand-in of the suite). It behaves as adafruit-circuitpython-dht 4.0.12
does (read in its source): a new measurement only when more than 2 s passed since the last
attempt, failed ones included, else the previous values again; RuntimeError with the
library's own messages; DHT11 values as int; `exit()` to release the pin. Time is a fake
clock here too: the driver's sleep, and the sampling loop's waits (its stop event's `wait`,
which returns at once and records how long it was asked to wait).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from publisher.channel import Channel
from publisher.outbox import Outbox
from publisher.plausibility import Plausibility
from publisher.sampling import Sampler, SamplerConfig, clock_plausible
from publisher.sensors import SensorReadError, parse_sensor
from publisher.sensors.dht import DhtSensor, check_gpio

NOT_FOUND = "DHT sensor not found, check wiring"
SHORT = "A full buffer was not returned. Try again."
CHECKSUM = "Checksum did not validate. Try again."
# What the fake device does at each measurement: values, the library's error message, or an OSError.
Script = list[tuple[Any, Any] | str | OSError]


class FakeClock:
    """time.monotonic and time.sleep for the driver, without waiting for real."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FakeAdafruitDht:
    """Scripted like adafruit_dht.DHT22/DHT11: each script item is (t, h), an error message (the
    library's RuntimeError) or an OSError (from the GPIO library beneath it)."""

    def __init__(self, script: Script, clock: FakeClock) -> None:
        self._script = list(script)
        self._clock = clock
        self._last_called = 0.0
        self._temperature: Any = None
        self._humidity: Any = None
        self.measurements = 0
        self.exited = False

    def measure(self) -> None:
        if self._last_called == 0 or self._clock() - self._last_called > 2:
            self._last_called = self._clock()
            self.measurements += 1
            outcome = self._script.pop(0)
            if isinstance(outcome, str):
                raise RuntimeError(outcome)
            if isinstance(outcome, OSError):
                raise outcome
            self._temperature, self._humidity = outcome

    @property
    def temperature(self) -> Any:
        self.measure()
        return self._temperature

    @property
    def humidity(self) -> Any:
        self.measure()
        return self._humidity

    def exit(self) -> None:
        self.exited = True


def sensor(model: str, script: Script) -> tuple[DhtSensor, FakeAdafruitDht, FakeClock]:
    clock = FakeClock()
    device = FakeAdafruitDht(script, clock)
    return DhtSensor(model, device, clock=clock, sleep=clock.sleep), device, clock


def test_each_read_is_a_new_measurement_never_the_librarys_cached_one() -> None:
    dht, _, clock = sensor("dht22", [(21.5, 45.2), (21.6, 45.0), (21.7, 44.9)])
    values = [dht.read().metrics for _ in range(3)]  # asked back to back
    assert values == [
        {"temperature": 21.5, "humidity": 45.2},
        {"temperature": 21.6, "humidity": 45.0},
        {"temperature": 21.7, "humidity": 44.9},
    ]
    # Three different values: three measurements, not the library's cached one again; for
    # that the driver waited out the library's 2 s between them.
    assert clock.slept and all(s > 2.0 for s in clock.slept)


@pytest.mark.parametrize("message", [NOT_FOUND, SHORT, CHECKSUM])
def test_library_errors_become_read_errors_with_the_message(message: str) -> None:
    dht, _, _ = sensor("dht22", [message, (20.0, 50.0)])
    with pytest.raises(SensorReadError, match=message.split(".", maxsplit=1)[0]):
        dht.read()
    assert dht.read().metrics == {"temperature": 20.0, "humidity": 50.0}  # the next read measures anew


def test_dht11_whole_numbers_become_floats_and_close_releases_the_pin() -> None:
    dht, device, _ = sensor("dht11", [(22, 40)])
    metrics = dht.read().metrics
    assert metrics == {"temperature": 22.0, "humidity": 40.0}
    assert metrics and all(type(v) is float for v in metrics.values())
    dht.close()
    assert device.exited


def test_the_loop_retries_failed_reads_counts_them_and_publishes_only_good_plausible_ones(tmp_path: Any) -> None:
    # interval 60 s: a failed read is retried within the slot; the fake clock makes it instant.
    script: Script = [CHECKSUM, NOT_FOUND, (21.0, 45.0), (21.1, 45.1), (85.0, 45.0), (21.2, 45.0)]
    dht, _, _ = sensor("dht22", script)
    outbox = Outbox(tmp_path / "o.sqlite", "desk", 100)
    config = SamplerConfig("desk", "dht22", interval=60, location=None, count=3)
    channel = Channel(parse_sensor("dht22"), dht, Plausibility(dht.ranges, {"temperature": 5, "humidity": 20}))
    sampler = Sampler(config, [channel], outbox, lambda: None)
    stop = threading.Event()
    waits: list[float] = []

    def no_wait(timeout: float | None = None) -> bool:  # the slots pass at once; the waits are recorded
        waits.append(timeout or 0.0)
        return False

    stop.wait = no_wait  # type: ignore[method-assign]
    sampler.run(stop)
    retries = [w for w in waits if w < 30]  # the rest are the waits for the next 60 s slot
    # Two failed reads, each retried within its 60 s slot, each retry after the library's 2 s
    # (a sooner one would only get its failure again).
    assert len(retries) == 2 and all(w >= 2.0 for w in retries) and sum(retries) < 60
    health = sampler.health()
    assert (health.reads_ok, health.reads_failed, health.last_error) == (4, 2, NOT_FOUND)
    assert health.rejected == {"out_of_range": 1}
    stored = [e.payload for e in outbox.after(-1, 10)]
    assert len(stored) == 3 and b"85.0" not in b"".join(stored)
    assert health.outbox_depth == 3


def test_a_clock_before_the_release_is_not_trusted() -> None:
    assert not clock_plausible(0)  # 1970: a Pi that booted without network
    assert not clock_plausible(1_600_000_000)  # 2020: the last shutdown's time, say
    assert clock_plausible(1_900_000_000)


def test_without_a_gpio_chip_the_sensor_does_not_open(tmp_path: Path) -> None:
    """The GPIO check at the hardware boundary, on a fake /dev: no chip at all (a PC, an
    emulated Pi), a chip this user may not open, and one it may."""
    with pytest.raises(SensorReadError, match=r"no GPIO chip \(.*/gpiochip\*\): not a Raspberry Pi"):
        check_gpio(tmp_path)
    chip = tmp_path / "gpiochip0"
    chip.write_bytes(b"")
    with pytest.raises(SensorReadError, match=r"gpiochip0: this user may not open it \(put the user in group gpio\)"):
        check_gpio(tmp_path, access=lambda path, mode: False)  # as for a user not in group gpio
    check_gpio(tmp_path, access=lambda path, mode: path == chip)  # no error


def test_an_error_the_driver_did_not_expect_is_a_failed_read_and_the_loop_goes_on(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The GPIO library under adafruit_dht raising OSError (the line taken by another program)
    ended the sampling loop, and with it the publisher; now it is a failed read like the
    library's own, counted in health, its traceback logged once."""
    busy = OSError(16, "Device or resource busy")
    dht, _, _ = sensor("dht22", [(21.0, 45.0), busy, busy, (21.1, 45.1), (21.2, 45.2)])
    outbox = Outbox(tmp_path / "o.sqlite", "desk", 100)
    config = SamplerConfig("desk", "dht22", interval=60, location=None, count=3)
    sampler = Sampler(config, [Channel(parse_sensor("dht22"), dht, Plausibility(dht.ranges, {}))], outbox, lambda: None)
    stop = threading.Event()
    stop.wait = lambda timeout=None: False  # type: ignore[method-assign]  # the slots pass at once
    sampler.run(stop)
    health = sampler.health()
    assert (health.reads_ok, health.reads_failed) == (3, 2)
    assert health.last_error == "OSError: [Errno 16] Device or resource busy"
    assert len(outbox.after(-1, 10)) == 3
    assert sum("Traceback" in (record.exc_text or "") or record.exc_info is not None for record in caplog.records) == 1
