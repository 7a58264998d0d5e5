"""One sensor of a publisher, from its measurement to the metrics it adds to a reading.

Each sensor is judged on its own (its ranges, its jumps), counted on its own (reads, failed
reads, rejections, identical values in a row: `SensorHealth`), corrected (calibration),
given the values derived from it (dew point), and named (its name before each metric).
So a failing or glitching sensor costs only its own metrics, never the others'.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from common.health import SensorHealth, clean_text
from publisher.calibration import Correction
from publisher.derived import with_derived
from publisher.plausibility import Plausibility
from publisher.sensors import Measurement, Sensor, SensorSpec

log = logging.getLogger(__name__)

UNCHANGED_WARN_READS = 150  # identical values this many reads in a row: say the sensor may be stuck


@dataclass
class SensorStats:
    """What one sensor did since the publisher started."""

    reads_ok: int = 0
    reads_failed: int = 0
    last_error: str | None = None
    last_error_at: str | None = None
    rejected: Counter[str] = field(default_factory=Counter)
    unchanged_reads: int = 0

    def failed(self, error: str) -> None:
        self.reads_failed += 1
        self.last_error = clean_text(error)
        self.last_error_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Channel:
    """`sensor` as `spec` configures it; `corrections` by published metric name."""

    def __init__(
        self,
        spec: SensorSpec,
        sensor: Sensor,
        plausibility: Plausibility,
        corrections: Mapping[str, Correction] | None = None,
        derived: bool = True,
    ) -> None:
        self.spec = spec
        self.sensor = sensor
        self.stats = SensorStats()
        self._plausibility = plausibility
        # By the driver's own metric name, so they apply before the dew point is derived.
        self._corrections = {
            base: correction
            for base in sensor.ranges
            if (correction := (corrections or {}).get(spec.metric(base))) is not None
        }
        self._derived = derived
        self._previous: dict[str, float] | None = None

    def failed(self, error: str) -> None:
        self.stats.failed(error)
        # The cleaned text: a driver's message may hold anything, a lone surrogate included.
        log.warning(
            "%s: sensor read failed (%d so far): %s", self.spec.key, self.stats.reads_failed, self.stats.last_error
        )

    def take(self, measurement: Measurement) -> dict[str, float] | None:
        """The metrics `measurement` adds to a reading, or None when it is judged a glitch."""
        stats = self.stats
        stats.reads_ok += 1
        reason = self._plausibility.check(measurement.metrics)
        if reason is not None:
            stats.rejected[reason] += 1
            log.warning("%s: not publishing %s: %s", self.spec.key, measurement.metrics, reason.replace("_", " "))
            return None
        if measurement.metrics == self._previous:
            stats.unchanged_reads += 1
            if stats.unchanged_reads == UNCHANGED_WARN_READS:
                log.warning(
                    "%s: the last %d reads gave identical values: is the sensor stuck?",
                    self.spec.key,
                    UNCHANGED_WARN_READS,
                )
        else:
            stats.unchanged_reads = 0
        self._previous = measurement.metrics
        corrected = {
            base: correction.apply(value) if (correction := self._corrections.get(base)) else value
            for base, value in measurement.metrics.items()
        }
        metrics = with_derived(corrected) if self._derived else corrected
        return {self.spec.metric(base): value for base, value in metrics.items()}

    def health(self) -> SensorHealth:
        stats = self.stats
        return SensorHealth(
            driver=self.spec.driver,
            reads_ok=stats.reads_ok,
            reads_failed=stats.reads_failed,
            last_error=stats.last_error,
            last_error_at=stats.last_error_at,
            rejected=dict(stats.rejected),
            unchanged_reads=stats.unchanged_reads,
        )
