"""The dht-kernel driver against a fake IIO sysfs tree (the hardware boundary): the folder
the kernel's dht11 driver makes, its files in thousandths, a failed measurement's EIO (a
real one: the file links to /proc/self/mem, whose read at offset 0 the kernel answers with
EIO), a device that goes away, and a device that is not there (a bad setting)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from publisher.sensors import SensorContext, SensorReadError, open_sensors, parse_sensor
from publisher.sensors.dht_kernel import DhtKernelSensor, find_iio_device
from tests.conftest import run_program

ROOT = Path(__file__).resolve().parent.parent


def fake_iio(root: Path, *devices: tuple[str, str], celsius: str = "23400", humidity: str = "45100") -> Path:
    """`devices`: (folder, driver name) pairs, as /sys/bus/iio/devices lists them."""
    for folder, name in devices:
        (root / folder).mkdir(parents=True)
        (root / folder / "name").write_text(name + "\n")
        (root / folder / "in_temp_input").write_text(celsius + "\n")
        (root / folder / "in_humidityrelative_input").write_text(humidity + "\n")
    root.mkdir(parents=True, exist_ok=True)
    return root


def test_values_are_read_in_thousandths_and_spaced_two_seconds(tmp_path: Path) -> None:
    root = fake_iio(tmp_path, ("iio:device0", "dht11@4"))
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    sensor = DhtKernelSensor("dht22", find_iio_device("", root), clock=lambda: clock[0], sleep=sleep)
    assert sensor.read().metrics == {"temperature": 23.4, "humidity": 45.1}
    clock[0] += 0.5
    (root / "iio:device0" / "in_temp_input").write_text("-3100\n")
    assert sensor.read().metrics == {"temperature": -3.1, "humidity": 45.1}
    # A sooner read would get the kernel's cached measurement: it waited the rest of 2 s.
    assert slept and slept[0] == pytest.approx(1.55)


def test_a_failed_measurement_is_a_read_error_and_the_next_one_reads(tmp_path: Path) -> None:
    root = fake_iio(tmp_path, ("iio:device0", "dht11"))
    temp = root / "iio:device0" / "in_temp_input"
    sensor = DhtKernelSensor("dht11", find_iio_device("iio:device0", root), sleep=lambda _: None)
    temp.unlink()
    os.symlink("/proc/self/mem", temp)  # the kernel answers this read with EIO
    with pytest.raises(SensorReadError, match="reading in_temp_input: Input/output error"):
        sensor.read()
    temp.unlink()
    temp.write_text("21000\n")
    assert sensor.read().metrics["temperature"] == 21.0
    temp.write_text("garbage\n")
    with pytest.raises(SensorReadError, match="unexpected in_temp_input"):
        sensor.read()
    for path in (root / "iio:device0").iterdir():
        path.unlink()
    (root / "iio:device0").rmdir()  # the overlay removed, or the module unloaded
    with pytest.raises(SensorReadError, match="is gone"):
        sensor.read()


def test_the_device_is_found_by_its_driver_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    root = fake_iio(tmp_path, ("iio:device0", "mcp3008"), ("iio:device1", "dht11@4"))
    assert find_iio_device("", root) == root / "iio:device1"  # the ADC beside it is no DHT
    with pytest.raises(ValueError, match=r"no dht11 IIO device iio:device0 \(there: iio:device1\)"):
        find_iio_device("iio:device0", root)
    two = fake_iio(tmp_path / "two", ("iio:device0", "dht11@4"), ("iio:device1", "dht11@17"))
    with pytest.raises(ValueError, match="name the dht11 IIO device: there are 2"):
        find_iio_device("", two)
    with pytest.raises(ValueError, match="dtoverlay=dht11"):
        find_iio_device("", tmp_path / "none")
    [sensor] = open_sensors([parse_sensor("dht-kernel,model=dht11")], SensorContext(iio_devices=root))
    assert sensor.ranges["humidity"] == (5.0, 95.0)  # the DHT11's, not the DHT22's


def test_a_device_that_is_not_there_is_a_bad_setting(tmp_path: Path) -> None:
    result = run_program("publisher", "--sensor", "dht-kernel", "--iio-devices", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"publisher: bad setting: SENSORPIPE_SENSOR (--sensor): name the dht11 IIO device: there are 0 "
        f"(none in {tmp_path} (is dtoverlay=dht11,gpiopin=N in config.txt?))"
    ]
