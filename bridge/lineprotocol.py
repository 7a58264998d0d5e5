"""Readings as InfluxDB line protocol (microsecond precision), escaped per the v1 spec."""

from __future__ import annotations

from common.reading import KNOWN_GOOD_MAX, Reading

# The escaped "measurement,tags" start of a line per (measurement, device, sensor, location),
# and escaped field keys per metric name: the same few come with every reading, and escaping
# them was a third of encoding one. Emptied when full, so distinct values cost only time.
_starts: dict[tuple[str, str, str | None, str | None], str] = {}
_field_keys: dict[str, str] = {}


def escape_measurement(name: str) -> str:
    return name.replace(",", "\\,").replace(" ", "\\ ")


def escape_key(text: str) -> str:
    """Tag keys, tag values and field keys: comma, equals sign and space are escaped.

    InfluxDB 1.x has no escape for a backslash itself, so readings never carry one
    (`common.reading` rejects it in tags; names and ids cannot hold one).
    """
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def to_line(reading: Reading, measurement: str) -> str:
    """One line: tags sorted by key, every metric a float field, `seq` an integer field.

    Floats are written with `repr`, which round-trips every finite double exactly and
    always has a `.` or an exponent, so InfluxDB never takes a field for an integer.
    """
    key = (measurement, reading.device, reading.sensor, reading.location)
    start = _starts.get(key)
    if start is None:
        tags = "".join(f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(reading.tags.items()))
        start = f"{escape_measurement(measurement)}{tags}"
        if len(_starts) >= KNOWN_GOOD_MAX:
            _starts.clear()
        _starts[key] = start
    fields = [f"{_field_key(name)}={value!r}" for name, value in sorted(reading.metrics.items())]
    if reading.seq is not None:
        fields.append(f"seq={reading.seq}i")
    return f"{start} {','.join(fields)} {reading.ts_us}"


def _field_key(name: str) -> str:
    escaped = _field_keys.get(name)
    if escaped is None:
        escaped = escape_key(name)
        if len(_field_keys) >= KNOWN_GOOD_MAX:
            _field_keys.clear()
        _field_keys[name] = escaped
    return escaped
