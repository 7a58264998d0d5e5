"""The MQTT topic layout: `<prefix>/<device>/{reading,status,health}`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from common.reading import RejectedMessage

DEFAULT_PREFIX = "sensors"
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
Kind = Literal["reading", "status", "health"]
KINDS: tuple[Kind, ...] = ("reading", "status", "health")
STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"


def check_device_id(device: str) -> str:
    """Return `device` if it is a valid device id, else raise RejectedMessage("bad_device")."""
    if not DEVICE_ID.fullmatch(device):
        raise RejectedMessage(
            "bad_device",
            f"device id {device[:70]!r} must be 1 to 64 of A-Z a-z 0-9 _ . - starting with a letter or digit",
        )
    return device


@dataclass(frozen=True)
class Topics:
    """Topic names and subscription filters under one prefix (default `sensors`)."""

    prefix: str = DEFAULT_PREFIX

    def reading(self, device: str) -> str:
        return f"{self.prefix}/{device}/reading"

    def status(self, device: str) -> str:
        return f"{self.prefix}/{device}/status"

    def health(self, device: str) -> str:
        return f"{self.prefix}/{device}/health"

    def rejections(self, device: str) -> str:
        """Where the bridge tells a device that it refused one of its messages (retained;
        `_` cannot start a device id, so this never collides with a device's own topics)."""
        return f"{self.prefix}/_rejections/{device}"

    def alert(self, device: str, rule: str) -> str:
        """Where the bridge publishes an alert's state (retained; see docs/contract.md)."""
        return f"{self.prefix}/_alerts/{device}/{rule}"

    def filter(self, kind: Kind) -> str:
        """The subscription filter for one kind of message from every device."""
        return f"{self.prefix}/+/{kind}"

    def parse(self, topic: str) -> tuple[str, Kind]:
        """Split a received topic into (device, kind); raise RejectedMessage when it is not ours."""
        head, sep, rest = topic.partition(self.prefix + "/")
        parts = rest.split("/")
        if head or not sep or len(parts) != 2 or parts[1] not in KINDS:
            raise RejectedMessage("bad_topic", f"topic {topic[:100]!r} is not {self.prefix}/<device>/<kind>")
        kind: Kind = parts[1]  # checked against KINDS above
        return check_device_id(parts[0]), kind


def check_prefix(prefix: str) -> str:
    """Return a valid topic prefix (one or more levels, no wildcards), else raise ValueError."""
    levels = prefix.split("/")
    if not prefix or any(not level or level.strip() != level for level in levels) or any(ch in prefix for ch in "+#\0"):
        raise ValueError("must be one or more non-empty topic levels without + # or spaces at the ends")
    return prefix
