"""Building a paho MQTT client the way both programs need it (credentials, TLS, backoff)."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common.settings import MqttUrl

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 10
MAX_INFLIGHT = 100  # QoS 1 messages a client has sent and not had acknowledged (paho's default: 20)

log = logging.getLogger("paho")


class _CallbackErrorsOnly(logging.Filter):
    """Of paho's own log lines, only the exceptions it caught in a callback: the rest is its
    connection chatter (an ERROR "Client is not connected" on a clean stop, for one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return str(record.msg).startswith("Caught exception")


log.addFilter(_CallbackErrorsOnly())


def make_client(
    url: MqttUrl, client_id: str, *, persistent: bool = False, manual_ack: bool = False, v5: bool = False
) -> mqtt.Client:
    """A paho client (callback API 2) configured for `url`, not yet connected.

    MQTT 3.1.1, or MQTT 5 with `v5` (then the session is the connect's business: clean_start
    and SessionExpiryInterval, see bridge/inbox.py). `persistent` (3.1.1) keeps the broker
    session (subscriptions and queued QoS 1 messages) across disconnects and restarts; it
    needs a fixed `client_id`.
    """
    if v5:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack
        )
    else:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not persistent,
            protocol=mqtt.MQTTv311,
            manual_ack=manual_ack,
        )
    if url.username is not None:
        client.username_pw_set(url.username, url.password.reveal() if url.password else None)
    if url.tls:
        client.tls_set()
    client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    # An exception escaping a callback would kill paho's network thread while
    # is_connected() stays True. Our callbacks catch their own; this is the net below them
    # (paho then logs it as an error through `log`).
    client.suppress_exceptions = True
    client.enable_logger(log)
    # paho keeps outgoing QoS 1 messages in memory and by default allows 20 in flight.
    client.max_inflight_messages_set(MAX_INFLIGHT)
    return client


class AckTracker:
    """Counts QoS 1 messages the broker has not acknowledged yet.

    `sent(mid)` and `unacked()` are called from one thread (the publishing one);
    `on_publish` is paho's callback and only appends to a deque. No lock is shared with
    paho: it holds its own while calling on_publish, so a lock taken there and around
    `publish()` deadlocks. A message published while disconnected stays queued in paho
    (its info says MQTT_ERR_NO_CONN and `is_published()` raises), so mids are tracked here.
    """

    def __init__(self) -> None:
        self._acked: deque[int] = deque()
        self._pending: set[int] = set()

    def on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._acked.append(mid)

    def sent(self, mid: int) -> None:
        """Record a message handed to paho's publish()."""
        self._pending.add(mid)

    def unacked(self) -> int:
        """How many recorded messages still wait for the broker's acknowledgement."""
        while self._acked:
            self._pending.discard(self._acked.popleft())
        return len(self._pending)


def disconnect(client: mqtt.Client) -> None:
    """Disconnect cleanly and wait for the network thread of `loop_start()` to end.

    paho 2.2's `loop_stop()` raises AttributeError when that thread ends between its check
    and its join, which a `disconnect()` just before makes it do at any moment
    (eclipse-paho/paho.mqtt.python#872, open): a publisher ended its run with that traceback.
    """
    client.disconnect()
    try:
        client.loop_stop()
    except AttributeError:
        log.debug("paho's network thread had ended already (paho #872)")
