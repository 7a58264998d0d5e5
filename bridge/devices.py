"""What the bridge knows of each device: online, last seen, latest values and health."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from common.reading import Reading


@dataclass
class DeviceState:
    device: str
    online: bool | None = None  # None: no status message seen yet
    last_seen_ms: float | None = None
    latest: dict[str, float] = field(default_factory=dict)
    seq: int | None = None
    sensor: str | None = None
    location: str | None = None
    health: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "online": self.online,
            "last_seen": self.last_seen_ms,
            "metrics": sorted(self.latest),
            "latest": dict(self.latest),
            "seq": self.seq,
            "sensor": self.sensor,
            "location": self.location,
            "health": self.health,
        }


class DeviceRegistry:
    """Thread-safe map of device id to DeviceState, fed by the ingest loop."""

    def __init__(self) -> None:
        self._devices: dict[str, DeviceState] = {}
        self._lock = threading.Lock()

    def _get(self, device: str) -> DeviceState:
        state = self._devices.get(device)
        if state is None:
            state = self._devices[device] = DeviceState(device)
        return state

    def saw_readings(self, readings: list[Reading]) -> None:
        """Update last seen and latest values; an older reading never overwrites a newer one."""
        with self._lock:
            for reading in readings:
                state = self._get(reading.device)
                if state.last_seen_ms is not None and reading.ts_ms < state.last_seen_ms:
                    continue
                state.last_seen_ms = reading.ts_ms
                state.latest.update(reading.metrics)
                state.seq = reading.seq
                state.sensor = reading.sensor
                state.location = reading.location

    def set_online(self, device: str, online: bool) -> bool:
        """Record a status; return True when it changed."""
        with self._lock:
            state = self._get(device)
            changed = state.online != online
            state.online = online
            return changed

    def set_health(self, device: str, health: dict[str, Any]) -> None:
        with self._lock:
            self._get(device).health = health

    def snapshot(self) -> list[dict[str, Any]]:
        """Every device as JSON-ready dicts, sorted by id."""
        with self._lock:
            return [self._devices[d].as_json() for d in sorted(self._devices)]
