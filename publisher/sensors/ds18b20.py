"""DS18B20 temperature probes on the kernel's 1-Wire bus (`dtoverlay=w1-gpio`, GPIO 4).

No library: the kernel's w1_therm driver answers each read of
`/sys/bus/w1/devices/28-<serial>/w1_slave` with the scratchpad's nine bytes twice, the
first line ending in the CRC verdict (`crc=57 YES`), the second in the temperature in
thousandths of a degree (`t=23125`). This driver checks the CRC itself too (Dallas/Maxim
CRC-8 over the first eight bytes) and takes the temperature from the checked bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

from common.reading import now_us
from publisher.sensors.base import Measurement, SensorReadError, choose

W1_DEVICES = Path("/sys/bus/w1/devices")
# Family 28: DS18B20 (and MAX31820); 12 hex digits of serial number.
DEVICE_ID = re.compile(r"28-[0-9a-f]{12}")
# The datasheet's range; 85.0 °C is also the power-on value of a probe read too early.
RANGES = {"temperature": (-55.0, 125.0)}
POWER_ON_RESET_C = 85.0
# A 12-bit conversion takes up to 750 ms; the kernel does it within each read.
MIN_INTERVAL_S = 1.0
SCRATCHPAD = re.compile(r"^((?:[0-9a-f]{2} ){9}): crc=[0-9a-f]{2} (YES|NO)$")


def crc8(data: bytes) -> int:
    """Dallas/Maxim 1-Wire CRC-8 (x^8 + x^5 + x^4 + 1, bits in reflected order)."""
    crc = 0
    for byte in data:
        bits = byte
        for _ in range(8):
            mix = (crc ^ bits) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            bits >>= 1
    return crc


def parse_w1_slave(text: str) -> float:
    """Degrees Celsius from w1_slave's text; SensorReadError for a bad or failed read."""
    lines = text.strip().splitlines()
    match = SCRATCHPAD.match(lines[0]) if lines else None
    if match is None:
        raise SensorReadError(f"unexpected w1_slave contents: {text[:80]!r}")
    scratchpad = bytes.fromhex(match[1])
    if match[2] != "YES" or crc8(scratchpad[:8]) != scratchpad[8]:
        raise SensorReadError("1-Wire CRC mismatch (a noisy line, or a long cable without a 4.7 kΩ pull-up)")
    if scratchpad == bytes(9):
        raise SensorReadError("the probe answered with zeros (not powered?)")
    celsius = int.from_bytes(scratchpad[0:2], "little", signed=True) / 16
    if celsius == POWER_ON_RESET_C:
        raise SensorReadError("85.0 °C is the probe's power-on value: its conversion did not run")
    return celsius


def find_device(device_id: str, root: Path = W1_DEVICES) -> Path:
    """The probe's w1_slave file; for an empty id the one probe on the bus. Raises
    ValueError naming what is there when the probe is not (for the setting's one line)."""
    present = sorted(path.name for path in root.glob("28-*")) if root.is_dir() else []
    chosen = choose(present, device_id, "DS18B20 probe", f"none in {root} (is dtoverlay=w1-gpio set?)")
    return root / chosen / "w1_slave"


class Ds18b20Sensor:
    """One DS18B20 probe, read through the kernel's sysfs file."""

    min_interval_s = MIN_INTERVAL_S
    ranges = RANGES

    def __init__(self, w1_slave: Path) -> None:
        self._path = w1_slave

    def read(self) -> Measurement:
        try:
            text = self._path.read_text()
        except FileNotFoundError:
            raise SensorReadError(f"the probe {self._path.parent.name} is gone from the bus") from None
        except OSError as exc:  # the kernel answers a failed bus read with EIO
            raise SensorReadError(f"reading {self._path}: {exc.strerror}") from None
        return Measurement(ts_us=now_us(), metrics={"temperature": parse_w1_slave(text)})

    def close(self) -> None:
        pass  # nothing held: the kernel owns the bus


__all__ = ["DEVICE_ID", "W1_DEVICES", "Ds18b20Sensor", "crc8", "find_device", "parse_w1_slave"]
