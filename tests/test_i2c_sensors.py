"""The bme280 and sht4x drivers, through the real Adafruit chip libraries, against a fake I2C
bus: the hardware boundary. The fake answers register reads and commands as the chips'
datasheets say (Bosch BME280/BMP280: calibration registers, raw values; Sensirion SHT4x:
commands, 16-bit words each followed by its CRC-8), and the converted values are checked
against the datasheets' worked example and formulas, computed here independently."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest

from publisher.sensors import SensorReadError
from publisher.sensors.bme280 import open_bme280
from publisher.sensors.sht4x import open_sht4x

# The compensation example of Bosch's BMP280 datasheet (section 3.12, table 14): the BME280
# has the same temperature and pressure formulas. Expected: 25.08 °C and 100653.27 Pa.
DIG_T = (27504, 26435, -1000)
DIG_P = (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
ADC_T, ADC_P = 519888, 415148
# Humidity calibration of a real BME280 part (the datasheet gives no example for humidity).
DIG_H1, DIG_H2, DIG_H3, DIG_H4, DIG_H5, DIG_H6 = 75, 362, 0, 313, 50, 30
ADC_H = 30976


class FakeI2CBus:
    """Blinka's busio.I2C as the libraries use it: try_lock/unlock, writeto, readfrom_into.
    Each chip is a callable: `chip(written) -> None` on a write, `chip.read(n) -> bytes`.
    An address with no chip answers with OSError, as the kernel's i2c-dev does (ENXIO)."""

    def __init__(self, chips: dict[int, Any]) -> None:
        self.chips = chips
        self.locked = False

    def try_lock(self) -> bool:
        if self.locked:
            return False
        self.locked = True
        return True

    def unlock(self) -> None:
        self.locked = False

    def _chip(self, address: int) -> Any:
        assert self.locked, "the libraries lock the bus around every transfer"
        if address not in self.chips:
            raise OSError(6, "No such device or address")
        return self.chips[address]

    def writeto(self, address: int, buffer: bytes, *, start: int = 0, end: int | None = None) -> None:
        self._chip(address).write(bytes(buffer[start:end]))

    def readfrom_into(self, address: int, buffer: bytearray, *, start: int = 0, end: int | None = None) -> None:
        end = len(buffer) if end is None else end
        buffer[start:end] = self._chip(address).read(end - start)


class FakeBme280:
    """Registers as in the BME280 datasheet (section 5.3, memory map); a one-byte write sets
    the register pointer, a longer one writes registers; reads go on from the pointer."""

    def __init__(self, chip_id: int = 0x60) -> None:
        self.registers = bytearray(256)
        self.registers[0xD0] = chip_id
        self.registers[0x88:0xA0] = struct.pack("<HhhHhhhhhhhh", *DIG_T, *DIG_P)
        self.registers[0xA1] = DIG_H1
        # H4: 0xE4 bits 11..4, 0xE5 bits 3..0; H5: 0xE6 bits 11..4, 0xE5 bits 7..4.
        self.registers[0xE1:0xE8] = struct.pack(
            "<hBbBbb", DIG_H2, DIG_H3, DIG_H4 >> 4, (DIG_H4 & 0xF) | ((DIG_H5 & 0xF) << 4), DIG_H5 >> 4, DIG_H6
        )
        self.set_adc(ADC_T, ADC_P, ADC_H)
        self.pointer = 0
        self.fail: OSError | None = None
        self.reset = False

    def set_adc(self, adc_t: int, adc_p: int, adc_h: int) -> None:
        # 20-bit values: msb, lsb, xlsb bits 7..4 (datasheet 5.4.7, 5.4.8); humidity 16 bits.
        for register, adc in ((0xF7, adc_p), (0xFA, adc_t)):
            self.registers[register : register + 3] = bytes((adc >> 12, (adc >> 4) & 0xFF, (adc & 0xF) << 4))
        self.registers[0xFD:0xFF] = adc_h.to_bytes(2, "big")

    def write(self, data: bytes) -> None:
        if self.fail:
            raise self.fail
        if not data:
            return  # the libraries' probe
        self.pointer = data[0]
        if len(data) == 2:
            self.registers[data[0]] = data[1]
            if data[0] == 0xE0 and data[1] == 0xB6:
                self.reset = True

    def read(self, count: int) -> bytes:
        if self.fail:
            raise self.fail
        if self.pointer == 0xF3:
            return bytes(count)  # status: the conversion is done (bit 3 clear)
        data = bytes(self.registers[self.pointer : self.pointer + count])
        self.pointer += count
        return data


def sensirion_crc(word: bytes) -> int:
    """CRC-8 of the SHT4x datasheet (section 4.4): polynomial 0x31, init 0xFF; 0xBEEF -> 0x92."""
    crc = 0xFF
    for byte in word:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class FakeSht4x:
    """Commands as in the SHT4x datasheet (section 4.5): 0x94 soft reset, 0x89 serial number,
    0xFD measure with high precision; each answer two words, each with its CRC."""

    def __init__(self, raw_t: int, raw_rh: int) -> None:
        self.raw = (raw_t, raw_rh)
        self.answer = b""
        self.corrupt = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        words = {0x89: (0x0A1B, 0x2C3D), 0xFD: self.raw}.get(data[0])
        self.answer = b""
        if words:
            self.answer = b"".join(w.to_bytes(2, "big") + bytes([sensirion_crc(w.to_bytes(2, "big"))]) for w in words)
            if self.corrupt and data[0] == 0xFD:
                self.answer = self.answer[:2] + bytes([self.answer[2] ^ 0x01]) + self.answer[3:]

    def read(self, count: int) -> bytes:
        return self.answer[:count].ljust(count, b"\0")


def bmp280_reference(adc_t: int, adc_p: int) -> tuple[float, float]:
    """The datasheet's double-precision compensation (BMP280 section 8.1), written out here."""
    t1, t2, t3 = DIG_T
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = DIG_P
    var1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
    var2 = (adc_t / 131072.0 - t1 / 8192.0) ** 2 * t3
    t_fine = var1 + var2  # the datasheet keeps it a double; the library truncates it (0.01 Pa here)
    celsius = t_fine / 5120.0
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * p6 / 32768.0 + var1 * p5 * 2.0
    var2 = var2 / 4.0 + p4 * 65536.0
    var1 = (p3 * var1 * var1 / 524288.0 + p2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * p1
    p = (1048576.0 - adc_p - var2 / 4096.0) * 6250.0 / var1
    p += (p9 * p * p / 2147483648.0 + p * p8 / 32768.0 + p7) / 16.0
    return celsius, p


def bme280_humidity_reference(t_fine: int, adc_h: int) -> float:
    """The datasheet's 32-bit integer humidity compensation (BME280 section 4.2.3), in %RH."""
    v = t_fine - 76800
    v = ((((adc_h << 14) - (DIG_H4 << 20) - (DIG_H5 * v)) + 16384) >> 15) * (
        ((((((v * DIG_H6) >> 10) * (((v * DIG_H3) >> 11) + 32768)) >> 10) + 2097152) * DIG_H2 + 8192) >> 14
    )
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * DIG_H1) >> 4)
    v = min(max(v, 0), 419430400)
    return (v >> 12) / 1024.0


def test_the_reference_formulas_give_the_datasheets_example() -> None:
    celsius, pascal = bmp280_reference(ADC_T, ADC_P)
    assert round(celsius, 2) == 25.08 and pascal == pytest.approx(100653.27, abs=0.01)
    assert sensirion_crc(bytes([0xBE, 0xEF])) == 0x92


def test_bme280_values_are_the_datasheets() -> None:
    chip = FakeBme280()
    sensor = open_bme280((0x76, 0x77), FakeI2CBus({0x77: chip}))  # found at the second address
    assert chip.reset  # the library soft-resets the chip at start
    metrics = sensor.read().metrics
    assert metrics["temperature"] == 25.08
    assert metrics["pressure"] == pytest.approx(1006.5327, abs=0.005)  # hPa
    assert metrics["humidity"] == pytest.approx(bme280_humidity_reference(128422, ADC_H), abs=0.01)
    assert 0 < metrics["humidity"] < 100
    assert set(metrics) == {"temperature", "humidity", "pressure"}


def test_a_bmp280_sold_as_a_bme280_and_an_empty_bus_are_named() -> None:
    with pytest.raises(SensorReadError, match=r"no bme280 answers \(0x76: .*0x58"):
        open_bme280((0x76,), FakeI2CBus({0x76: FakeBme280(chip_id=0x58)}))
    with pytest.raises(SensorReadError, match=r"0x76: No I2C device at address: 0x76; 0x77: No I2C device.*i2cdetect"):
        open_bme280((0x76, 0x77), FakeI2CBus({}))


def test_bme280_bus_errors_are_read_errors_and_the_next_read_works() -> None:
    chip = FakeBme280()
    sensor = open_bme280((0x76,), FakeI2CBus({0x76: chip}))
    chip.fail = OSError(121, "Remote I/O error")  # the chip stopped acknowledging: a loose wire
    with pytest.raises(SensorReadError, match=r"I2C read failed.*Remote I/O error"):
        sensor.read()
    chip.fail = None
    assert sensor.read().metrics["temperature"] == 25.08


def sht4x_reference(raw_t: int, raw_rh: int) -> tuple[float, float]:
    """The SHT4x datasheet's conversion (section 4.6)."""
    return -45 + 175 * raw_t / 65535, min(100.0, max(0.0, -6 + 125 * raw_rh / 65535))


@pytest.mark.parametrize("raw", [(26214, 29360), (0, 0), (65535, 65535), (14000, 3000)])
def test_sht4x_values_are_the_datasheets(raw: tuple[int, int]) -> None:
    sensor = open_sht4x((0x44,), FakeI2CBus({0x44: FakeSht4x(*raw)}))
    temperature, humidity = sht4x_reference(*raw)
    assert sensor.read().metrics == {"temperature": round(temperature, 2), "humidity": round(humidity, 2)}


def test_sht4x_crc_errors_are_read_errors_and_an_absent_chip_is_named() -> None:
    chip = FakeSht4x(26214, 29360)
    sensor = open_sht4x((0x44, 0x45), FakeI2CBus({0x45: chip}))
    chip.corrupt = True
    with pytest.raises(SensorReadError, match="CRC"):
        sensor.read()
    chip.corrupt = False
    assert sensor.read().metrics == {"temperature": 25.0, "humidity": 50.0}
    with pytest.raises(SensorReadError, match="no sht4x answers"):
        open_sht4x((0x44,), FakeI2CBus({}))


@pytest.mark.parametrize("opener", [open_bme280, open_sht4x])
def test_on_a_pc_there_is_no_bus_and_the_line_says_how_to_switch_it_on(opener: Callable[..., Any]) -> None:
    """No fake here: Blinka on this PC has no I2C pins."""
    with pytest.raises(SensorReadError, match=r"no I2C bus .*raspi-config nonint do_i2c 0"):
        opener((0x76,) if opener is open_bme280 else (0x44,))
