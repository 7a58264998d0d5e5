"""The publisher's loop: read the sensors on a fixed schedule, judge, store in the outbox.

Nothing here talks MQTT: a reading's way out is the outbox, and the link sends it from
there. Each slot reads every sensor, retries those whose read failed while the slot lasts,
and stores one reading with what the sensors gave (publisher/channel.py judges each). What
the loop sees (the clock, what was stored, the bridge's refusals) it counts in
`SamplerStats`; with the sensors' own counts it goes out as the device's health.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from common.health import Calibration, Health, Refusal
from common.reading import Reading
from common.version import RELEASE_DATE, VERSION
from publisher.channel import Channel
from publisher.outbox import Outbox
from publisher.sensors import Measurement, SensorReadError

log = logging.getLogger(__name__)

EARLIEST_PLAUSIBLE_S = datetime(RELEASE_DATE.year, RELEASE_DATE.month, RELEASE_DATE.day, tzinfo=UTC).timestamp()
RETRY_FIRST_S = 0.5  # a failed read is tried again after this (at least the sensor's own minimum) ...
RETRY_MAX_S = 30.0  # ... doubling up to this, while the reading's slot lasts


def clock_plausible(now_s: float) -> bool:
    """False while the clock says a time before this version was released (an unset Pi clock)."""
    return now_s >= EARLIEST_PLAUSIBLE_S


@dataclass
class SamplerStats:
    """What the loop has seen since this process started (the sensors count their own reads)."""

    started: float = field(default_factory=time.monotonic)
    clock_ok: bool = True
    stored: int = 0
    refused: Refusal | None = None  # the bridge's latest refusal of one of this run's readings
    refused_count: int = 0  # refusals of this run's readings the bridge reported


@dataclass(frozen=True)
class SamplerConfig:
    device: str
    sensor_name: str  # the reading's `sensor` tag: the driver, or the drivers joined by +
    interval: float
    location: str | None
    count: int  # stop after this many readings are stored; 0: never


class Sampler:
    """Reads the `channels`' sensors every `interval` and adds each reading to `outbox`;
    `calibration` is what health says is in force."""

    def __init__(
        self,
        config: SamplerConfig,
        channels: Sequence[Channel],
        outbox: Outbox,
        on_stored: Callable[[], None],
        clock: Callable[[], float] = time.time,
        calibration: Mapping[str, Calibration] | None = None,
    ) -> None:
        self.config = config
        self.stats = SamplerStats()
        self.channels = list(channels)
        self._outbox = outbox
        self._on_stored = on_stored
        self._clock = clock
        self._calibration = dict(calibration or {})
        self._unexpected: set[tuple[str, str]] = set()  # (sensor, exception type) logged with a traceback

    def run(self, stop: threading.Event, every_slot: Callable[[], None] = lambda: None) -> None:
        """Sample until `stop` is set or `count` readings are stored; `every_slot` runs after each."""
        config = self.config
        next_at = time.monotonic()
        while not stop.is_set() and not (config.count and self.stats.stored >= config.count):
            next_at += config.interval  # a fixed schedule: a slow read does not stretch it
            if self._clock_is_set():
                measured = self._read(stop, deadline=next_at)
                if measured:
                    self._take(measured)
            every_slot()
            stop.wait(max(0.0, next_at - time.monotonic()))

    def health(self) -> Health:
        """The retained health message (contract: `<prefix>/<device>/health`): the sensors'
        counts added up, and each sensor's own."""
        stats = self.stats
        sensors = {channel.spec.key: channel.health() for channel in self.channels}
        latest = max(sensors.values(), key=lambda sensor: sensor.last_error_at or "")
        rejected: Counter[str] = Counter()
        for sensor in sensors.values():
            rejected.update(sensor.rejected)
        return Health(
            reads_ok=sum(sensor.reads_ok for sensor in sensors.values()),
            reads_failed=sum(sensor.reads_failed for sensor in sensors.values()),
            last_error=latest.last_error,
            last_error_at=latest.last_error_at,
            rejected=dict(rejected),
            unchanged_reads=max(sensor.unchanged_reads or 0 for sensor in sensors.values()),
            outbox_depth=self._outbox.depth,
            outbox_dropped=self._outbox.dropped,
            clock_ok=stats.clock_ok,
            uptime_s=round(time.monotonic() - stats.started),
            interval_s=self.config.interval,
            sensor=self.config.sensor_name,
            version=VERSION,
            refused=stats.refused,
            refused_count=stats.refused_count,
            sensors=sensors,
            calibration=self._calibration,
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

    def _read(self, stop: threading.Event, deadline: float) -> list[tuple[Channel, Measurement]]:
        """Every sensor's measurement this slot: a failed read is retried with backoff (each
        sensor on its own) while the slot lasts; a sensor still failing then is left out."""
        measured: list[tuple[Channel, Measurement]] = []
        now = time.monotonic()
        # channel -> (when to try next, the wait after a failure there)
        tries = {channel: (now, max(RETRY_FIRST_S, channel.sensor.min_interval_s)) for channel in self.channels}
        while True:
            for channel, (at, delay) in list(tries.items()):
                if at > now:
                    continue
                try:
                    measurement = channel.sensor.read()
                except Exception as exc:  # the loop outlives any driver: see _failure
                    channel.failed(self._failure(channel, exc))
                    after = max(now, time.monotonic())
                    if after + delay >= deadline:
                        del tries[channel]
                    else:
                        tries[channel] = (after + delay, min(delay * 2, RETRY_MAX_S))
                else:
                    measured.append((channel, measurement))
                    del tries[channel]
            if not tries:
                return measured
            wake = min(at for at, _ in tries.values())
            if stop.wait(max(0.0, wake - now)):
                return measured
            now = max(time.monotonic(), wake)

    def _failure(self, channel: Channel, exc: Exception) -> str:
        """A failed read's text. A driver says SensorReadError; anything else is its library
        raising what it should not (an OSError from the GPIO library, a bad calibration's
        ArithmeticError): that too is this sensor's failed read, counted in health, and the
        loop and the other sensors go on. Its traceback is logged once per kind."""
        if isinstance(exc, SensorReadError):
            return str(exc)
        kind = (channel.spec.key, type(exc).__name__)
        if kind not in self._unexpected:
            self._unexpected.add(kind)
            log.error("%s: the driver raised %s (counted as a failed read)", channel.spec.key, kind[1], exc_info=exc)
        return f"{type(exc).__name__}: {exc}"

    def _take(self, measured: list[tuple[Channel, Measurement]]) -> None:
        """One reading from what the sensors measured, judged, corrected and named by each."""
        metrics: dict[str, float] = {}
        taken_at: list[int] = []
        for channel, measurement in measured:
            part = channel.take(measurement)
            if part:
                metrics.update(part)
                taken_at.append(measurement.ts_us)
        if not metrics:
            return
        config = self.config
        ts_us = min(taken_at)  # the slot's first measurement: the reading's one time
        self._outbox.add(
            lambda seq: Reading(
                device=config.device,
                ts_us=ts_us,
                metrics=metrics,
                seq=seq,
                sensor=config.sensor_name,
                location=config.location,
            )
        )
        self.stats.stored += 1
        self._on_stored()
