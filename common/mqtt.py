"""Building a paho MQTT client the way both programs need it (credentials, TLS, backoff)."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from common.settings import MqttUrl

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30


def make_client(url: MqttUrl, client_id: str, *, persistent: bool, manual_ack: bool = False) -> mqtt.Client:
    """A paho client (MQTT 3.1.1, callback API 2) configured for `url`, not yet connected.

    `persistent` keeps the broker session (subscriptions and queued QoS 1 messages) across
    disconnects and restarts; it needs a fixed `client_id`.
    """
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=not persistent,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    if url.username is not None:
        client.username_pw_set(url.username, url.password)
    if url.tls:
        client.tls_set()
    client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    # paho keeps outgoing QoS 1 messages in memory and by default allows 20 in flight.
    client.max_inflight_messages_set(100)
    return client
