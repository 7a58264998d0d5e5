"""Alerts as a pipeline sink: the engine judges, the journal keeps, the rest are told.

Readings reach it as soon as they are accepted (bridge/sinks.py AcceptedSink), statuses as
they change; a thread of its own ticks once a second for what time alone changes (silences,
repeats). Every change is written to the journal (with its notifications) before anyone is
told: the retained MQTT topic `<prefix>/_alerts/<device>/<rule>`, the browsers (Socket.IO
`alert`), and people (bridge/alerts/notify.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bridge.alerts.engine import Alert, AlertEngine, Change
from bridge.alerts.journal import AlertJournal, Pending
from bridge.alerts.notify import Notifier
from bridge.alerts.rules import Rule, RuleError, check_unique, load_rules_file
from common.reading import Reading, now_us
from common.topics import Topics

log = logging.getLogger(__name__)

TICK_S = 1.0
SAVE_SEEN_EVERY_S = 10.0


class RuleConflict(ValueError):
    """A rule change the API cannot make (a provisioned rule, a taken id): HTTP 409."""


class AlertService:
    """The alerts of one bridge. Thread-safe: the pipeline, the ticker and the web call it."""

    _not_failures: tuple[type[Exception], ...] = ()  # journal errors that lose no change

    def __init__(
        self,
        journal: AlertJournal,
        notifier: Notifier,
        topics: Topics,
        rules_file: Path | None,
        max_devices: int = 10_000,
        stuck_after_s: float = 60.0,
    ) -> None:
        """`stuck_after_s`: a notification undelivered this long makes /healthz say so (the
        bridge's SENSORPIPE_STALL_AFTER_S)."""
        self._journal = journal
        self.notifier = notifier
        self._topics = topics
        self._publish: Callable[[str, bytes], None] = lambda topic, payload: None
        self._rules_file = rules_file
        self._stuck_after_s = stuck_after_s
        self._lock = threading.RLock()
        self._listeners: list[Callable[[dict[str, object]], None]] = []
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="alert-ticker", daemon=True)
        self._saved_seen_at = time.monotonic()
        self.evaluated = 0  # readings judged, for /metrics
        self.failures = 0  # changes that could not be written (the sink logged them)
        self._max_devices = max_devices
        self._file_rules = load_rules_file(rules_file) if rules_file else []  # RuleError: the bridge stops
        self._engine = self._initial_engine()

    def _initial_engine(self) -> AlertEngine:
        return self._load_engine()

    def _load_engine(self) -> AlertEngine:
        """An engine with the current rules and the state the journal kept."""
        rules = self._merge(self._file_rules, self._journal.rules(), warn=True)
        engine = AlertEngine(rules, now_us(), self._max_devices)
        engine.restore(self._journal.alerts(), self._journal.seen())
        return engine

    @staticmethod
    def _merge(file_rules: list[Rule], own: list[Rule], warn: bool = False) -> list[Rule]:
        """The file's rules, then the dashboard's that do not clash with them by id."""
        taken = {r.id for r in file_rules}
        clashes = [r.id for r in own if r.id in taken]
        if clashes and warn:
            log.warning("rules %s from the dashboard are shadowed by the rules file", ", ".join(clashes))
        return check_unique([*file_rules, *(r for r in own if r.id not in taken)])

    def publish_with(self, publish: Callable[[str, bytes], None]) -> None:
        """Send the retained alert states with `publish(topic, payload)` (the MQTT inbox's)."""
        self._publish = publish

    def on_change(self, listener: Callable[[dict[str, object]], None]) -> None:
        """Call `listener` with each alert's new state (the browsers' `alert` event)."""
        self._listeners.append(listener)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Send the retained state of every alert (a broker may have lost it), then run."""
        with self._lock:
            for alert in self._engine.alerts():
                self._tell_mqtt(alert)
        self.notifier.start()
        self._ticker.start()

    def stop(self) -> None:
        self._stop.set()
        if self._ticker.ident is not None:
            self._ticker.join(5)
        self.notifier.stop()
        with self._lock:
            self._journal.save_seen(self._engine.last_seen())
        self._journal.close()

    def reload(self) -> str | None:
        """Read the rules file again (SIGHUP). Returns the error, keeping the rules in use."""
        if self._rules_file is None:
            return None
        try:
            file_rules = load_rules_file(self._rules_file)
            with self._lock:
                rules = self._merge(file_rules, self._journal.rules(), warn=True)
                self._file_rules = file_rules
                self._rules_changed(rules)
        except RuleError as exc:
            log.error("rules not reloaded, the old ones stay in use: %s", exc)
            return str(exc)
        log.info("reloaded %d rules from %s", len(file_rules), self._rules_file)
        return None

    # --- the pipeline's news (AcceptedSink, StatusSink) ------------------------------------

    def accepted(self, readings: Sequence[Reading]) -> None:
        self._judge(readings)

    def _judge(self, readings: Sequence[Reading]) -> None:
        with self._lock:
            self.evaluated += len(readings)
            self._apply(self._engine.readings(readings, now_us()))

    def status(self, device: str, online: bool | None) -> None:
        with self._lock:
            self._engine.status(device, online, now_us())

    def _tick_loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self._tick()
            except Exception:  # the ticker must outlive a locked database or a bug
                log.exception("alert tick failed")

    def _tick(self) -> None:
        """What time alone changes, and now and then the devices last heard."""
        with self._lock:
            self._apply(self._engine.tick(now_us()))
            if time.monotonic() - self._saved_seen_at >= SAVE_SEEN_EVERY_S:
                self._saved_seen_at = time.monotonic()
                self._journal.save_seen(self._engine.last_seen())

    def _apply(self, changes: list[Change]) -> None:
        if not changes:
            return
        try:
            self._journal.record(changes, len(self.notifier.targets))
        except self._not_failures:
            raise
        except Exception:
            self.failures += 1
            raise
        for change in changes:
            if change.repeat:
                continue  # a repeat changes nothing anyone holds; it only notifies
            self._tell_mqtt(change.alert)
            self._tell_listeners(change.alert.to_json())
        if any(c.notify for c in changes):
            self.notifier.wake()

    def _tell_listeners(self, body: dict[str, object]) -> None:
        for listener in self._listeners:
            try:
                listener(body)
            except Exception:
                log.exception("alert listener failed")

    def _tell_mqtt(self, alert: Alert) -> None:
        try:
            self._publish(self._topics.alert(alert.device, alert.rule), json.dumps(alert.to_json()).encode())
        except Exception:  # the journal has it; the next start sends it again
            log.exception("publishing alert %s failed", alert.id)

    # --- what the web app reads and does ---------------------------------------------------

    def _current(self) -> list[Alert]:
        """Every alert known, whatever its state."""
        with self._lock:
            return self._engine.alerts()

    def alerts(self) -> list[dict[str, object]]:
        """Every alert that is not ok, firing first, then by since."""
        order = {"firing": 0, "acknowledged": 1, "pending": 2}
        active = [a for a in self._current() if a.state != "ok"]
        active.sort(key=lambda a: (order[a.state], a.since_us))
        return [a.to_json() for a in active]

    def state_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for alert in self._current():
            counts[alert.state] = counts.get(alert.state, 0) + 1
        return counts

    def history(self, since_us: int, device: str | None = None) -> list[dict[str, object]]:
        return self._journal.history(since_us, device)

    def acknowledge(self, alert_id: str, by: str, comment: str) -> dict[str, object]:
        """Raises KeyError (unknown) or ValueError (not firing)."""
        with self._lock:
            change = self._engine.acknowledge(alert_id, by, comment, now_us())
            self._apply([change])
        return change.alert.to_json()

    def problems(self) -> list[str]:
        """What /healthz should say of the alerts: notifications stuck, changes not written."""
        reasons = []
        if self.failures:
            reasons.append(f"alerts: {self.failures} changes could not be written to the journal (see the log)")
        waited = self.notifier.stuck_s()
        if waited > self._stuck_after_s:
            errors = "; ".join(self.notifier.state.errors.values()) or "not sent yet"
            reasons.append(f"alerts: a notification has waited {waited:.0f} s ({errors[:300]})")
        if not self._ticker.is_alive() and self._ticker.ident is not None and not self._stop.is_set():
            reasons.append("alerts: the ticker has stopped (silences and repeats are not checked)")
        return reasons

    def undelivered(self) -> list[Pending]:
        return self._journal.undelivered()

    def rules(self) -> list[Rule]:
        with self._lock:
            return self._engine.rules()

    def put_rule(self, rule: Rule, create: bool) -> None:
        """Add (`create`) or change a rule of the dashboard's; raises RuleConflict."""
        with self._lock:
            current = {r.id: r for r in self.rules()}
            existing = current.get(rule.id)
            if existing is not None and existing.provisioned:
                raise RuleConflict(f"rule {rule.id!r} comes from the rules file; change it there")
            if create and existing is not None:
                raise RuleConflict(f"rule {rule.id!r} exists already")
            if not create and existing is None:
                raise KeyError(rule.id)
            self._journal.save_rule(rule)
            current[rule.id] = rule
            self._rules_changed(list(current.values()))

    def delete_rule(self, rule_id: str) -> None:
        """Raises KeyError (unknown) or RuleConflict (from the rules file)."""
        with self._lock:
            current = {r.id: r for r in self.rules()}
            if rule_id not in current:
                raise KeyError(rule_id)
            if current[rule_id].provisioned:
                raise RuleConflict(f"rule {rule_id!r} comes from the rules file; remove it there")
            self._journal.delete_rule(rule_id)
            del current[rule_id]
            self._rules_changed(list(current.values()))

    def _rules_changed(self, rules: list[Rule]) -> None:
        """The rules are these now (the file's and the dashboard's, merged)."""
        self._use(rules)

    def _use(self, rules: list[Rule]) -> None:
        gone = self._engine.set_rules(rules)
        if gone:
            self._journal.forget([a.id for a in gone])
            for alert in gone:  # an empty retained message: the alert is no more
                try:
                    self._publish(self._topics.alert(alert.device, alert.rule), b"")
                except Exception:
                    log.exception("clearing alert %s failed", alert.id)
                self._tell_listeners({**alert.to_json(), "state": "ok", "deleted": True})
