"""The alerts as the web app sees them (webui.context.AlertsView): JSON in, JSON out,
the web app's own errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge.alerts.rules import RuleError, rule_from_json
from bridge.alerts.service import AlertService, RuleConflict
from webui.context import AlertConflict, AlertRuleError, AlertsUnavailable


class WebAlerts:
    def __init__(self, service: AlertService, known_devices: Callable[[], list[str]] = list) -> None:
        """`known_devices`: the ids of the devices the bridge knows (to say what a rule watches)."""
        self._service = service
        self._known = known_devices

    def alerts(self) -> list[dict[str, Any]]:
        return self._service.alerts()

    def history(self, since_us: int, device: str | None = None) -> list[dict[str, Any]]:
        return self._service.history(since_us, device)

    def acknowledge(self, alert_id: str, by: str, comment: str) -> dict[str, Any]:
        try:
            return self._service.acknowledge(alert_id, by, comment)
        except ValueError as exc:  # not firing
            raise AlertConflict(str(exc)) from None
        except TimeoutError as exc:  # several bridges, and none leads the alerts
            raise AlertsUnavailable(str(exc)) from None

    def rules(self, device: str | None = None) -> list[dict[str, Any]]:
        """Each rule with `watching`: how many known devices it applies to (0: a typo in its
        devices, or devices not heard yet)."""
        rules = [rule for rule in self._service.rules() if device is None or rule.watches(device)]
        known = self._known()
        return [{**rule.to_json(), "watching": sum(1 for d in known if rule.watches(d))} for rule in rules]

    def put_rule(self, body: dict[str, Any], create: bool) -> dict[str, Any]:
        try:
            rule = rule_from_json(body)
        except RuleError as exc:
            raise AlertRuleError(str(exc)) from None
        try:
            self._service.put_rule(rule, create)
        except RuleConflict as exc:
            raise AlertConflict(str(exc)) from None
        return rule.to_json()

    def delete_rule(self, rule_id: str) -> None:
        try:
            self._service.delete_rule(rule_id)
        except RuleConflict as exc:
            raise AlertConflict(str(exc)) from None

    def deliveries(self) -> dict[str, Any]:
        notifier = self._service.notifier
        undelivered = self._service.undelivered()
        names = [target.name for target in notifier.targets]
        # The outbox holds each failing row's last error, so every bridge can show it (with
        # several bridges only the leader sends); the sender's own view is the newer one.
        errors = {names[p.target]: p.error for p in undelivered if p.error and p.target < len(names)}
        errors.update({names[t]: e for t, e in notifier.state.errors.items() if t < len(names)})
        return {
            "targets": names,
            "undelivered": len(undelivered),
            "errors": errors,
            "oldest": min((p.body.get("found", 0) for p in undelivered), default=None),  # type: ignore[type-var]
        }
