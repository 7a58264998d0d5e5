"""What the bridge knows of each device: online, last seen, latest values and health.

Bounded: at most `max_devices` devices are tracked (SENSORPIPE_MAX_DEVICES). Readings of a
device beyond that are still stored in InfluxDB; the device just does not appear in
`/api/devices` until the bridge restarts with a larger bound, and `/metrics` counts it. Per
device the state is small and bounded too: at most 32 latest values, tags of 64 characters,
a parsed health message (common/health.py).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from common.health import Health
from common.reading import Reading

log = logging.getLogger(__name__)

DEFAULT_MAX_DEVICES = 10_000
WARN_EVERY_S = 60.0


@dataclass
class DeviceState:
    device: str
    online: bool | None = None  # None: no status message seen yet, or it was cleared
    last_seen_ms: float | None = None
    latest: dict[str, float] = field(default_factory=dict)
    seq: int | None = None
    sensor: str | None = None
    location: str | None = None
    health: Health | None = None


def device_json(state: DeviceState) -> dict[str, Any]:
    """A device as `/api/devices` shows it (the one definition, for memory and Redis)."""
    return {
        "device": state.device,
        "online": state.online,
        "last_seen": state.last_seen_ms,
        "metrics": sorted(state.latest),
        "latest": dict(state.latest),
        "seq": state.seq,
        "sensor": state.sensor,
        "location": state.location,
        "health": state.health.as_json() if state.health else None,
    }


class DeviceRegistry:
    """Thread-safe map of device id to DeviceState, fed by the ingest loop."""

    def __init__(self, max_devices: int = DEFAULT_MAX_DEVICES) -> None:
        self.max_devices = max_devices
        self.untracked = 0  # messages of devices beyond max_devices, ever
        self._devices: dict[str, DeviceState] = {}
        self._lock = threading.Lock()
        self._last_warned = float("-inf")

    def _get(self, device: str, create: bool = True) -> DeviceState | None:
        state = self._devices.get(device)
        if state is None and create:
            if len(self._devices) >= self.max_devices:
                self._beyond_bound(device)
                return None
            state = self._devices[device] = DeviceState(device)
        return state

    def _beyond_bound(self, device: str) -> None:
        self.untracked += 1
        if time.monotonic() - self._last_warned > WARN_EVERY_S:
            self._last_warned = time.monotonic()
            log.warning(
                "already %d devices known: %r is stored but not shown (SENSORPIPE_MAX_DEVICES)",
                self.max_devices,
                device,
            )

    def saw_readings(self, readings: list[Reading]) -> None:
        """Update last seen and latest values; an older reading never overwrites a newer one."""
        with self._lock:
            for reading in readings:
                state = self._get(reading.device)
                if state is None or (state.last_seen_ms is not None and reading.ts_ms < state.last_seen_ms):
                    continue
                state.last_seen_ms = reading.ts_ms
                state.latest.update(reading.metrics)
                if len(state.latest) > 32:  # a device that changes its metric names: keep this reading's
                    state.latest = dict(reading.metrics)
                state.seq = reading.seq
                state.sensor = reading.sensor
                state.location = reading.location

    def set_online(self, device: str, online: bool | None) -> bool:
        """Record a status (None: cleared); return True when it changed."""
        with self._lock:
            state = self._get(device, create=online is not None)  # clearing makes no new device
            if state is None:
                return False
            changed = state.online != online
            state.online = online
            return changed

    def set_health(self, device: str, health: Health | None) -> None:
        """Record a health report (None: cleared)."""
        with self._lock:
            state = self._get(device, create=health is not None)
            if state is not None:
                state.health = health

    def count(self) -> int:
        """How many devices are tracked."""
        return len(self._devices)

    def names(self) -> list[str]:
        """The ids of every device tracked."""
        with self._lock:
            return list(self._devices)

    def snapshot(self, devices: list[str] | None = None) -> list[dict[str, Any]]:
        """Every device (or those of `devices` that are known) as JSON-ready dicts, sorted by id."""
        with self._lock:
            ids = sorted(self._devices if devices is None else set(devices) & self._devices.keys())
            return [device_json(self._devices[d]) for d in ids]
