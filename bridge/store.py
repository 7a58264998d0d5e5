"""The store: readings waiting to be written to InfluxDB, and the writing itself.

Readings collect until a batch closes: `max_batch` of them, the oldest waiting
`write_interval_s`, half the broker's window of unacknowledged messages used (at a full one
it would send nothing more until some are acknowledged), or the broker gone quiet with a window's worth waiting (a
broker that caps the window below the bridge's Receive Maximum). Then one request writes
them all. A failed write is retried with jittered backoff until InfluxDB takes it; a batch
InfluxDB refuses (400) is split in halves until the refused readings are found. Only what
this returns as stored may be acknowledged to the broker.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Histogram

from bridge.influx import ROLLUP_RP, InfluxRejected
from bridge.rollups import Rollups
from bridge.writers import PointWriter
from common.reading import Reading

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH = 5000
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0  # a local InfluxDB back from a restart is written to within 5 s
PAUSED_WINDOW = 20  # Mosquitto's MQTT 3.1.1 window, and about what other brokers allow


class StoreMetrics:
    """What the store observes once per write (never per reading: it is the hot path)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.write_seconds = Histogram(
            "sensorpipe_influxdb_write_seconds",
            "time of one successful batch write to InfluxDB",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=registry,
        )
        self.batch_size = Histogram(
            "sensorpipe_ingest_batch_size",
            "readings per InfluxDB write",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
            registry=registry,
        )


class Stopped(Exception):
    """The bridge is stopping: what was pending stays unwritten and unacknowledged."""


@dataclass(slots=True)
class Pending(Generic[T]):
    """A reading waiting to be written: its line, the reading, what acknowledges it."""

    line: bytes
    reading: Reading
    token: T


@dataclass
class Flushed(Generic[T]):
    """What one flush did: stored, and refused for good with InfluxDB's reason."""

    stored: list[Pending[T]] = field(default_factory=list)
    refused: list[tuple[Pending[T], str]] = field(default_factory=list)


@dataclass
class StoreState:
    """For /healthz and /metrics."""

    influx_error: str | None = None
    writes: int = 0  # successful write requests
    rollups_refused: int = 0  # batches whose rollups InfluxDB refused (their readings are stored)


class InfluxStore(Generic[T]):
    """Batches readings and writes them; thread-confined to the pipeline's worker."""

    def __init__(
        self,
        writer: PointWriter,
        metrics: StoreMetrics,
        write_interval_s: float = 1.0,
        max_batch: int = MAX_BATCH,
        clock: Callable[[], float] = time.monotonic,
        rollups: Rollups | None = None,
    ) -> None:
        """`rollups`: write the rollups of each batch's buckets with it (bridge/rollups.py)."""
        self._writer = writer
        self._rollups = rollups
        self._metrics = metrics
        self._interval_s = write_interval_s
        self._max_batch = max_batch
        self._clock = clock
        self._pending: list[Pending[T]] = []
        self._oldest = 0.0  # clock time the oldest pending reading was added
        self.state = StoreState()

    def add(self, line: bytes, reading: Reading, token: T) -> None:
        """Let this reading wait for the next write."""
        if not self._pending:
            self._oldest = self._clock()
        self._pending.append(Pending(line, reading, token))

    def pending(self) -> int:
        return len(self._pending)

    def oldest_age_s(self) -> float:
        """How long the oldest waiting reading has waited (0 when none waits)."""
        return self._clock() - self._oldest if self._pending else 0.0

    def due(self, window_used: bool, paused: bool) -> bool:
        """Should the batch close now? `window_used`: enough of the broker's window is
        unacknowledged that it would soon wait; `paused`: the broker stopped sending in the
        middle of a stream (bridge/inbox.py `paused`), as when its own window is used up."""
        count = len(self._pending)
        if not count:
            return False
        return (
            count >= self._max_batch
            or self.oldest_age_s() >= self._interval_s
            or window_used
            or (count >= PAUSED_WINDOW and paused)
        )

    def time_to_due_s(self) -> float | None:
        """Seconds until the write interval closes the batch; None when nothing waits."""
        if not self._pending:
            return None
        return max(0.0, self._interval_s - self.oldest_age_s())

    def flush(self, stop: threading.Event, on_retry: Callable[[], None] = lambda: None) -> Flushed[T]:
        """Write everything pending; retry until InfluxDB takes it.

        Raises Stopped when `stop` is set while retrying (then it all stays pending).
        `on_retry` runs before each wait (the inbox sends the acknowledgements it holds).
        """
        batch = self._pending
        lines = [p.line for p in batch]
        delay = BACKOFF_MIN_S
        while True:
            try:
                started = time.perf_counter()
                refused = self._write_with_rollups(batch, lines)
                self._metrics.write_seconds.observe(time.perf_counter() - started)
                self._metrics.batch_size.observe(len(lines))
                break
            except Exception as exc:  # anything but a refusal is "not stored yet": retried
                on_retry()
                if self.state.influx_error is None:
                    log.error("InfluxDB write failed, retrying with backoff: %s", exc)
                self.state.influx_error = str(exc)[:300] or type(exc).__name__
                if "database" in str(exc) and "not found" in str(exc):
                    try:
                        self._writer.ensure_database()
                    except Exception as create_error:  # retried with the next attempt
                        log.error("cannot create the database: %s", create_error)
                # Jitter: several bridges that lost InfluxDB together do not come back in step.
                if stop.wait(delay * random.uniform(0.5, 1.0)):
                    raise Stopped from None
                delay = min(delay * 2, BACKOFF_MAX_S)
        self._pending = []
        self.state.writes += 1
        done: Flushed[T] = Flushed()
        for index, pending in enumerate(batch):
            if index in refused:
                done.refused.append((pending, refused[index]))
            else:
                done.stored.append(pending)
        return done

    def _write_with_rollups(self, batch: list[Pending[T]], lines: list[bytes]) -> dict[int, str]:
        """Write the batch, then the rollups of its buckets (to their own retention policy);
        the refused lines. A refused reading is left out of the rollups."""
        rollups = self._rollups if self._rollups is not None and self._writer.reads_back() else None
        prepared = rollups.prepare([p.reading for p in batch]) if rollups is not None else None
        refused = self._write_isolating(lines, list(range(len(lines))))
        if rollups is None or prepared is None:
            return refused
        if refused:
            prepared = rollups.prepare([p.reading for i, p in enumerate(batch) if i not in refused])
        try:
            if prepared.lines:
                self._writer.write(prepared.lines, rp=ROLLUP_RP)
        except InfluxRejected as exc:  # a rollup measurement someone wrote other types to
            self.state.rollups_refused += 1
            log.error("InfluxDB refused the rollups of a batch (%s); its readings are stored", exc)
            return refused
        prepared.commit()
        return refused

    def _write_isolating(self, lines: list[bytes], indexes: list[int]) -> dict[int, str]:
        """Write; on a 400, split the batch to find the lines InfluxDB refuses for good."""
        try:
            self._writer.write([lines[i] for i in indexes])
        except InfluxRejected as exc:
            if len(indexes) == 1:
                return {indexes[0]: str(exc)}
            middle = len(indexes) // 2
            return self._write_isolating(lines, indexes[:middle]) | self._write_isolating(lines, indexes[middle:])
        if self.state.influx_error is not None:
            log.info("InfluxDB writes work again")
            self.state.influx_error = None
        return {}
