"""The publisher's loop: read the sensor on a fixed schedule, judge, store in the outbox.

Nothing here talks MQTT: a reading's way out is the outbox, and the link sends it from
there. What the loop sees (reads, failures, rejections, the clock) it counts in
`SamplerStats`, which goes out as the device's health.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from common.health import Health, Refusal, clean_text
from common.reading import Reading
from common.version import RELEASE_DATE, VERSION
from publisher.derived import with_derived
from publisher.outbox import Outbox
from publisher.plausibility import Plausibility
from publisher.sensors import Measurement, Sensor, SensorReadError

log = logging.getLogger(__name__)

EARLIEST_PLAUSIBLE_S = datetime(RELEASE_DATE.year, RELEASE_DATE.month, RELEASE_DATE.day, tzinfo=UTC).timestamp()
RETRY_FIRST_S = 0.5  # a failed read is tried again after this (at least the sensor's own minimum) ...
RETRY_MAX_S = 30.0  # ... doubling up to this, while the reading's slot lasts
UNCHANGED_WARN_READS = 150  # identical values this many reads in a row: say the sensor may be stuck


def clock_plausible(now_s: float) -> bool:
    """False while the clock says a time before this version was released (an unset Pi clock)."""
    return now_s >= EARLIEST_PLAUSIBLE_S


@dataclass
class SamplerStats:
    """What the loop has seen since this process started."""

    started: float = field(default_factory=time.monotonic)
    reads_ok: int = 0
    reads_failed: int = 0
    last_error: str | None = None
    last_error_at: str | None = None
    rejected: Counter[str] = field(default_factory=Counter)
    unchanged_reads: int = 0
    clock_ok: bool = True
    stored: int = 0
    refused: Refusal | None = None  # the bridge's latest refusal of one of this run's readings
    refused_count: int = 0  # refusals of this run's readings the bridge reported

    def failed(self, error: str) -> None:
        self.reads_failed += 1
        self.last_error = clean_text(error)
        self.last_error_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class SamplerConfig:
    device: str
    sensor_name: str
    interval: float
    location: str | None
    count: int  # stop after this many readings are stored; 0: never
    derived: bool = True  # add dew_point and absolute_humidity (publisher/derived.py)


class Sampler:
    """Reads `sensor` every `interval` and adds each plausible reading to `outbox`."""

    def __init__(
        self,
        config: SamplerConfig,
        sensor: Sensor,
        plausibility: Plausibility,
        outbox: Outbox,
        on_stored: Callable[[], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.stats = SamplerStats()
        self._sensor = sensor
        self._plausibility = plausibility
        self._outbox = outbox
        self._on_stored = on_stored
        self._clock = clock
        self._previous: dict[str, float] | None = None

    def run(self, stop: threading.Event, every_slot: Callable[[], None] = lambda: None) -> None:
        """Sample until `stop` is set or `count` readings are stored; `every_slot` runs after each."""
        config = self.config
        next_at = time.monotonic()
        while not stop.is_set() and not (config.count and self.stats.stored >= config.count):
            next_at += config.interval  # a fixed schedule: a slow read does not stretch it
            if self._clock_is_set():
                measurement = self._read(stop, deadline=next_at)
                if measurement is not None:
                    self._take(measurement)
            every_slot()
            stop.wait(max(0.0, next_at - time.monotonic()))

    def health(self) -> Health:
        """The retained health message (contract: `<prefix>/<device>/health`)."""
        stats = self.stats
        return Health(
            reads_ok=stats.reads_ok,
            reads_failed=stats.reads_failed,
            last_error=stats.last_error,
            last_error_at=stats.last_error_at,
            rejected=dict(stats.rejected),
            unchanged_reads=stats.unchanged_reads,
            outbox_depth=self._outbox.depth,
            outbox_dropped=self._outbox.dropped,
            clock_ok=stats.clock_ok,
            uptime_s=round(time.monotonic() - stats.started),
            interval_s=self.config.interval,
            sensor=self.config.sensor_name,
            version=VERSION,
            refused=stats.refused,
            refused_count=stats.refused_count,
        )

    def bridge_refused(self, refusal: Refusal, first_seq: int) -> None:
        """The bridge says it refused a message of this device (paho's thread calls this).

        Counted when it is one of this run's readings (`seq` from `first_seq` on); an older
        one, still retained from an earlier run, is only logged.
        """
        which = f"reading seq {refusal.seq}" if refusal.seq is not None else "a message"
        if refusal.seq is None or refusal.seq < first_seq:
            log.warning("the bridge had refused %s of an earlier run: %s: %s", which, refusal.reason, refusal.detail)
            return
        self.stats.refused = refusal
        self.stats.refused_count += 1
        hint = " (is this device's clock ahead? check NTP)" if refusal.reason == "ts_in_future" else ""
        log.error("the bridge refused %s: %s: %s%s", which, refusal.reason, refusal.detail, hint)

    def _clock_is_set(self) -> bool:
        ok = clock_plausible(self._clock())
        if ok != self.stats.clock_ok:
            if ok:
                log.info("the clock is set now (%s): taking readings", datetime.now(UTC).isoformat(timespec="seconds"))
            else:
                log.warning(
                    "the clock says %s, before this version's release (%s): not taking readings until it is set "
                    "(no real-time clock? waiting for NTP)",
                    datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="seconds"),
                    RELEASE_DATE,
                )
            self.stats.clock_ok = ok
        return ok

    def _read(self, stop: threading.Event, deadline: float) -> Measurement | None:
        """One measurement, retrying failed reads with backoff until the slot ends."""
        delay = max(RETRY_FIRST_S, self._sensor.min_interval_s)
        while True:
            try:
                measurement = self._sensor.read()
            except SensorReadError as exc:
                self.stats.failed(str(exc))
                log.warning("sensor read failed (%d so far): %s", self.stats.reads_failed, exc)
                if time.monotonic() + delay >= deadline or stop.wait(delay):
                    return None
                delay = min(delay * 2, RETRY_MAX_S)
            else:
                self.stats.reads_ok += 1
                return measurement

    def _take(self, measurement: Measurement) -> None:
        stats = self.stats
        reason = self._plausibility.check(measurement.metrics)
        if reason is not None:
            stats.rejected[reason] += 1
            log.warning("not publishing %s: %s", measurement.metrics, reason.replace("_", " "))
            return
        if measurement.metrics == self._previous:
            stats.unchanged_reads += 1
            if stats.unchanged_reads == UNCHANGED_WARN_READS:
                log.warning("the last %d reads gave identical values: is the sensor stuck?", UNCHANGED_WARN_READS)
        else:
            stats.unchanged_reads = 0
        self._previous = measurement.metrics
        config = self.config
        metrics = with_derived(measurement.metrics) if config.derived else measurement.metrics
        self._outbox.add(
            lambda seq: Reading(
                device=config.device,
                ts_us=measurement.ts_us,
                metrics=metrics,
                seq=seq,
                sensor=config.sensor_name,
                location=config.location,
            )
        )
        stats.stored += 1
        self._on_stored()
