"""The router: one raw MQTT message in, one typed outcome out, and never an exception.

A reading becomes a `Reading` with its line protocol already encoded (so a reading that
cannot be encoded is refused here, alone, not when its whole batch is written); a status
or health message becomes what it says; anything else becomes a `Refused` with a reason.
Whatever goes wrong while reading one message is that message's rejection: a batch is
never held hostage by one member.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from bridge.lineprotocol import to_line
from common.health import Health, parse_health
from common.reading import Reading, RejectedMessage, parse_reading
from common.topics import STATUS_OFFLINE, STATUS_ONLINE, Kind, Topics

log = logging.getLogger(__name__)

LOG_BUG_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class ToStore:
    """A valid reading and its line of line protocol, UTF-8."""

    reading: Reading
    line: bytes


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A device's retained status: online, offline, or None when the retained one was cleared."""

    device: str
    online: bool | None


@dataclass(frozen=True, slots=True)
class HealthReport:
    """A device's retained health, or None when the retained one was cleared."""

    device: str
    health: Health | None


@dataclass(frozen=True, slots=True)
class Refused:
    """A message that will never be stored; `device` and `kind` when its topic showed them."""

    error: RejectedMessage
    device: str | None = None
    kind: Kind | None = None


@dataclass(frozen=True, slots=True)
class Ignored:
    """One of the bridge's own messages (`<prefix>/_rejections/reading` matches the reading
    filter when a device is called `reading`): acknowledged, neither stored nor refused."""


Routed = ToStore | StatusChange | HealthReport | Refused | Ignored


class Router:
    """Turns `<prefix>/<device>/<kind>` messages into typed outcomes."""

    def __init__(self, topics: Topics, measurement: str) -> None:
        self._topics = topics
        self._measurement = measurement
        # The bridge's own word to a device, `<prefix>/_rejections/<device>`, matches the reading
        # filter when the device is called `reading`. Other `_` levels are a bad device id.
        self._own = topics.rejections("")
        self._last_bug_logged = float("-inf")

    def route(self, topic: str, payload: bytes, retained: bool, received_us: int) -> Routed:
        """What this message is. Never raises."""
        device: str | None = None
        kind: Kind | None = None
        if topic.startswith(self._own):
            return Ignored()
        try:
            device, kind = self._topics.parse(topic)
            if kind == "reading":
                if retained:
                    # A reading is an event, not a state: a retained one would come again on
                    # every reconnect (and without a ts be stored again each time).
                    raise RejectedMessage("retained", "readings must not be published retained")
                reading = parse_reading(device, payload, received_us)
                return ToStore(reading, to_line(reading, self._measurement).encode("utf-8"))
            if kind == "status":
                return StatusChange(device, parse_status(payload))
            return HealthReport(device, parse_health(payload))
        except RejectedMessage as error:
            return Refused(error, device, kind)
        except Exception as exc:  # a bug of ours: that message is refused, the batch goes on
            if time.monotonic() - self._last_bug_logged > LOG_BUG_EVERY_S:
                self._last_bug_logged = time.monotonic()
                log.exception("could not read a message on %r; refused as unreadable", topic[:100])
            detail = f"the bridge failed to read it ({type(exc).__name__}); please report this"
            return Refused(RejectedMessage("unreadable", detail), device, kind)


def parse_status(payload: bytes) -> bool | None:
    """True for `online`, False for `offline`, None for an empty (cleared) retained message."""
    text = payload.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    if text not in (STATUS_ONLINE, STATUS_OFFLINE):
        raise RejectedMessage("bad_status", f"status must be {STATUS_ONLINE} or {STATUS_OFFLINE}")
    return text == STATUS_ONLINE
