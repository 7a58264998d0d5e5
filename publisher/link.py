"""The publisher's MQTT link: sends the outbox in order at QoS 1, plus status and health.

A sender thread hands the outbox's readings to paho, oldest first, at most `WINDOW` not yet
acknowledged, and only while connected, so paho's in-memory queue stays small whatever the
length of an outage. A reading leaves the outbox only when its PUBACK arrived. If the
connection drops, paho sends its unacknowledged messages again after the reconnect, in
order, before anything newer; if the process dies, the next start sends them from the
outbox. Either way a reading may reach the broker twice, never zero times: the bridge
stores it under its own timestamp, so a second copy overwrites the first.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from common.health import Refusal, parse_refusal
from common.mqtt import disconnect, make_client
from common.reading import RejectedMessage, decode_object
from common.settings import MqttUrl
from common.topics import STATUS_OFFLINE, STATUS_ONLINE, Topics
from publisher.outbox import Outbox

log = logging.getLogger(__name__)

# Readings handed to paho and not yet acknowledged. Large enough for 1,000+ readings/s on a
# LAN (a round trip of a few ms), small enough that a reconnect resends little.
WINDOW = 1000


class ReadingLink:
    """Delivers one device's outbox, status and health; reconnects by itself with backoff."""

    def __init__(
        self,
        url: MqttUrl,
        topics: Topics,
        device: str,
        outbox: Outbox,
        on_refusal: Callable[[Refusal], None] = lambda refusal: None,
    ) -> None:
        """`on_refusal` hears the bridge's refusals of this device's messages, from the
        retained `<prefix>/_rejections/<device>` (called in paho's thread)."""
        self._topics = topics
        self._device = device
        self._outbox = outbox
        self._url = url
        self._on_refusal = on_refusal
        self._client = make_client(url, client_id=f"sensorpipe-pub-{device}", persistent=False)
        self._client.will_set(topics.status(device), STATUS_OFFLINE, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._connect_failing = False  # said once per outage, not on every retry
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        # Filled by paho's thread, emptied by the sender thread: a deque needs no lock, and a
        # lock shared with paho's callbacks can deadlock (it holds its own while calling them).
        self._acked_mids: deque[int] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sender = threading.Thread(target=self._send_loop, name="outbox-sender", daemon=True)
        self.connected = False

    def start(self) -> None:
        """Connect in the background (the first connection is retried like any other)."""
        self._client.connect_async(self._url.host, self._url.port, keepalive=30)
        self._client.loop_start()
        self._sender.start()

    def notify(self) -> None:
        """A reading was added to the outbox: send it now rather than at the next poll."""
        self._wake.set()

    def publish_retained(self, topic: str, payload: dict[str, Any] | str | bytes) -> None:
        """Publish a retained QoS 1 message (health, discovery) if connected; skip it otherwise.

        These say how things are now: one sent during an outage would be stale on arrival.
        """
        if not self.connected:
            return
        body = payload if isinstance(payload, (str, bytes)) else json.dumps(payload, separators=(",", ":"))
        self._client.publish(topic, body, qos=1, retain=True)

    def wait_drained(self, timeout: float) -> bool:
        """Wait until the broker acknowledged everything in the outbox; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._outbox.depth:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending, say `offline` (retained), disconnect. The outbox keeps what is left."""
        self._stop.set()
        self._wake.set()
        self._sender.join()
        if self.connected:
            info = self._client.publish(self._topics.status(self._device), STATUS_OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:  # lost the connection meanwhile: the will says it
                log.warning("could not publish the offline status: %s", exc)
        disconnect(self._client)

    # --- the sender thread ----------------------------------------------------------------

    def _send_loop(self) -> None:
        topic = self._topics.reading(self._device)
        in_flight: dict[int, int] = {}  # paho mid -> seq
        last_sent = -1  # the outbox is read after this seq
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            acked = []
            while self._acked_mids:
                seq = in_flight.pop(self._acked_mids.popleft(), None)
                if seq is not None:  # None: a status or health message
                    acked.append(seq)
            try:
                self._outbox.remove(acked)
                room = WINDOW - len(in_flight)
                if not self.connected or room <= 0:
                    continue
                entries = self._outbox.after(last_sent, room)
            except Exception:  # the sender must outlive a full disk; the readings stay in the outbox
                log.exception("outbox error; retrying in 1 s")
                time.sleep(1.0)
                continue
            for entry in entries:
                info = self._client.publish(topic, entry.payload, qos=1)
                in_flight[info.mid] = entry.seq
                last_sent = entry.seq
            if len(entries) == room:
                self._wake.set()  # there may be more to read once acks make room

    # --- paho callbacks (paho's thread; they must not raise) -------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("broker %s refused the connection: %s", self._url, reason)
            return
        self._connect_failing = False
        log.info("connected to %s as device %s; %d readings in the outbox", self._url, self._device, self._outbox.depth)
        client.publish(self._topics.status(self._device), STATUS_ONLINE, qos=1, retain=True)
        client.subscribe(self._topics.rejections(self._device), qos=1)
        self.connected = True
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        """No connection at all (refused, unreachable, or the TLS handshake failed: paho does
        not say which); paho tries again."""
        if not self._connect_failing:
            log.warning(
                "cannot connect to %s (refused, unreachable, or its TLS certificate not trusted); "
                "retrying, readings wait in the outbox",
                self._url,
            )
        self._connect_failing = True

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected = False
        if reason.is_failure:
            log.warning("lost the broker (%s); reconnecting, readings wait in the outbox", reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._acked_mids.append(mid)
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not message.payload:
            return  # the bridge cleared its refusal: readings are stored again
        try:
            refusal = parse_refusal(decode_object(bytes(message.payload), "bad_refusal"), "bad_refusal")
        except RejectedMessage as exc:
            log.warning("could not read the bridge's message on %s: %s", message.topic, exc.detail)
            return
        try:
            self._on_refusal(refusal)
        except Exception:  # paho's thread must survive whatever the handler does
            log.exception("handling the bridge's refusal failed")
