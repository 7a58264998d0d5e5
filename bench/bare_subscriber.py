"""The baseline: a paho subscriber that only acknowledges, with the bridge's session settings.

    python bench/bare_subscriber.py PORT CLIENT_ID TOPIC_FILTER

Used by the benchmarks as a separate process, so its CPU time can be read like the bridge's.
"""

from __future__ import annotations

import sys
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    port, client_id, topic_filter = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True)

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(topic_filter, qos=1)

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        client.ack(message.mid, message.qos)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_forever()


if __name__ == "__main__":
    main()
