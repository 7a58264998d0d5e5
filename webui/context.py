"""What the web app reads from the bridge: passed in by the composition root, never global."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.devices import DeviceRegistry
from bridge.history import HistoryReader
from bridge.rejections import RejectionLog


@dataclass(frozen=True)
class WebContext:
    """The bridge's state and readers the pages and API show."""

    devices: DeviceRegistry
    rejections: RejectionLog
    history: HistoryReader
    # () -> (healthy, details): MQTT and InfluxDB reachability, for /healthz.
    health: Callable[[], tuple[bool, dict[str, Any]]]
    # () -> Prometheus text exposition, for /metrics.
    metrics: Callable[[], bytes]
    # () -> totals since start (received, stored, redelivered, rejected), for /api/pipeline.
    pipeline: Callable[[], dict[str, int]]
