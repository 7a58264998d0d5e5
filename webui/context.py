"""What the web app reads, as small read-side Protocols: the composition root passes in
objects that have these methods (the bridge's), never globals. The web app imports nothing
of the bridge; history answers in JSON-ready form and fails with the web app's own errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from webui.audit import AuditLog


class HistoryUnavailable(Exception):
    """The store of history cannot answer now (503): the message says why."""


class HistoryFailed(Exception):
    """The store refused a query the web app made (500): a bug; the bridge's log has details."""


class DevicesView(Protocol):
    def snapshot(self, devices: list[str] | None = None) -> list[dict[str, Any]]:
        """Every device (or those of `devices` that are known), JSON-ready, sorted by id."""
        ...


class RejectionsView(Protocol):
    def counts(self) -> dict[str, int]: ...

    def latest(self) -> list[dict[str, object]]: ...


class HistoryView(Protocol):
    def series(self, device: str, metric: str, start_us: int, end_us: int, points: int) -> dict[str, Any]:
        """One metric of one device, as /api/history answers; raises HistoryUnavailable or HistoryFailed."""
        ...

    def sparklines(self, devices: list[str], start_us: int, end_us: int, points: int) -> dict[str, Any]:
        """Every metric of several devices, as /api/sparklines answers; raises as series()."""
        ...


class ReportsView(Protocol):
    def device(
        self,
        device: str,
        day_starts_us: list[int],
        end_us: int,
        interval_s: float | None,
        thresholds: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """One device's report numbers (bridge/reports.py), JSON-ready; `thresholds`: dicts
        of rule, metric, kind (above, below) and level. Raises as HistoryView.series()."""
        ...


class AlertRuleError(ValueError):
    """A rule the alerts refuse (400): the message names the rule and the key."""


class AlertConflict(ValueError):
    """An alert or rule change that cannot be made in the current state (409)."""


class AlertsUnavailable(RuntimeError):
    """The alerts cannot do it now (503): with several bridges, none leads the alerts."""


class AlertsView(Protocol):
    """The alerts (bridge/alerts/service.py behind an adapter). Raise KeyError for an
    unknown id, AlertConflict, AlertRuleError or AlertsUnavailable as they say."""

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert not ok, in the contract's form."""
        ...

    def history(self, since_us: int, device: str | None = None) -> list[dict[str, Any]]:
        """Every change found since then (of `device`'s alerts only, if given), newest first."""
        ...

    def acknowledge(self, alert_id: str, by: str, comment: str) -> dict[str, Any]: ...

    def rules(self, device: str | None = None) -> list[dict[str, Any]]:
        """Every rule, or those watching `device`."""
        ...

    def put_rule(self, body: dict[str, Any], create: bool) -> dict[str, Any]: ...

    def delete_rule(self, rule_id: str) -> None: ...

    def deliveries(self) -> dict[str, Any]:
        """Notifications not yet delivered, and why: {"targets", "undelivered", "errors"}."""
        ...


@dataclass(frozen=True)
class WebContext:
    """The state and readers the pages and API show."""

    devices: DevicesView
    rejections: RejectionsView
    history: HistoryView
    # () -> (healthy, details): MQTT and InfluxDB reachability, ingest progress, for /healthz.
    health: Callable[[], tuple[bool, dict[str, Any]]]
    # () -> Prometheus text exposition, for /metrics.
    metrics: Callable[[], bytes]
    # () -> totals since start (received, stored, rewritten, redelivered, rejected), for /api/pipeline.
    pipeline: Callable[[], dict[str, int]]
    alerts: AlertsView | None = None
    reports: ReportsView | None = None
    audit: AuditLog | None = None  # who changed what (webui/audit.py)
    site: str = "sensorpipe"  # the site's name, on every report
    zone: str = "UTC"  # the reports' time zone unless one is asked for
