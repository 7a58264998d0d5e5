"""Telling a device that the bridge refused its messages: `<prefix>/_rejections/<device>`.

A publisher whose readings are refused (its clock is ahead, say) would otherwise count them
as delivered: the broker acknowledged them. The bridge publishes its latest refusal of a
device's message there, retained, and clears it (an empty retained message) once a reading
of that device is stored again. The publisher subscribes to its own topic (publisher/link.py).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from bridge.router import Refused
from common.health import Refusal
from common.reading import Reading, RejectedMessage
from common.topics import Kind, Topics

REPEAT_AFTER_S = 5.0  # the same reason for the same device is published again at most this often
MAX_DEVICES = 10_000  # devices with a refusal outstanding that are remembered (then the oldest go)


class RefusalNotifier:
    """Publishes refusals per device, throttled, and clears them when readings are stored."""

    def __init__(self, topics: Topics, publish: Callable[[str, bytes], None], clock: Callable[[], float] = time.time):
        """`publish(topic, payload)` sends a retained QoS 1 message."""
        self._topics = topics
        self._publish = publish
        self._clock = clock
        # device -> (reason, monotonic time published); oldest first, at most MAX_DEVICES
        self._outstanding: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def refused(self, refusal: Refused, topic: str, payload: bytes) -> None:
        """Say that a message of a device was refused, unless the same was said just now
        (a message whose topic names no valid device is nobody's to tell)."""
        if refusal.device is not None:
            self.tell(refusal.device, refusal.kind, refusal.error)

    def tell(self, device: str, kind: Kind | None, error: RejectedMessage) -> None:
        """Publish `device`'s refusal (throttled)."""
        now = time.monotonic()
        last = self._outstanding.get(device)
        if last is not None and last[0] == error.reason and now - last[1] < REPEAT_AFTER_S:
            return
        refusal = Refusal(error.reason, error.detail[:500], self._clock() * 1000, error.seq)
        payload = json.dumps({**refusal.as_json(), "kind": kind}, separators=(",", ":"))
        self._publish(self._topics.rejections(device), payload.encode())
        self._outstanding[device] = (error.reason, now)
        self._outstanding.move_to_end(device)
        while len(self._outstanding) > MAX_DEVICES:
            self._outstanding.popitem(last=False)

    def stored(self, readings: Iterable[Reading]) -> None:
        """These readings were stored: clear their devices' outstanding refusals."""
        if not self._outstanding:  # nearly always: nothing to look at
            return
        for device in {reading.device for reading in readings}:
            if self._outstanding.pop(device, None) is not None:
                self._publish(self._topics.rejections(device), b"")
