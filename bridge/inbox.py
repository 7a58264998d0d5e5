"""The MQTT inbox: the bridge's one MQTT connection, its session and its acknowledgements.

A persistent session under a fixed client id, so the broker queues readings while the
bridge is away: MQTT 3.1.1 with clean_session false, or MQTT 5 with clean_start false and a
session that never expires. The broker sends at most a window of QoS 1 messages before the
bridge acknowledges some: for MQTT 5 the bridge's Receive Maximum (Mosquitto 2.0 takes it
from the client), for 3.1.1 the broker's `max_inflight_messages` (1,000 in our config, 20 at
Mosquitto's default), which `window` should then be told. Messages are acknowledged by hand,
only when the pipeline says they are done (stored, or refused for good). paho's network
thread only queues what arrives: it never blocks and never raises.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from common.mqtt import disconnect
from common.reading import now_us
from common.settings import MqttUrl
from common.topics import Topics

log = logging.getLogger(__name__)

SESSION_NEVER_EXPIRES = 0xFFFFFFFF  # MQTT 5: the broker keeps the session until it is taken up again
QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux
QUICKACK_EVERY_S = 0.001  # set it again after a gap this long (see _ack_tcp_now)
PAUSE_MIN_S = 0.005  # the broker paused: no message for this long, and ...
PAUSE_GAPS = 5  # ... for five times the usual gap between messages
GAPS_KEPT = 16  # the usual gap: the median of the last 16 (one hiccup does not move it)
# A PUBACK: fixed header, remaining length 2, the packet id. The same four bytes in MQTT 3.1.1
# and 5 (in 5, a remaining length of 2 means reason code Success and no properties).
PUBACK_HEAD = bytes((PUBACK, 2))


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
class InboxState:
    """The connection, for /healthz and /metrics."""

    connected: bool = False
    error: str | None = "not connected yet"
    received: int = 0
    redelivered: int = 0


class MqttInbox:
    """Subscribes `<prefix>/+/{reading,status,health}` and hands the messages over in order."""

    def __init__(
        self,
        client: mqtt.Client,
        url: MqttUrl,
        topics: Topics,
        share_group: str | None = None,
        window: int = 1000,
        v5: bool = False,
    ) -> None:
        """`client`: a paho client with manual acknowledgements, for MQTT 5 when `v5`, else
        persistent 3.1.1 (common.mqtt.make_client). `window`: the Receive Maximum asked for
        (MQTT 5), or the broker's window (3.1.1). `share_group`: take readings through the
        shared subscription `$share/<group>/...`, so that several bridges split them; status
        and health go to every bridge."""
        self._client = client
        self._url = url
        self._v5 = v5
        self.window = window
        readings = topics.filter("reading")
        self._share_filter = f"$share/{share_group}/{readings}" if share_group else None
        self._subscriptions = [
            (self._share_filter or readings, 1),
            (topics.filter("status"), 1),
            (topics.filter("health"), 1),
        ]
        # SimpleQueue: C-implemented, several times faster per message than queue.Queue.
        self._queue: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
        # Unacknowledged = delivered - acked on this connection. `_delivered` is written by
        # paho's thread alone, `_acked` under the ack lock: no lock per message.
        self._delivered = 0
        self._acked = 0
        self._generation = 0
        self._ack_lock = threading.Lock()
        self._ack_ready: deque[Incoming] = deque()
        self._last_message = 0.0
        # The last gaps between messages (paho's thread appends): their median is the usual gap.
        self._gaps: deque[float] = deque(maxlen=GAPS_KEPT)
        self._acked_at = 0.0  # when acknowledgements were last sent
        self._stopping = False
        self.state = InboxState()
        self._connect_failing = False  # said once per outage, not on every retry
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; the first connection is retried like any other."""
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho has no annotation here
            properties.SessionExpiryInterval = SESSION_NEVER_EXPIRES
            properties.ReceiveMaximum = self.window
            # clean_start=False on every connect, the first included: paho's default starts the
            # first one clean, which throws away what the broker queued while the bridge was down.
            self._client.connect_async(
                self._url.host, self._url.port, keepalive=30, clean_start=False, properties=properties
            )
        else:
            self._client.connect_async(self._url.host, self._url.port, keepalive=30)
        self._client.loop_start()

    def leave_group(self, deadline: float) -> None:
        """With a share group: unsubscribe from the shared readings, then wait until what the
        broker had already queued for this session has arrived (nothing for half a second),
        so that a stopped bridge holds no share of the readings."""
        if not self._share_filter or not self.state.connected:
            return
        self._client.unsubscribe(self._share_filter)
        log.info("left %s: new readings go to the other bridges", self._share_filter)
        while time.monotonic() < deadline:
            if time.monotonic() - self._last_message > 0.5:
                return
            time.sleep(0.05)
        log.warning("stopping with readings still arriving; the broker keeps them for this session")

    def stop(self) -> None:
        """Send what acknowledgements are ready and disconnect; the rest stays with the broker."""
        self._stopping = True
        self.flush_acks()
        disconnect(self._client)

    # --- the pipeline's side --------------------------------------------------------------

    def take(self, timeout: float, most: int) -> list[Incoming]:
        """What has arrived, oldest first, at most `most`; waits up to `timeout` for the first."""
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        taken = [first]
        while len(taken) < most:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self.state.received += len(taken)
        self.state.redelivered += sum(item.dup for item in taken)
        return taken

    def ack(self, items: Iterable[Incoming]) -> None:
        """Acknowledge these messages: from paho's own thread when more keep arriving (an ack
        from another thread wakes paho's network loop once per packet), else right here."""
        self._ack_ready.extend(items)
        if self._queue.empty():
            self.flush_acks()

    def unacknowledged(self) -> int:
        """Messages the broker sent on this connection and the bridge has not acknowledged."""
        return self._delivered - self._acked

    def waiting(self) -> int:
        """Messages arrived and not yet taken by the pipeline."""
        return self._queue.qsize()

    def idle_s(self) -> float:
        """Seconds since the last message arrived."""
        return time.monotonic() - self._last_message

    def paused(self) -> bool:
        """The broker stopped sending in the middle of a stream: nothing for five times the
        usual gap between messages (the median of the last 16, at least 5 ms; gaps that ended
        after an acknowledgement do not count as usual). That is what a broker does whose
        window of unacknowledged messages is used up (20 at Mosquitto's default, whatever the
        bridge was told): writing now lets it go on. Readings that simply arrive seldom (25 a
        second, 40 ms apart) are not a pause: they wait for the write interval."""
        return self.pause_in_s() == 0

    def pause_in_s(self) -> float:
        """Seconds until `paused` becomes true if nothing arrives (0: it is)."""
        gaps = sorted(tuple(self._gaps))  # one C call: paho's thread cannot append meanwhile
        usual = gaps[len(gaps) // 2] if gaps else 1.0
        return max(0.0, max(PAUSE_MIN_S, PAUSE_GAPS * usual) - self.idle_s())

    def window_half_used(self) -> bool:
        """Half the broker's window is unacknowledged: writing now keeps the other half
        flowing meanwhile (at a full window the broker would send nothing during the write)."""
        return self._delivered - self._acked >= max(1, self.window // 2)

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """A retained QoS 1 message from the bridge (its word to a device)."""
        self._client.publish(topic, payload, qos=1, retain=True)

    # --- paho's network thread: never raise, never block ------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.state.error = f"broker refused the connection: {reason}"
            log.error("%s", self.state.error)
            return
        with self._ack_lock:
            self._generation += 1
            self._delivered = self._acked = 0  # what was unacknowledged comes again, counted anew
        self.state.connected, self.state.error = True, None
        self._connect_failing = False
        log.info("connected to the broker (session present: %s)", flags.session_present)
        # Subscribe on every connect: also after a broker lost its state.
        client.subscribe(self._subscriptions)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        """No connection at all (refused, unreachable, or the TLS handshake failed: paho does
        not say which); paho tries again."""
        self.state.error = f"cannot connect to the broker at {self._url}"
        if not self._connect_failing:
            log.error("%s (refused, unreachable, or its TLS certificate not trusted); retrying", self.state.error)
        self._connect_failing = True

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        with self._ack_lock:
            self._generation += 1  # what is still unacknowledged will come again
        self.state.connected = False
        self.state.error = f"disconnected from the broker: {reason}"
        if not self._stopping:
            log.warning("%s; reconnecting", self.state.error)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        gap = now - self._last_message
        if gap > QUICKACK_EVERY_S:  # a backlog flows without: skip the syscall
            self._ack_tcp_now(client)
        if self._acked_at <= self._last_message:
            # A gap that ended after an acknowledgement may be the broker waiting for it (its
            # window used up): that is the pause to detect, not the stream's usual gap.
            self._gaps.append(gap)
        self._last_message = now
        if self._ack_ready:
            self.flush_acks()
        try:
            topic = message.topic
        except UnicodeDecodeError:  # the broker should refuse such a topic; the router will
            topic = message._topic.decode("utf-8", errors="replace")
        self._delivered += message.qos > 0
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

    @staticmethod
    def _ack_tcp_now(client: mqtt.Client) -> None:
        """Acknowledge the broker's TCP segments at once. The bridge sends its MQTT
        acknowledgements only after a write (up to a second later), so nothing else goes
        back for the kernel's delayed ACK to ride on; and a broker with Nagle's algorithm on
        (Mosquitto's default, `set_tcp_nodelay false`) holds each small PUBLISH until the
        previous one is acknowledged: readings came in bursts 20-40 ms late. Linux resets
        the flag after a while, so it is set again on every message."""
        setsockopt = getattr(client.socket(), "setsockopt", None)
        if QUICKACK is not None and setsockopt is not None:
            with contextlib.suppress(OSError):  # not a TCP socket: nothing to speed up
                setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)

    def flush_acks(self) -> None:
        """Send the acknowledgements that are ready (any thread)."""
        with self._ack_lock:
            mids = []
            while self._ack_ready:
                item = self._ack_ready.popleft()
                # An ack on a later connection could hit another message with the same
                # packet id: skip it, the broker redelivers and the rewrite is harmless.
                if item.qos == 1 and item.generation == self._generation:
                    mids.append(item.mid)
            if mids:
                self._send_pubacks(mids)
                self._acked += len(mids)
                self._acked_at = time.monotonic()

    def _send_pubacks(self, mids: list[int]) -> None:
        """The PUBACKs for these packet ids, queued as one write. paho's `ack(mid)` queues
        each on its own and writes a byte to its wake-up socket pair for each (a system call
        and a wake-up of its network loop per message, about 5 % of the bridge's CPU while it
        drains a backlog). paho 2.2's `_packet_queue` is private: the version is pinned, and
        tests/test_pipeline.py shows what is acknowledged is not sent again."""
        packet = b"".join(PUBACK_HEAD + mid.to_bytes(2, "big") for mid in mids)
        self._client._packet_queue(PUBACK, packet, mids[-1], 1)
