"""Home Assistant MQTT discovery: retained config messages that create one entity per metric.

Home Assistant reads `<ha_prefix>/sensor/<node id>/<object id>/config` and then follows the
device's own reading topic; availability comes from the retained status topic and its will.
The node id is the device id (with `.` as `_`, which Home Assistant does not allow there), so
the broker's ACL can let each device write its own configs only
(`pattern write homeassistant/sensor/%u/#`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.topics import STATUS_OFFLINE, STATUS_ONLINE, Topics
from common.version import VERSION
from publisher.sensors import DERIVED, DRIVERS, SensorSpec

# A driver's metric -> (Home Assistant device class, or None for none that fits; unit)
METRICS: dict[str, tuple[str | None, str]] = {
    "temperature": ("temperature", "°C"),
    "humidity": ("humidity", "%"),
    "dew_point": ("temperature", "°C"),
    "absolute_humidity": (None, "g/m³"),
    "pressure": ("atmospheric_pressure", "hPa"),
}


def discovery_messages(
    ha_prefix: str, topics: Topics, device: str, sensors: Sequence[SensorSpec], location: str | None, derived: bool
) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) per metric the sensors measure, and the derived ones when `derived`."""
    messages = []
    node_id = device.replace(".", "_")
    model = "+".join(spec.driver for spec in sensors)
    for spec in sensors:
        measured = DRIVERS[spec.driver].metrics
        bases = [*measured, *(DERIVED if derived and {"temperature", "humidity"} <= set(measured) else ())]
        for base in bases:
            messages.append(_config(ha_prefix, topics, device, node_id, model, location, spec, base))
    return messages


def _config(
    ha_prefix: str,
    topics: Topics,
    device: str,
    node_id: str,
    model: str,
    location: str | None,
    spec: SensorSpec,
    base: str,
) -> tuple[str, dict[str, Any]]:
    metric = spec.metric(base)
    device_class, unit = METRICS[base]
    object_id = f"sensorpipe_{node_id}_{metric}"
    config: dict[str, Any] = {
        "name": metric.replace("_", " ").capitalize(),
        "unique_id": object_id,
        "object_id": object_id,
        "state_topic": topics.reading(device),
        # A reading without this metric leaves the entity as it was instead of "unknown".
        "value_template": f"{{{{ value_json.{metric} if value_json.{metric} is defined else this.state }}}}",
        **({"device_class": device_class} if device_class else {}),
        "unit_of_measurement": unit,
        "state_class": "measurement",
        "availability_topic": topics.status(device),
        "payload_available": STATUS_ONLINE,
        "payload_not_available": STATUS_OFFLINE,
        "device": {
            "identifiers": [f"sensorpipe_{device}"],
            "name": device,
            "model": model,
            "manufacturer": "sensorpipe",
            "sw_version": VERSION,
            **({"suggested_area": location} if location else {}),
        },
    }
    return f"{ha_prefix}/sensor/{node_id}/{metric}/config", config
