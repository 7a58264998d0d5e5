"""The ingest loop: MQTT messages in, validated, stored in InfluxDB, then acknowledged.

No reading is lost: the bridge keeps a persistent MQTT session under a fixed client id and
acknowledges a QoS 1 message only after InfluxDB accepted it (or after it was rejected for
good). A message not acknowledged when the bridge dies or the link drops comes back from
the broker; since every point is written with the reading's own timestamp, storing it
again overwrites the same point instead of adding a second one.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from bridge.devices import DeviceRegistry
from bridge.influx import InfluxRejected, InfluxUnavailable
from bridge.lineprotocol import to_line
from bridge.metrics import IngestMetrics
from bridge.rejections import RejectionLog
from bridge.writers import PointWriter
from common.reading import Reading, RejectedMessage, now_us, parse_reading
from common.topics import STATUS_OFFLINE, STATUS_ONLINE, Topics

log = logging.getLogger(__name__)

MAX_BATCH = 500
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0  # a local InfluxDB back from a restart is written to within 5 s


class Sink(Protocol):
    """Where stored readings, status changes and health reports go besides InfluxDB (the browsers)."""

    def readings(self, readings: Sequence[Reading]) -> None: ...

    def status(self, device: str, online: bool) -> None: ...

    def health(self, device: str, health: dict[str, Any]) -> None: ...


@dataclass(slots=True)
class Incoming:
    """A received message with what is needed to acknowledge it later."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool
    generation: int  # which connection it came on: acks are only valid on that one
    received_us: int


@dataclass
class IngestState:
    """Connection and storage state, for `/healthz` and `/metrics`."""

    mqtt_connected: bool = False
    mqtt_error: str | None = "not connected yet"
    influx_error: str | None = None
    received: int = 0
    stored: int = 0
    redelivered: int = 0


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
    ) -> None:
        """`linger_s`: after the first message of a batch, wait this long for more unless a
        full batch is already waiting. A write, an ack round and a broadcast cost about the
        same for one reading as for fifty, so this trades a few ms of latency for CPU.
        `share_group`: take readings through the MQTT shared subscription
        `$share/<group>/...`, so that several bridges split them; status and health are read
        by every bridge."""
        self._client = client
        self._topics = topics
        self._writer = writer
        self._measurement = measurement
        self._devices = devices
        self._rejections = rejections
        self._sinks = list(sinks)
        self._metrics = metrics
        self._linger_s = linger_s
        readings = topics.filter("reading")
        self._share_filter = f"$share/{share_group}/{readings}" if share_group else None
        self._last_message = 0.0  # monotonic time of the last message paho handed over
        self._subscriptions = [
            (self._share_filter or readings, 1),
            (topics.filter("status"), 1),
            (topics.filter("health"), 1),
        ]
        self._in_hand = 0  # taken from the queue, not yet acknowledged
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
        self._queue.put(
            Incoming(
                message.topic,
                bytes(message.payload),
                message.mid,
                message.qos,
                bool(message.dup),
                self._generation,
                now_us(),
            )
        )

    # --- the worker thread -------------------------------------------------------------

    def unacknowledged(self) -> int:
        """Messages received from the broker and not yet acknowledged."""
        return self._queue.qsize() + self._in_hand + len(self._ack_ready)

    def start(self) -> None:
        """Start the worker; the caller connects the client (connect_async + loop_start)."""
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

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
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
            try:
                self._handle(batch)
            except Exception:  # the loop must outlive any bug in one batch; it is not acked
                log.exception(
                    "unexpected error handling a batch of %d; not acknowledged, the broker sends it "
                    "again after the next reconnect",
                    len(batch),
                )
            self._in_hand = 0
        self._flush_acks()

    def _handle(self, batch: list[Incoming]) -> None:
        readings: list[Reading] = []
        stored_msgs: list[Incoming] = []
        done: list[Incoming] = []  # status, health and rejected messages: nothing to write
        for item in batch:
            self.state.received += 1
            self.state.redelivered += item.dup
            try:
                device, kind = self._topics.parse(item.topic)
                if kind == "reading":
                    readings.append(parse_reading(device, item.payload, item.received_us))
                    stored_msgs.append(item)
                    continue
                if kind == "status":
                    self._handle_status(device, item.payload)
                else:
                    self._handle_health(device, item.payload)
            except RejectedMessage as error:
                self._rejections.add(item.topic, item.payload, error)
            done.append(item)
        if readings:
            refused = self._store(readings)
            kept = []
            for index, (reading, item) in enumerate(zip(readings, stored_msgs, strict=True)):
                if index in refused:
                    self._rejections.add(item.topic, item.payload, RejectedMessage("influx_refused", refused[index]))
                else:
                    kept.append(reading)
            self.state.stored += len(kept)
            self._devices.saw_readings(kept)
            self._tell_sinks(lambda sink: sink.readings(kept))
        self._ack(done + stored_msgs)

    def _handle_status(self, device: str, payload: bytes) -> None:
        text = payload.decode("utf-8", errors="replace").strip()
        if text not in (STATUS_ONLINE, STATUS_OFFLINE):
            if not text:  # an empty retained message clears the status: not an error
                return
            raise RejectedMessage("bad_status", f"status must be {STATUS_ONLINE} or {STATUS_OFFLINE}")
        online = text == STATUS_ONLINE
        if self._devices.set_online(device, online):
            self._tell_sinks(lambda sink: sink.status(device, online))

    def _handle_health(self, device: str, payload: bytes) -> None:
        if not payload:
            return
        try:
            health = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RejectedMessage("bad_health", f"health is not JSON: {exc}") from None
        if not isinstance(health, dict) or len(payload) > 16 * 1024:
            raise RejectedMessage("bad_health", "health must be a JSON object of at most 16 KiB")
        self._devices.set_health(device, health)
        self._tell_sinks(lambda sink: sink.health(device, health))

    def _tell_sinks(self, call: Callable[[Sink], None]) -> None:
        for sink in self._sinks:
            try:
                call(sink)
            except Exception:  # a failing sink must not hold back storage or acks
                log.exception("sink %r failed", sink)

    def _store(self, readings: list[Reading]) -> dict[int, str]:
        """Write until InfluxDB accepts; return {index: why} of readings it refused for good."""
        lines = [to_line(r, self._measurement) for r in readings]
        delay = BACKOFF_MIN_S
        while True:
            try:
                started = time.perf_counter()
                refused = self._write_isolating(lines, list(range(len(lines))))
                self._metrics.write_seconds.observe(time.perf_counter() - started)
                self._metrics.batch_size.observe(len(lines))
                return refused
            except InfluxUnavailable as exc:
                self._flush_acks()  # what earlier batches stored must not wait for this one
                if self.state.influx_error is None:
                    log.error("InfluxDB write failed, retrying with backoff: %s", exc)
                self.state.influx_error = str(exc)
                if "database" in str(exc) and "not found" in str(exc):
                    try:
                        self._writer.ensure_database()
                    except (InfluxUnavailable, InfluxRejected) as create_error:
                        log.error("cannot create the database: %s", create_error)
                if self._stop.wait(delay):
                    raise  # stopping: the batch stays unacknowledged and comes back
                delay = min(delay * 2, BACKOFF_MAX_S)

    def _write_isolating(self, lines: list[str], indexes: list[int]) -> dict[int, str]:
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
