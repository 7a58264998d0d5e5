"""The publisher's MQTT link: readings at QoS 1, a retained `online` status, `offline` as will."""

from __future__ import annotations

import logging
import time
from typing import Any

import paho.mqtt.client as mqtt

from common.mqtt import AckTracker, make_client
from common.reading import Reading, encode_reading
from common.settings import MqttUrl
from common.topics import STATUS_OFFLINE, STATUS_ONLINE, Topics

log = logging.getLogger(__name__)


class ReadingLink:
    """Publishes one device's readings and status; reconnects by itself with backoff.

    QoS 1 messages published while the broker is unreachable wait in paho's memory and go
    out after the reconnect (they are lost if this process exits before that).
    """

    def __init__(self, url: MqttUrl, topics: Topics, device: str) -> None:
        self._topics = topics
        self._device = device
        self._client = make_client(url, client_id=f"sensorpipe-pub-{device}", persistent=False)
        # Paho's queue is unbounded by default: keep it that way, nothing is dropped.
        self._client.will_set(topics.status(device), STATUS_OFFLINE, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._acks = AckTracker()
        self._client.on_publish = self._acks.on_publish
        self._url = url

    def start(self) -> None:
        """Connect in the background; the first connection is retried like any other."""
        self._client.connect_async(self._url.host, self._url.port, keepalive=30)
        self._client.loop_start()

    def publish(self, reading: Reading) -> None:
        """Queue one reading for delivery at QoS 1 (call from one thread)."""
        info = self._client.publish(self._topics.reading(self._device), encode_reading(reading), qos=1)
        self._acks.sent(info.mid)

    def unacked(self) -> int:
        """Readings published but not yet acknowledged by the broker."""
        return self._acks.unacked()

    def wait_all_acked(self, timeout: float) -> bool:
        """Wait until the broker acknowledged every reading; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.unacked():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Say `offline` (retained), then disconnect cleanly."""
        info = self._client.publish(self._topics.status(self._device), STATUS_OFFLINE, qos=1, retain=True)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:  # not connected: the will says offline instead
            log.warning("could not publish the offline status: %s", exc)
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("broker %s refused the connection: %s", self._url, reason)
            return
        log.info("connected to %s as device %s", self._url, self._device)
        client.publish(self._topics.status(self._device), STATUS_ONLINE, qos=1, retain=True)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("lost the broker (%s); reconnecting, readings wait in memory", reason)
