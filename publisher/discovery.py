"""Home Assistant MQTT discovery: retained config messages that create one entity per metric.

Home Assistant reads `<ha_prefix>/sensor/<node id>/<object id>/config` and then follows the
device's own reading topic; availability comes from the retained status topic and its will.
The node id is the device id (with `.` as `_`, which Home Assistant does not allow there), so
the broker's ACL can let each device write its own configs only
(`pattern write homeassistant/sensor/%u/#`).
"""

from __future__ import annotations

from typing import Any

from common.topics import STATUS_OFFLINE, STATUS_ONLINE, Topics
from common.version import VERSION

# metric -> (Home Assistant device class, unit)
METRICS = {"temperature": ("temperature", "°C"), "humidity": ("humidity", "%")}


def discovery_messages(
    ha_prefix: str, topics: Topics, device: str, sensor: str, location: str | None
) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) per metric the sensors measure."""
    messages = []
    node_id = device.replace(".", "_")
    for metric, (device_class, unit) in METRICS.items():
        object_id = f"sensorpipe_{node_id}_{metric}"
        config: dict[str, Any] = {
            "name": metric.capitalize(),
            "unique_id": object_id,
            "object_id": object_id,
            "state_topic": topics.reading(device),
            # A reading without this metric leaves the entity as it was instead of "unknown".
            "value_template": f"{{{{ value_json.{metric} if value_json.{metric} is defined else this.state }}}}",
            "device_class": device_class,
            "unit_of_measurement": unit,
            "state_class": "measurement",
            "availability_topic": topics.status(device),
            "payload_available": STATUS_ONLINE,
            "payload_not_available": STATUS_OFFLINE,
            "device": {
                "identifiers": [f"sensorpipe_{device}"],
                "name": device,
                "model": sensor,
                "manufacturer": "sensorpipe",
                "sw_version": VERSION,
                **({"suggested_area": location} if location else {}),
            },
        }
        messages.append((f"{ha_prefix}/sensor/{node_id}/{metric}/config", config))
    return messages
