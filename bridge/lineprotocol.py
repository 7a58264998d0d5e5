"""Readings as InfluxDB line protocol (microsecond precision), escaped per the v1 spec."""

from __future__ import annotations

from common.reading import Reading


def _escape_measurement(name: str) -> str:
    return name.replace(",", "\\,").replace(" ", "\\ ")


def _escape_key(text: str) -> str:
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
    tags = "".join(f",{_escape_key(k)}={_escape_key(v)}" for k, v in sorted(reading.tags.items()))
    fields = [f"{_escape_key(name)}={value!r}" for name, value in sorted(reading.metrics.items())]
    if reading.seq is not None:
        fields.append(f"seq={reading.seq}i")
    return f"{_escape_measurement(measurement)}{tags} {','.join(fields)} {reading.ts_us}"
