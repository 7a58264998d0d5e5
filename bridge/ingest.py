"""The ingest loop: MQTT messages in, validated, stored in InfluxDB, then acknowledged.

No reading is lost: the bridge keeps a persistent MQTT session under a fixed client id and
acknowledges a QoS 1 message only after InfluxDB accepted it (or after it was rejected for
good). A message not acknowledged when the bridge dies or the link drops comes back from
the broker; since every point is written with the reading's own timestamp, storing it
again overwrites the same point instead of adding a second one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from bridge.devices import DeviceRegistry
from bridge.influx import InfluxRejected
from bridge.metrics import IngestMetrics
from bridge.refusals import RefusalNotifier
from bridge.rejections import RejectionLog
from bridge.router import HealthReport, Refused, Router, StatusChange, ToStore
from bridge.writers import PointWriter
from common.health import Health
from common.reading import Reading, RejectedMessage, now_us
from common.topics import Kind, Topics

log = logging.getLogger(__name__)

MAX_BATCH = 500
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0  # a local InfluxDB back from a restart is written to within 5 s
RECENT_POINTS = 20_000  # (device, ts) of the latest stored readings, to count a rewrite once
FAILING_AFTER = 3  # the same batch failing this often in a row makes /healthz 503


class Sink(Protocol):
    """Where stored readings, status changes and health reports go besides InfluxDB (the browsers)."""

    def readings(self, readings: Sequence[Reading]) -> None: ...

    def status(self, device: str, online: bool | None) -> None: ...

    def health(self, device: str, health: Health | None) -> None: ...


@dataclass(slots=True)
class Incoming:
    """A received message with what is needed to acknowledge it later."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool
    retain: bool
    generation: int  # which connection it came on: acks are only valid on that one
    received_us: int


@dataclass
class IngestState:
    """Connection and storage state, for `/healthz` and `/metrics`."""

    mqtt_connected: bool = False
    mqtt_error: str | None = "not connected yet"
    influx_error: str | None = None
    received: int = 0
    stored: int = 0  # readings stored, each once: a rewrite of a point just stored is not counted
    rewritten: int = 0  # readings that came again (broker redelivery, outbox resend) and were written again
    redelivered: int = 0
    batch_failures: int = 0  # batches that failed for a reason of the bridge's own, ever
    failing: str | None = None  # why the batch at hand keeps failing, while it does


class Ingest:
    """Consumes `<prefix>/+/{reading,status,health}` and stores readings in InfluxDB."""

    def __init__(
        self,
        client: mqtt.Client,
        topics: Topics,
        writer: PointWriter,
        measurement: str,
        devices: DeviceRegistry,
        rejections: RejectionLog,
        metrics: IngestMetrics,
        sinks: Sequence[Sink] = (),
        linger_s: float = 0.005,
        share_group: str | None = None,
        stall_after_s: float = 60.0,
    ) -> None:
        """`linger_s`: after the first message of a batch, wait this long for more unless a
        full batch is already waiting. A write, an ack round and a broadcast cost about the
        same for one reading as for fifty, so this trades a few ms of latency for CPU.
        `share_group`: take readings through the MQTT shared subscription
        `$share/<group>/...`, so that several bridges split them; status and health are read
        by every bridge. `stall_after_s`: messages waiting this long without a batch
        finishing make `stalled()` say so (and /healthz 503)."""
        self._client = client
        self._router = Router(topics, measurement)
        self._writer = writer
        self._devices = devices
        self._rejections = rejections
        self._refusals = RefusalNotifier(topics, self._publish_retained)
        self._sinks = list(sinks)
        self._metrics = metrics
        self._linger_s = linger_s
        self._stall_after_s = stall_after_s
        readings = topics.filter("reading")
        self._share_filter = f"$share/{share_group}/{readings}" if share_group else None
        self._last_message = 0.0  # monotonic time of the last message paho handed over
        self._subscriptions = [
            (self._share_filter or readings, 1),
            (topics.filter("status"), 1),
            (topics.filter("health"), 1),
        ]
        self._in_hand = 0  # taken from the queue, not yet acknowledged
        self._batch_taken: float | None = None  # monotonic time the batch at hand was taken
        self._last_progress = time.monotonic()  # a batch finished (or the worker started)
        self._recent: OrderedDict[int, None] = OrderedDict()  # hash((device, ts_us)), oldest first
        # SimpleQueue: C-implemented, several times faster per message than queue.Queue.
        self._queue: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._generation = 0
        self._ack_lock = threading.Lock()
        self._ack_ready: deque[Incoming] = deque()
        self.state = IngestState()
        self._worker = threading.Thread(target=self._work, name="ingest", daemon=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message

    # --- paho's network thread: never raise, never block ------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.state.mqtt_error = f"broker refused the connection: {reason}"
            log.error("%s", self.state.mqtt_error)
            return
        with self._ack_lock:
            self._generation += 1
        self.state.mqtt_connected, self.state.mqtt_error = True, None
        log.info("connected to the broker (session present: %s)", flags.session_present)
        # Subscribe on every connect: also after a broker lost its state.
        client.subscribe(self._subscriptions)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._ack_lock:
            self._generation += 1  # what is still unacknowledged will come again
        self.state.mqtt_connected = False
        self.state.mqtt_error = f"disconnected from the broker: {reason}"
        if not self._stop.is_set():
            log.warning("%s; reconnecting", self.state.mqtt_error)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._last_message = time.monotonic()
        if self._ack_ready:
            self._flush_acks()
        try:
            topic = message.topic
        except UnicodeDecodeError:  # the broker should refuse such a topic; the router will
            topic = message._topic.decode("utf-8", errors="replace")
        self._queue.put(
            Incoming(
                topic,
                bytes(message.payload),
                message.mid,
                message.qos,
                bool(message.dup),
                bool(message.retain),
                self._generation,
                now_us(),
            )
        )

    def _publish_retained(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1, retain=True)

    # --- what /healthz and /metrics read --------------------------------------------------

    def unacknowledged(self) -> int:
        """Messages received from the broker and not yet acknowledged."""
        return self._queue.qsize() + self._in_hand + len(self._ack_ready)

    def waiting_s(self) -> float:
        """How long messages have waited without a batch finishing (0 when none wait)."""
        if self._batch_taken is not None:
            return time.monotonic() - self._batch_taken
        if self._queue.qsize():
            return time.monotonic() - self._last_progress
        return 0.0

    def stalled(self) -> str | None:
        """Why ingest is stuck, or None while it makes progress (or has nothing to do)."""
        if self._worker.ident is not None and not self._worker.is_alive() and not self._stop.is_set():
            return "the ingest worker has stopped"
        if self.state.failing is not None:
            return f"the same batch failed {self.state.failing}"
        waited = self.waiting_s()
        if waited > self._stall_after_s:
            return f"{self.unacknowledged()} messages not acknowledged, no batch finished for {waited:.0f} s"
        return None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker; the caller connects the client (connect_async + loop_start)."""
        self._last_progress = time.monotonic()
        self._worker.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch at hand and stop; unacknowledged messages stay with the broker.

        With a share group, leave it first: otherwise the broker would go on dealing this
        bridge's share to its stopped session, where it waits until the bridge returns.
        """
        if self._share_filter and self.state.mqtt_connected:
            self._leave_group(self._share_filter, deadline=time.monotonic() + timeout / 2)
        self._stop.set()
        self._worker.join(timeout)

    def _leave_group(self, share_filter: str, deadline: float) -> None:
        """Unsubscribe from the shared readings, then take in what the broker had already
        queued for this session, until nothing has arrived for half a second."""
        self._client.unsubscribe(share_filter)
        log.info("left %s: new readings go to the other bridges", share_filter)
        while time.monotonic() < deadline:
            idle = time.monotonic() - self._last_message > 0.5
            if idle and self._queue.empty() and not self._in_hand:
                return
            time.sleep(0.05)
        log.warning("stopping with readings still arriving; the broker keeps them for this session")

    # --- the worker thread -------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._batch_taken = time.monotonic()
            if self._queue.qsize() < MAX_BATCH - 1:
                # Wake once per batch, not once per message: at a steady few hundred
                # readings a second, the wake-ups cost more than the readings themselves.
                time.sleep(self._linger_s)
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._in_hand = len(batch)
            self.state.received += len(batch)
            self.state.redelivered += sum(item.dup for item in batch)
            self._handle_until_done(batch)
            self._in_hand = 0
            self._batch_taken = None
            self._last_progress = time.monotonic()
        self._flush_acks()

    def _handle_until_done(self, batch: list[Incoming]) -> None:
        """Handle the batch; should that fail for a reason of the bridge's own, try the same
        batch again with backoff (never drop it: it is not acknowledged), and say so."""
        delay = BACKOFF_MIN_S
        failures = 0
        while True:
            try:
                self._handle(batch)
                self.state.failing = None
                return
            except Exception as exc:  # the loop must outlive any bug in one batch
                if self._stop.is_set():
                    return  # stopping mid-write: the batch stays unacknowledged and comes back
                failures += 1
                self.state.batch_failures += 1
                if failures == 1:
                    log.exception("unexpected error handling a batch of %d; retrying it", len(batch))
                if failures >= FAILING_AFTER:
                    self.state.failing = f"{failures} times in a row: {type(exc).__name__}: {str(exc)[:200]}"
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, BACKOFF_MAX_S)

    def _handle(self, batch: list[Incoming]) -> None:
        stored: list[ToStore] = []
        stored_msgs: list[Incoming] = []
        done: list[Incoming] = []  # status, health and rejected messages: nothing to write
        for item in batch:
            routed = self._router.route(item.topic, item.payload, item.retain, item.received_us)
            if isinstance(routed, ToStore):
                stored.append(routed)
                stored_msgs.append(item)
                continue
            done.append(item)
            if isinstance(routed, Refused):
                self._reject(item, routed.error, routed.device, routed.kind)
            elif isinstance(routed, StatusChange):
                self._apply_status(routed)
            elif isinstance(routed, HealthReport):
                self._apply_health(routed)
        if stored:
            refused = self._store([s.line for s in stored])
            kept = []
            for index, (routed, item) in enumerate(zip(stored, stored_msgs, strict=True)):
                if index in refused:
                    error = RejectedMessage("influx_refused", refused[index], routed.reading.seq)
                    self._reject(item, error, routed.reading.device, "reading")
                else:
                    kept.append(routed.reading)
            self._count_stored(kept)
            self._tell("device registry", partial(self._devices.saw_readings, kept))
            self._tell("refusals", partial(self._refusals.stored, kept))
            for sink in self._sinks:
                self._tell(repr(sink), partial(sink.readings, kept))
        self._ack(done + stored_msgs)

    def _reject(self, item: Incoming, error: RejectedMessage, device: str | None, kind: Kind | None) -> None:
        self._tell("rejection log", partial(self._rejections.add, item.topic, item.payload, error))
        if device is not None:
            self._tell("refusals", partial(self._refusals.refused, device, kind, error))

    def _apply_status(self, change: StatusChange) -> None:
        try:
            changed = self._devices.set_online(change.device, change.online)
        except Exception:  # best effort, as every sink
            log.exception("device registry failed")
            changed = True
        if changed:
            for sink in self._sinks:
                self._tell(repr(sink), partial(sink.status, change.device, change.online))

    def _apply_health(self, report: HealthReport) -> None:
        self._tell("device registry", partial(self._devices.set_health, report.device, report.health))
        for sink in self._sinks:
            self._tell(repr(sink), partial(sink.health, report.device, report.health))

    def _count_stored(self, readings: list[Reading]) -> None:
        """`stored` counts readings, not writes: one written again (the broker redelivered it,
        or a publisher resent it from its outbox) while still among the recent ones counts as
        `rewritten`."""
        recent = self._recent
        for reading in readings:
            key = hash((reading.device, reading.ts_us))
            if key in recent:
                self.state.rewritten += 1
            else:
                self.state.stored += 1
                recent[key] = None
        while len(recent) > RECENT_POINTS:
            recent.popitem(last=False)

    def _tell(self, what: str, call: Callable[[], object]) -> None:
        """Run one best-effort duty: a failure is logged, and storage and acks go on."""
        try:
            call()
        except Exception:  # a failing sink must not hold back storage or acks
            log.exception("%s failed", what)

    def _store(self, lines: list[bytes]) -> dict[int, str]:
        """Write until InfluxDB accepts; return {index: why} of lines it refused for good.

        Anything but a refusal (InfluxRejected) counts as "not stored yet": an unreachable
        server, a 5xx, and also an error of the writer's own are retried with backoff, and
        nothing is acknowledged meanwhile.
        """
        delay = BACKOFF_MIN_S
        while True:
            try:
                started = time.perf_counter()
                refused = self._write_isolating(lines, list(range(len(lines))))
                self._metrics.write_seconds.observe(time.perf_counter() - started)
                self._metrics.batch_size.observe(len(lines))
                return refused
            except Exception as exc:
                self._flush_acks()  # what earlier batches stored must not wait for this one
                if self.state.influx_error is None:
                    log.error("InfluxDB write failed, retrying with backoff: %s", exc)
                self.state.influx_error = str(exc)[:300] or type(exc).__name__
                if "database" in str(exc) and "not found" in str(exc):
                    try:
                        self._writer.ensure_database()
                    except Exception as create_error:  # retried with the next attempt
                        log.error("cannot create the database: %s", create_error)
                if self._stop.wait(delay):
                    raise  # stopping: the batch stays unacknowledged and comes back
                delay = min(delay * 2, BACKOFF_MAX_S)

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

    def _ack(self, items: list[Incoming]) -> None:
        """Acknowledge handled messages: from paho's own thread when messages keep coming
        (an ack from another thread wakes paho's network loop once per packet), else here."""
        self._ack_ready.extend(items)
        if self._queue.empty():
            self._flush_acks()

    def _flush_acks(self) -> None:
        with self._ack_lock:
            items = []
            while self._ack_ready:
                items.append(self._ack_ready.popleft())
            for item in items:
                # An ack on a later connection could hit another message with the same
                # packet id: skip it, the broker redelivers and the rewrite is harmless.
                if item.qos == 1 and item.generation == self._generation:
                    self._client.ack(item.mid, item.qos)
