"""Calibration per metric (SENSORPIPE_CALIBRATION), and since when each correction is in force.

A correction is an offset (`temperature=-0.4`: 0.4 °C off every value) or a two-point
linear correction from two readings against a reference (`freezer_temperature=-20.3:-20.0,
4.1:4.0`: the probe said -20.3 where the reference said -20.0, and 4.1 at 4.0). Either way
the publisher sends `gain * measured + offset`, and its health message says which correction
is in force on which metric since when: the record of the correction is in the data itself.

"Since when" is the first start with that correction: a file beside the outbox keeps it over
restarts, and a changed correction starts a new "since".
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common.health import Calibration, parse_health
from common.reading import METRIC_NAME, RejectedMessage

log = logging.getLogger(__name__)

DECIMALS = 3  # a corrected value keeps this many decimals (a float's tail is not data)


@dataclass(frozen=True)
class Correction:
    """published = gain * measured + offset; `points` when made from two readings."""

    gain: float
    offset: float
    points: tuple[tuple[float, float], tuple[float, float]] | None = None

    def apply(self, value: float) -> float:
        return round(self.gain * value + self.offset, DECIMALS)


def _number(raw: str, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{what} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} {raw!r} is not a finite number")
    return value


def parse_correction(raw: str) -> Correction:
    """`offset`, or `measured:reference,measured:reference`; ValueError saying what is wrong."""
    if "," not in raw and ":" not in raw:
        return Correction(1.0, _number(raw, "the offset"))
    pairs = raw.split(",")
    if len(pairs) != 2 or not all(pair.count(":") == 1 for pair in pairs):
        raise ValueError(f"{raw!r}: a two-point correction is measured:reference,measured:reference")
    (m1, r1), (m2, r2) = (
        (_number(measured, "the measured value"), _number(reference, "the reference value"))
        for measured, reference in (pair.split(":") for pair in pairs)
    )
    if m1 == m2:
        raise ValueError(f"{raw!r}: the two points need two different measured values")
    gain = (r2 - r1) / (m2 - m1)
    if not 0.5 <= gain <= 2.0:  # also false for a NaN or an infinite gain
        raise ValueError(f"{raw!r}: a gain of {gain:.3g} (outside 0.5 to 2) is more likely a typo than a sensor")
    offset = r1 - gain * m1
    if not math.isfinite(offset):
        raise ValueError(f"{raw!r}: the correction's offset is not a finite number")
    return Correction(gain, offset, ((m1, r1), (m2, r2)))


def parse_calibration(text: str) -> dict[str, Correction]:
    """SENSORPIPE_CALIBRATION: `metric=correction` entries separated by spaces (empty: none)."""
    corrections: dict[str, Correction] = {}
    for entry in text.split():
        metric, equals, raw = entry.partition("=")
        if not equals or not METRIC_NAME.fullmatch(metric):
            raise ValueError(f"{entry!r}: each entry is metric=offset or metric=measured:reference,measured:reference")
        if metric in corrections:
            raise ValueError(f"{metric} is given twice")
        try:
            corrections[metric] = parse_correction(raw)
        except ValueError as exc:
            raise ValueError(f"{metric}: {exc}") from None
    return corrections


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def in_force(corrections: Mapping[str, Correction], record: Path) -> dict[str, Calibration]:
    """Each correction with the time it came into force: kept from `record` (a JSON file of a
    health message's `calibration`) when it is the same correction, else now; `record` is
    written back. A record that cannot be read or written is said in the log, and the times
    are then this start's."""
    before: dict[str, Calibration] = {}
    try:
        body = json.loads(record.read_text())
        health = parse_health(json.dumps({**_REQUIRED, "calibration": body}).encode())
        before = health.calibration if health else {}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, RejectedMessage) as exc:
        log.warning("cannot read the calibration record %s (%s): the corrections count from now", record, exc)
    now = _now()
    current = {
        metric: Calibration(
            correction.gain,
            correction.offset,
            since=_kept_since(before.get(metric), correction) or now,
            points=correction.points,
        )
        for metric, correction in corrections.items()
    }
    if current != before:
        try:
            temporary = record.with_name(record.name + ".new")
            temporary.write_text(json.dumps({m: c.as_json() for m, c in current.items()}, indent=1))
            os.replace(temporary, record)
        except OSError as exc:
            log.warning("cannot write the calibration record %s: %s", record, exc)
    return current


def _kept_since(before: Calibration | None, correction: Correction) -> str | None:
    if before is None or (before.gain, before.offset, before.points) != (
        correction.gain,
        correction.offset,
        correction.points,
    ):
        return None
    return before.since


# A health message's required keys, so the record is checked by the health parser itself.
_REQUIRED = {"reads_ok": 0, "reads_failed": 0, "last_error": None, "outbox_depth": 0, "uptime_s": 0}


def unknown_metrics(corrections: Mapping[str, Correction], measured: Sequence[str]) -> list[str]:
    """The corrected metrics that no sensor measures (a typo, or a derived value)."""
    return [metric for metric in corrections if metric not in measured]
