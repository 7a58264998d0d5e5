"""The pipeline: inbox -> router -> (sinks, store) -> acknowledgements, on one worker thread.

No reading is lost: a message is acknowledged to the broker only once it is stored in
InfluxDB or refused for good. What is valid goes to the live sinks at once (browsers see a
reading within milliseconds); the store writes in batches (bridge/store.py), and each
batch's messages are acknowledged after its write. A message not acknowledged when the
bridge dies or the link drops comes back from the broker; since every point carries the
reading's own timestamp, storing it again overwrites the same point.

    MqttInbox --> Router --> ToStore ------> InfluxStore --(stored)--> StoredSinks, acks
                     |          +----------> AcceptedSinks (device state, browsers, totals)
                     +-> Status/Health ----> device state, StatusSinks/HealthSinks, ack
                     +-> Refused ----------> RefusedSinks (rejection log, the device), ack
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bridge.devices import DeviceRegistry
from bridge.inbox import Incoming, MqttInbox
from bridge.router import HealthReport, Ignored, Refused, Router, StatusChange, ToStore
from bridge.sinks import AcceptedSink, HealthSink, RefusedSink, StatusSink, StoredSink
from bridge.store import PAUSED_WINDOW, InfluxStore, Stopped
from common.reading import Reading, RejectedMessage

log = logging.getLogger(__name__)

MAX_CHUNK = 1000  # messages routed per turn of the loop
# Valid readings go to the live sinks at most this long after they arrive, together: at a
# few hundred readings a second, one Socket.IO frame per reading costs the browsers more than
# the 10 ms.
LIVE_EVERY_S = 0.01
S = TypeVar("S")


@dataclass
class PipelineState:
    """What goes wrong inside the pipeline itself, for /healthz and /metrics."""

    failures: int = 0  # messages whose handling failed for a reason of the bridge's own, ever
    failing: str | None = None  # the latest such failure: those messages stay unacknowledged


class Pipeline:
    """Runs the stages; `stalled()` says when it is stuck."""

    def __init__(
        self,
        inbox: MqttInbox,
        router: Router,
        store: InfluxStore[Incoming],
        devices: DeviceRegistry,
        sinks: Sequence[object],
        stall_after_s: float = 60.0,
    ) -> None:
        """`sinks`: objects with any of the sink Protocols' methods (bridge/sinks.py).
        `stall_after_s`: messages waiting this long without progress make `stalled()` say so."""
        self._inbox = inbox
        self._router = router
        self._store = store
        self._devices = devices
        # Which sinks take which news, looked at once.
        self._accepted = [sink for sink in sinks if isinstance(sink, AcceptedSink)]
        self._stored = [sink for sink in sinks if isinstance(sink, StoredSink)]
        self._status = [sink for sink in sinks if isinstance(sink, StatusSink)]
        self._health = [sink for sink in sinks if isinstance(sink, HealthSink)]
        self._refused = [sink for sink in sinks if isinstance(sink, RefusedSink)]
        self._stall_after_s = stall_after_s
        self._draining = threading.Event()  # stop taking turns: drain what arrived, write it
        self._stop = threading.Event()  # stop retrying a write too
        self._last_take = time.monotonic()
        self._flushing_since: float | None = None
        self._live: list[Reading] = []  # accepted, not yet told to the AcceptedSinks
        self._live_since = 0.0  # when the oldest of them arrived
        self.state = PipelineState()
        self._worker = threading.Thread(target=self._work, name="pipeline", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._last_take = time.monotonic()
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write and acknowledge what has arrived, then stop. With a share group, leave it
        first. What cannot be written in time stays unacknowledged and comes back."""
        deadline = time.monotonic() + timeout
        self._inbox.leave_group(deadline=time.monotonic() + timeout / 2)
        self._draining.set()
        self._worker.join(max(0.1, deadline - time.monotonic()))
        self._stop.set()
        self._worker.join(5)

    # --- what /healthz and /metrics read --------------------------------------------------

    def waiting_s(self) -> float:
        """How long messages have waited without progress (0 while none waits or all moves):
        a write retried for that long, arrived messages not taken, or a batch older than its
        write interval that was not written."""
        now = time.monotonic()
        waits = [0.0]
        if self._flushing_since is not None:
            waits.append(now - self._flushing_since)
        if self._inbox.waiting():
            waits.append(now - self._last_take)
        return max(waits)

    def stalled(self) -> str | None:
        """Why ingest is stuck, or None while it makes progress (or has nothing to do)."""
        if self._worker.ident is not None and not self._worker.is_alive() and not self._draining.is_set():
            return "the pipeline's worker has stopped"
        if self.state.failing is not None:
            return f"handling a message failed ({self.state.failing}); it stays unacknowledged"
        waited = self.waiting_s()
        if waited > self._stall_after_s:
            return f"{self._inbox.unacknowledged()} messages not acknowledged, no progress for {waited:.0f} s"
        return None

    # --- the worker ------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while not self._draining.is_set():
                if self._live:
                    # Gather what arrives until the live readings are due: one wake-up for
                    # them all, not one per message (each costs more than routing it). Not
                    # while messages wait already (a backlog): those are taken at once.
                    if not self._inbox.waiting():
                        self._draining.wait(max(0.0, self._live_since + LIVE_EVERY_S - time.monotonic()))
                    items = self._inbox.take(timeout=0, most=MAX_CHUNK)
                else:
                    # Wake when the write interval closes the batch, or when the broker's
                    # pause would (nothing else wakes this loop while no message comes).
                    due = self._store.time_to_due_s()
                    waits = [0.2] if due is None else [0.2, due]
                    if self._store.pending() >= PAUSED_WINDOW:
                        waits.append(self._inbox.pause_in_s())
                    items = self._inbox.take(timeout=min(waits), most=MAX_CHUNK)
                if items:
                    self._last_take = time.monotonic()
                    self._handle(items)
                if self._live and (time.monotonic() - self._live_since >= LIVE_EVERY_S or len(self._live) >= MAX_CHUNK):
                    self._tell_live()
                if self._store.due(self._inbox.window_half_used(), self._inbox.paused()):
                    self._tell_live()  # before the write: the browsers do not wait for InfluxDB
                    self._flush()
            # Stopping: what has arrived is routed and written, so it is acknowledged on
            # this connection (and a share of the readings is not left with this session).
            while items := self._inbox.take(timeout=0, most=MAX_CHUNK):
                self._handle(items)
            self._tell_live()
            if self._store.pending():
                self._flush()
        except Stopped:
            log.warning("stopped while writing; %d readings stay unacknowledged", self._store.pending())
        self._inbox.flush_acks()

    def _handle(self, items: list[Incoming]) -> None:
        accepted: list[Reading] = []
        done: list[Incoming] = []  # status, health, refused: acknowledged now
        for item in items:
            try:
                routed = self._router.route(item.topic, item.payload, item.retain, item.received_us)
                if isinstance(routed, ToStore):
                    self._store.add(routed.line, routed.reading, item)
                    accepted.append(routed.reading)
                    continue
                if isinstance(routed, Refused):
                    self._refuse(routed, item)
                elif isinstance(routed, StatusChange):
                    self._apply_status(routed)
                elif isinstance(routed, HealthReport):
                    self._apply_health(routed)
                else:
                    assert isinstance(routed, Ignored)
                done.append(item)
            except Exception as exc:  # never with a working router; the message stays unacked
                self.state.failures += 1
                self.state.failing = f"{type(exc).__name__} on {item.topic[:100]!r}"
                log.exception("handling a message on %r failed; it stays unacknowledged", item.topic[:100])
        if accepted:
            if not self._live:
                self._live_since = time.monotonic()
            self._live.extend(accepted)
        self._inbox.ack(done)

    def _tell_live(self) -> None:
        """The valid readings gathered so far, to the device state and the AcceptedSinks."""
        if not self._live:
            return
        accepted, self._live = self._live, []
        self._best_effort("device state", lambda: self._devices.saw_readings(accepted))
        self._tell(self._accepted, lambda sink: sink.accepted(accepted))

    def _flush(self) -> None:
        self._flushing_since = time.monotonic()
        try:
            flushed = self._store.flush(self._stop, on_retry=self._inbox.flush_acks)
        finally:
            self._flushing_since = None
        for pending, why in flushed.refused:
            error = RejectedMessage("influx_refused", why, pending.reading.seq)
            self._refuse(Refused(error, pending.reading.device, "reading"), pending.token)
        stored = [pending.reading for pending in flushed.stored]
        if stored:
            self._tell(self._stored, lambda sink: sink.stored(stored))
        self._inbox.ack([p.token for p in flushed.stored] + [p.token for p, _ in flushed.refused])

    def _refuse(self, refusal: Refused, item: Incoming) -> None:
        self._tell(self._refused, lambda sink: sink.refused(refusal, item.topic, item.payload))

    def _apply_status(self, change: StatusChange) -> None:
        try:
            changed = self._devices.set_online(change.device, change.online)
        except Exception:  # best effort: tell the browsers anyway
            log.exception("device state failed")
            changed = True
        if changed:
            self._tell(self._status, lambda sink: sink.status(change.device, change.online))

    def _apply_health(self, report: HealthReport) -> None:
        self._best_effort("device state", lambda: self._devices.set_health(report.device, report.health))
        self._tell(self._health, lambda sink: sink.health(report.device, report.health))

    @staticmethod
    def _tell(sinks: list[S], call: Callable[[S], object]) -> None:
        for sink in sinks:
            try:
                call(sink)
            except Exception:  # a failing sink must not hold back storage or acks
                log.exception("sink %r failed", sink)

    @staticmethod
    def _best_effort(what: str, call: Callable[[], object]) -> None:
        try:
            call()
        except Exception:  # a failing sink must not hold back storage or acks
            log.exception("%s failed", what)
