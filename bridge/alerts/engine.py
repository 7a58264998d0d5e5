"""The alert state machine: readings and statuses in, state changes out. No I/O here.

One alert per (rule, device), in one of the states `ok`, `pending` (past the threshold, not
yet for `for`), `firing`, `acknowledged` (firing, and a person said they are on it).
Readings are judged by their own timestamp, so readings an outbox delivers after an outage
open and close alerts where they happened; such a change is marked `late`. A reading no newer
than the last one judged for an alert is skipped: a redelivery after a restart changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from bridge.alerts.rules import Rule
from common.reading import Reading

State = Literal["ok", "pending", "firing", "acknowledged"]
STATES: tuple[State, ...] = ("ok", "pending", "firing", "acknowledged")
LATE_AFTER_US = 60 * 1_000_000  # a change found this long after the reading that caused it is late
US = 1_000_000
WATCHING_MAX = 100_000


@dataclass
class Alert:
    """The alert of one rule for one device. Times are Unix microseconds."""

    rule: str
    device: str
    state: State = "ok"
    kind: str = "above"  # the rule's: above, below, no_data
    metric: str | None = None
    value: float | None = None  # the latest value judged (None for no_data)
    peak: float | None = None  # the worst value of the current excursion
    threshold: float = 0.0
    since_us: int = 0  # when the current state began, in reading time
    late: bool = False  # the last change was found more than LATE_AFTER_US after it happened
    acknowledged_by: str | None = None
    comment: str | None = None
    last_ts_us: int = 0  # the newest reading judged
    notified_us: int = 0  # wall time of the last firing notification (for `repeat`)

    @property
    def id(self) -> str:
        return f"{self.rule}:{self.device}"

    @property
    def active(self) -> bool:
        return self.state in ("firing", "acknowledged")

    def to_json(self) -> dict[str, object]:
        """The contract's form (MQTT `<prefix>/_alerts/...`, /api/alerts, Socket.IO `alert`)."""
        return {
            "id": self.id,
            "rule": self.rule,
            "device": self.device,
            "state": self.state,
            "kind": self.kind,
            "metric": self.metric,
            "value": self.value,
            "peak": self.peak,
            "threshold": self.threshold,
            "since": self.since_us / 1000,
            "late": self.late,
            "acknowledged_by": self.acknowledged_by,
            "comment": self.comment,
        }

    @classmethod
    def from_json(cls, body: dict[str, object]) -> Alert:
        """Back from what `stored()` gave (the journal's copy)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in body.items() if k in fields})  # type: ignore[arg-type]

    def stored(self) -> dict[str, object]:
        """Everything, for the journal."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Change:
    """An alert entered a state. `at_us`: when, in reading time (wall time for an
    acknowledgement or a silence); `found_us`: when the bridge found it; `notify`: people are
    told (firing, resolved, acknowledged, a repeat), not for pending and a pending that ended."""

    alert: Alert  # a copy, as it was right after the change
    previous: State
    at_us: int
    found_us: int
    notify: bool
    repeat: bool = False
    by: str | None = None
    comment: str | None = None


class AlertEngine:
    """Holds every alert; each method returns the changes it made, oldest first."""

    def __init__(self, rules: Iterable[Rule], started_us: int, max_devices: int = 10_000) -> None:
        self._started_us = started_us
        self._max_devices = max_devices
        self._alerts: dict[tuple[str, str], Alert] = {}
        self._last_seen: dict[str, int] = {}  # device -> newest reading ts
        self._offline_since: dict[str, int] = {}
        self._rules: dict[str, Rule] = {}
        self._by_metric: dict[str, list[Rule]] = {}
        self._silence: list[Rule] = []
        # (device, metric) -> the threshold rules watching it: a reading looks up its rules
        # once per metric, not once per rule (1,000 rules are checked by a dict lookup).
        self._watching: dict[tuple[str, str], list[Rule]] = {}
        self._silent_rules: dict[str, list[Rule]] = {}  # device -> its no_data rules
        self.set_rules(rules)

    # --- rules and restored state ----------------------------------------------------------

    def set_rules(self, rules: Iterable[Rule]) -> list[Alert]:
        """Use these rules from now on; returns the alerts of rules that are gone (removed)."""
        self._rules = {rule.id: rule for rule in rules}
        self._by_metric = {}
        for rule in self._rules.values():
            if rule.kind != "no_data" and rule.metric is not None:
                self._by_metric.setdefault(rule.metric, []).append(rule)
        self._silence = [rule for rule in self._rules.values() if rule.kind == "no_data"]
        self._watching = {}
        self._silent_rules = {}
        gone = [a for key, a in self._alerts.items() if key[0] not in self._rules]
        for alert in gone:
            del self._alerts[(alert.rule, alert.device)]
        # A changed rule keeps its alerts, with the new threshold shown.
        for alert in self._alerts.values():
            rule = self._rules[alert.rule]
            alert.threshold, alert.kind = rule.threshold, rule.kind
        return gone

    def rules(self) -> list[Rule]:
        return list(self._rules.values())

    def restore(self, alerts: Iterable[Alert], last_seen: dict[str, int]) -> None:
        """The state the journal kept (of rules that still exist)."""
        for alert in alerts:
            if alert.rule in self._rules:
                self._alerts[(alert.rule, alert.device)] = alert
        for device, ts_us in last_seen.items():
            self._last_seen[device] = max(ts_us, self._last_seen.get(device, 0))

    def alerts(self) -> list[Alert]:
        return list(self._alerts.values())

    def get(self, alert_id: str) -> Alert | None:
        rule, _, device = alert_id.partition(":")
        return self._alerts.get((rule, device))

    def last_seen(self) -> dict[str, int]:
        return dict(self._last_seen)

    # --- news ------------------------------------------------------------------------------

    def readings(self, readings: Sequence[Reading], now_us: int) -> list[Change]:
        changes: list[Change] = []
        if not self._rules:  # nothing to judge: only remember when each device was heard
            self._saw(readings)
            return changes
        for reading in readings:
            device = reading.device
            seen = self._last_seen.get(device)
            if seen is None and len(self._last_seen) >= self._max_devices:
                continue  # beyond the bound (the dashboard does not show such devices either)
            if reading.ts_us > (seen or 0):
                self._last_seen[device] = reading.ts_us
            for rule in self._silence_of(device):  # the bridge hears it again: the silence is over
                alert = self._alerts.get((rule.id, device))
                if alert is not None and alert.active:
                    changes.append(self._move(alert, "ok", now_us, now_us, notify=True))
            for metric, value in reading.metrics.items():
                key = (device, metric)
                rules = self._watching.get(key)
                if rules is None:
                    if len(self._watching) >= WATCHING_MAX:
                        self._watching.clear()  # bounded: metric names are the devices' choice
                    rules = [r for r in self._by_metric.get(metric, ()) if r.watches(device)]
                    self._watching[key] = rules
                for rule in rules:
                    self._judge(rule, device, metric, value, reading.ts_us, now_us, changes)
        return changes

    def _saw(self, readings: Sequence[Reading]) -> None:
        last_seen = self._last_seen
        for reading in readings:
            seen = last_seen.get(reading.device)
            if seen is None:
                if len(last_seen) >= self._max_devices:
                    continue
                last_seen[reading.device] = reading.ts_us
            elif reading.ts_us > seen:
                last_seen[reading.device] = reading.ts_us

    def _judge(
        self, rule: Rule, device: str, metric: str, value: float, ts_us: int, now_us: int, changes: list[Change]
    ) -> None:
        alert = self._alerts.get((rule.id, device))
        if alert is None:
            if not rule.breached(value):
                return  # the common case: nothing to keep for a device that is fine
            alert = Alert(rule.id, device, kind=rule.kind, metric=metric, threshold=rule.threshold)
            self._alerts[(rule.id, device)] = alert
        if ts_us <= alert.last_ts_us:
            return  # judged already (a redelivery), or older than what was judged
        alert.last_ts_us, alert.value = ts_us, value
        if alert.state == "ok":
            if rule.breached(value):
                alert.peak = value
                state: State = "firing" if rule.for_s <= 0 else "pending"
                changes.append(self._move(alert, state, ts_us, now_us, notify=state == "firing"))
            return
        alert.peak = _worse(rule, alert.peak, value)
        if alert.state == "pending":
            if not rule.breached(value):
                changes.append(self._move(alert, "ok", ts_us, now_us, notify=False))
            elif ts_us - alert.since_us >= rule.for_s * US:
                # Firing since the excursion began, not since `for` ran out.
                changes.append(self._move(alert, "firing", alert.since_us, now_us, notify=True, found_at_us=ts_us))
        elif rule.cleared(value):
            changes.append(self._move(alert, "ok", ts_us, now_us, notify=True))

    def status(self, device: str, online: bool | None, now_us: int) -> None:
        """A status change: `offline` starts a silence, `online` (or cleared) ends it."""
        if online is False:
            if device in self._offline_since or len(self._offline_since) < self._max_devices:
                self._offline_since.setdefault(device, now_us)
        else:
            self._offline_since.pop(device, None)

    def tick(self, now_us: int) -> list[Change]:
        """What time alone changes: silences that lasted, repeats that are due."""
        changes: list[Change] = []
        for device in set(self._last_seen) | set(self._offline_since):
            for rule in self._silence_of(device):
                alert = self._alerts.get((rule.id, device))
                if alert is not None and alert.active:
                    continue
                # Silence counts from the last reading, but not from before this bridge
                # started: what it missed meanwhile may still be queued at the broker.
                quiet_since = max(self._last_seen.get(device, 0), self._started_us)
                offline_since = self._offline_since.get(device)
                since = None
                if now_us - quiet_since >= rule.threshold * US:
                    since = self._last_seen.get(device) or quiet_since
                elif offline_since is not None and now_us - offline_since >= rule.threshold * US:
                    since = offline_since
                if since is None:
                    continue
                if alert is None:
                    alert = Alert(rule.id, device, kind="no_data", threshold=rule.threshold)
                    self._alerts[(rule.id, device)] = alert
                changes.append(self._move(alert, "firing", since, now_us, notify=True, found_at_us=now_us))
        for alert in self._alerts.values():
            rule = self._rules[alert.rule]
            if (
                alert.state == "firing"
                and rule.repeat_s is not None
                and now_us - alert.notified_us >= rule.repeat_s * US
            ):
                alert.notified_us = now_us
                changes.append(Change(_copy(alert), "firing", alert.since_us, now_us, notify=True, repeat=True))
        return changes

    def _silence_of(self, device: str) -> list[Rule]:
        """The no_data rules watching `device` (looked up once per device and rule set)."""
        rules = self._silent_rules.get(device)
        if rules is None:
            rules = self._silent_rules[device] = [r for r in self._silence if r.watches(device)]
        return rules

    def acknowledge(self, alert_id: str, by: str, comment: str, now_us: int) -> Change:
        """A person is on it. Raises KeyError (unknown alert) or ValueError (not firing)."""
        alert = self.get(alert_id)
        if alert is None:
            raise KeyError(alert_id)
        if alert.state != "firing":
            raise ValueError(f"alert {alert_id} is {alert.state}, not firing")
        alert.acknowledged_by, alert.comment = by, comment
        change = self._move(alert, "acknowledged", now_us, now_us, notify=True, found_at_us=now_us)
        return dataclasses.replace(change, by=by, comment=comment)

    def _move(
        self, alert: Alert, state: State, at_us: int, now_us: int, notify: bool, found_at_us: int | None = None
    ) -> Change:
        previous = alert.state
        alert.state = state
        if state != "acknowledged":
            alert.since_us = at_us
        if state == "ok":
            alert.acknowledged_by = alert.comment = None
        if state == "firing":
            alert.notified_us = now_us
        # Late: the reading that made this change is older than a minute when it is judged.
        alert.late = now_us - (at_us if found_at_us is None else found_at_us) > LATE_AFTER_US
        return Change(_copy(alert), previous, at_us, now_us, notify)


def _copy(alert: Alert) -> Alert:
    return dataclasses.replace(alert)


def _worse(rule: Rule, peak: float | None, value: float) -> float:
    if peak is None:
        return value
    return max(peak, value) if rule.kind == "above" else min(peak, value)
