"""Live updates over Socket.IO: valid readings as they arrive, status changes and health
reports, to the browsers that want them.

Every browser starts in the room `all`, or with `{"devices": [...]}` as its connection's auth
data in one room per device; a `subscribe` event with a list of devices moves it to those
rooms later, so it receives only those.

Readings go out as soon as they are valid, while InfluxDB gets them within the write
interval: a page that loads its history in between would miss them. So the broadcaster keeps
the readings of the last `replay_s` seconds (at most REPLAY_MAX), and a `replay` event
answers with those the browser sees; merged by timestamp with history, nothing is missing
and nothing is drawn twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any

from flask import request

# Socket.IO's own ConnectionRefusedError: its message reaches the browser's connect_error
# (Python's built-in one refuses too, with a generic message).
from flask_socketio import ConnectionRefusedError, SocketIO, join_room, leave_room, rooms

from common.health import Health
from common.reading import Reading
from common.topics import DEVICE_ID
from webui.access import WebAccess

log = logging.getLogger(__name__)

ALL = "all"
MAX_SUBSCRIBED = 1000
REPLAY_MAX = 10_000  # readings kept for `replay`, the oldest go first


SUBSCRIBE_ERROR = f"devices must be a list of at most {MAX_SUBSCRIBED} device ids"


def _room(device: str) -> str:
    return f"device:{device}"


def _join(devices: list[str]) -> None:
    """Put the current browser in these devices' rooms, or in `all` for none."""
    for room in [_room(d) for d in devices] or [ALL]:
        join_room(room)


def _devices(data: Any) -> list[str] | None:
    """The device list of `{"devices": [...]}` ([] when missing: all), None when it is not one."""
    devices = data.get("devices") if isinstance(data, dict) else None
    if devices is None:
        return []
    if (
        not isinstance(devices, list)
        or len(devices) > MAX_SUBSCRIBED
        or not all(isinstance(d, str) and DEVICE_ID.fullmatch(d) for d in devices)
    ):
        return None
    return devices


def reading_json(reading: Reading) -> dict[str, Any]:
    """A reading as the browser gets it: `ts` in epoch milliseconds (fraction: microseconds)."""
    body: dict[str, Any] = {"device": reading.device, "ts": reading.ts_ms, "metrics": reading.metrics}
    if reading.seq is not None:
        body["seq"] = reading.seq
    return body


class LiveBroadcaster:
    """The Socket.IO sink of the ingest loop, and the handlers of the browser's events."""

    def __init__(self, socketio: SocketIO, web_access: WebAccess, shared: bool = False, replay_s: float = 10.0) -> None:
        """`replay_s`: how long readings are kept for `replay`: longer than the write
        interval plus a write, so that what a page's history lacks is in the replay."""
        self._socketio = socketio
        self._access = web_access
        self._shared = shared  # through a message queue: other bridges' browsers listen too
        self._replay_s = replay_s
        self._recent: deque[tuple[float, Reading]] = deque(maxlen=REPLAY_MAX)
        self._clients = 0
        self._lock = threading.Lock()
        socketio.on_event("connect", self._on_connect)
        socketio.on_event("disconnect", self._on_disconnect)
        socketio.on_event("subscribe", self._on_subscribe)
        socketio.on_event("replay", self._on_replay)

    @property
    def clients(self) -> int:
        """Browsers connected now."""
        return self._clients

    def accepted(self, readings: Sequence[Reading]) -> None:
        """Send valid readings as they arrive: all of them to `all`, each device's to its
        own room (they are written to InfluxDB within the write interval after)."""
        if not readings:
            return
        now = time.monotonic()
        with self._lock:  # kept as they are; made JSON only when a replay asks for them
            self._recent.extend((now, reading) for reading in readings)
        if not (self._clients or self._shared):
            return
        per_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for reading in readings:
            per_device[reading.device].append(reading_json(reading))
        self._socketio.emit("readings", [r for items in per_device.values() for r in items], to=ALL)
        for device, items in per_device.items():
            self._socketio.emit("readings", items, to=_room(device))

    def status(self, device: str, online: bool | None) -> None:
        """Send a device's status change (None: cleared) to those who see it."""
        self._socketio.emit("status", {"device": device, "online": online}, to=[ALL, _room(device)])

    def health(self, device: str, health: Health | None) -> None:
        """Send a publisher's health report (as /api/devices has it; None: cleared) to those
        who see the device."""
        if self._clients or self._shared:
            body = health.as_json() if health else None
            self._socketio.emit("health", {"device": device, "health": body}, to=[ALL, _room(device)])

    def alert(self, body: dict[str, Any]) -> None:
        """Send an alert's new state (docs/contract.md) to every page that shows its device."""
        if self._clients or self._shared:
            self._socketio.emit("alert", body, to=[ALL, _room(str(body["device"]))])

    def _on_connect(self, auth: Any = None) -> None:
        # The handshake is a request like any other: the same session cookie or bearer token.
        if not self._access.authorized():
            raise ConnectionRefusedError("sign in first")
        # `auth` may carry the subscription ({"devices": [...]}), so that not one reading of
        # another device arrives before a `subscribe` event could (on every reconnect too).
        devices = _devices(auth)
        if devices is None:
            raise ConnectionRefusedError(SUBSCRIBE_ERROR)
        _join(devices)
        with self._lock:
            self._clients += 1

    def _on_disconnect(self, reason: Any = None) -> None:
        with self._lock:
            self._clients -= 1

    def _on_replay(self, data: Any = None) -> list[dict[str, Any]]:
        """The readings of the last `replay_s` seconds this browser sees (its rooms)."""
        sid = request.sid  # type: ignore[attr-defined]  # set by Flask-SocketIO per event
        joined = set(rooms()) - {sid}
        everything = ALL in joined
        since = time.monotonic() - self._replay_s
        with self._lock:
            while self._recent and self._recent[0][0] < since:
                self._recent.popleft()
            recent = list(self._recent)
        return [reading_json(r) for _, r in recent if everything or _room(r.device) in joined]

    def _on_subscribe(self, data: Any) -> dict[str, Any]:
        """`{"devices": [...]}`: only these from now on; empty or missing: all devices."""
        devices = _devices(data)
        if devices is None:
            return {"ok": False, "error": SUBSCRIBE_ERROR}
        sid = request.sid  # type: ignore[attr-defined]  # set by Flask-SocketIO per event
        for room in rooms():
            if room != sid:
                leave_room(room)
        _join(devices)
        return {"ok": True, "devices": devices}
