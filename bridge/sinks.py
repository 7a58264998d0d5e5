"""What the pipeline tells its best-effort sinks, one small Protocol per kind of news.

A sink implements the methods of the news it wants; the pipeline looks once, at start,
which Protocols each sink satisfies. A sink that raises is logged and changes nothing for
storage or acknowledgements. Adding a sink is one new file and one line in the composition
root (bridge/__main__.py): the device state, the live broadcast (webui/live.py), the totals,
the rejection log and the refusal notifier are sinks; alerts and rollups will be.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from bridge.router import Refused
from common.health import Health
from common.reading import Reading


@runtime_checkable
class AcceptedSink(Protocol):
    """Valid readings, as soon as the router has them (before they are stored): what is
    live. One call per chunk of messages, readings in arrival order."""

    def accepted(self, readings: Sequence[Reading]) -> None: ...


@runtime_checkable
class StoredSink(Protocol):
    """Readings InfluxDB has taken: what history holds."""

    def stored(self, readings: Sequence[Reading]) -> None: ...


@runtime_checkable
class StatusSink(Protocol):
    """A device's status changed (None: the retained status was cleared)."""

    def status(self, device: str, online: bool | None) -> None: ...


@runtime_checkable
class HealthSink(Protocol):
    """A device's health report arrived (None: the retained one was cleared)."""

    def health(self, device: str, health: Health | None) -> None: ...


@runtime_checkable
class RefusedSink(Protocol):
    """A message was refused for good, with its reason."""

    def refused(self, refusal: Refused, topic: str, payload: bytes) -> None: ...
