"""The DS18B20 driver against a fake of the kernel's 1-Wire sysfs tree (the hardware boundary:
no probe is attached here). The fake's `w1_slave` files are written as the kernel's w1_therm
driver writes them: the scratchpad's nine bytes with the CRC verdict, then with `t=`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.influx import InfluxV1
from publisher.sensors import SensorContext, SensorReadError, open_sensors, parse_sensor
from publisher.sensors.ds18b20 import crc8, parse_w1_slave
from tests.conftest import BridgeProcess, Program, run_program
from tests.waiting import wait_until

PROBE = "28-0316a2794aff"


def w1_slave(raw: int, crc_ok: bool = True, crc: int | None = None) -> str:
    """The kernel's text for a 12-bit reading `raw` (the datasheet's two bytes)."""
    pad = raw.to_bytes(2, "little", signed=False) + bytes([0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])
    pad += bytes([crc8(pad) if crc is None else crc])
    hexes = " ".join(f"{b:02x}" for b in pad)
    celsius = int.from_bytes(pad[:2], "little", signed=True) * 1000 // 16
    return f"{hexes} : crc={pad[8]:02x} {'YES' if crc_ok else 'NO'}\n{hexes} t={celsius}\n"


def fake_bus(root: Path, *probes: str, raw: int = 0x0172) -> Path:
    for probe in probes:
        (root / probe).mkdir(parents=True)
        (root / probe / "w1_slave").write_text(w1_slave(raw))
    (root / "w1_bus_master1").mkdir(parents=True, exist_ok=True)  # the kernel lists the master too
    return root


def test_the_crc_is_maxims() -> None:
    # Maxim's application note 27: family 02, serial 00000001B81C, CRC A2.
    assert crc8(bytes([0x02, 0x1C, 0xB8, 0x01, 0x00, 0x00, 0x00])) == 0xA2
    # And a real probe's scratchpad, as the kernel printed it.
    assert parse_w1_slave("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n") == 23.125


@pytest.mark.parametrize(
    ("raw", "celsius"),
    # The datasheet's table of temperature and data (12-bit).
    [
        (0x07D0, 125.0),
        (0x0191, 25.0625),
        (0x00A2, 10.125),
        (0x0008, 0.5),
        (0x0000, 0.0),
        (0xFFF8, -0.5),
        (0xFF5E, -10.125),
        (0xFE6F, -25.0625),
        (0xFC90, -55.0),
    ],
)
def test_the_datasheets_values(raw: int, celsius: float) -> None:
    assert parse_w1_slave(w1_slave(raw)) == celsius


def test_bad_reads_are_read_errors(tmp_path: Path) -> None:
    with pytest.raises(SensorReadError, match="CRC mismatch"):
        parse_w1_slave(w1_slave(0x0191, crc_ok=False))  # the kernel says NO
    with pytest.raises(SensorReadError, match="CRC mismatch"):
        parse_w1_slave(w1_slave(0x0191, crc=0x00))  # the kernel said YES to bytes that do not add up
    with pytest.raises(SensorReadError, match="power-on value"):
        parse_w1_slave(w1_slave(0x0550))  # 85 °C: read before its conversion ran
    with pytest.raises(SensorReadError, match="unexpected w1_slave"):
        parse_w1_slave("")
    [sensor] = open_sensors([parse_sensor("ds18b20")], SensorContext(w1_devices=fake_bus(tmp_path / "bus", PROBE)))
    assert sensor.read().metrics == {"temperature": 23.125}
    (tmp_path / "bus" / PROBE / "w1_slave").unlink()
    (tmp_path / "bus" / PROBE).rmdir()  # unplugged: the kernel drops its folder
    with pytest.raises(SensorReadError, match=f"the probe {PROBE} is gone from the bus"):
        sensor.read()


def _publisher(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_program("publisher", *args, **({"SENSORPIPE_SENSOR": "ds18b20", "SENSORPIPE_INTERVAL": "1"} | env))


def test_a_probe_that_is_not_there_is_a_bad_setting(tmp_path: Path) -> None:
    empty = fake_bus(tmp_path / "empty")
    two = fake_bus(tmp_path / "two", PROBE, "28-0316a2794b00")
    cases = [
        ({"SENSORPIPE_W1_DEVICES": str(empty)}, "name the DS18B20 probe: there are 0 (none in"),
        ({"SENSORPIPE_W1_DEVICES": str(two)}, f"there are 2 ({PROBE}, 28-0316a2794b00)"),
        (
            {"SENSORPIPE_W1_DEVICES": str(two), "SENSORPIPE_ONEWIRE_ID": "28-000000000000"},
            "no DS18B20 probe 28-000000000000 (there:",
        ),
        ({"SENSORPIPE_ONEWIRE_ID": "28-xyz"}, "a DS18B20's id is 28- and 12 hex digits"),
    ]
    for env, says in cases:
        result = _publisher(**env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "SENSORPIPE_ONEWIRE_ID (--onewire-id)" in result.stderr
        assert says in result.stderr, result.stderr


def test_a_probes_readings_are_stored(
    start_bridge: Callable[..., BridgeProcess], run_publisher: Callable[..., Program], influx: InfluxV1, tmp_path: Path
) -> None:
    start_bridge()
    bus = fake_bus(tmp_path / "bus", PROBE, raw=0xFF5E)  # -10.125 °C: a freezer
    publisher = run_publisher(
        "freezer",
        SENSORPIPE_SENSOR="ds18b20",
        SENSORPIPE_W1_DEVICES=str(bus),
        SENSORPIPE_INTERVAL="1",
        SENSORPIPE_COUNT="2",
    )
    assert publisher.process.wait(60) == 0, publisher.log()

    def stored() -> list[float]:
        series = influx.query("SELECT temperature FROM environment WHERE device = 'freezer'")
        return [values[1] for values in series[0]["values"]] if series else []

    assert wait_until(lambda: len(stored()) == 2 and stored(), 30, "the probe's readings") == [-10.125, -10.125]
