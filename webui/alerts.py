"""The alerts API: alerts, their history, acknowledgements and rules (docs/contract.md)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from common.reading import now_us, text_problem
from common.topics import DEVICE_ID
from webui.api import RANGE, UNIT_S
from webui.audited import audit
from webui.context import AlertConflict, AlertRuleError, AlertsUnavailable, AlertsView, WebContext

alerts_api = Blueprint("alerts", __name__)

MAX_BY = 64
MAX_COMMENT = 1000
MAX_HISTORY_S = 366 * 86400


def _alerts() -> AlertsView | None:
    context: WebContext = current_app.extensions["sensorpipe"]
    return context.alerts


class BadParameter(ValueError):
    """A parameter or body the API cannot take: 400 with this message (the handler below)."""


@alerts_api.errorhandler(BadParameter)
def _bad_parameter(error: BadParameter) -> tuple[Response, int]:
    return _error(str(error), 400)


def _error(message: str, status: int) -> tuple[Response, int]:
    return jsonify(error=message), status


def _json_body() -> dict[str, Any]:
    """The request's JSON object; raises BadParameter saying what is wrong with it."""
    if not request.is_json:
        raise BadParameter("send a JSON object (Content-Type: application/json)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadParameter("the body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str, most: int, required: bool, lines: bool = False) -> str:
    value = body.get(key, "")
    if not isinstance(value, str) or len(value) > most or (required and not value.strip()):
        raise BadParameter(f"{key}: {'a' if required else 'an optional'} text of at most {most} characters")
    problem = text_problem(value.replace("\n", " ") if lines else value)  # a comment may have several lines
    if problem:
        raise BadParameter(f"{key} {problem}")
    return value.strip()


@alerts_api.get("/api/alerts")
def alerts() -> Response | tuple[Response, int]:
    """Every alert that is not ok, firing first; and notifications not yet delivered."""
    view = _alerts()
    if view is None:
        return jsonify(alerts=[], deliveries={"targets": [], "undelivered": 0, "errors": {}})
    return jsonify(alerts=view.alerts(), deliveries=view.deliveries())


def _device_arg() -> str | None:
    """The optional `device` parameter; raises BadParameter when it is not a device id."""
    device = request.args.get("device")
    if device is not None and not DEVICE_ID.fullmatch(device):
        raise BadParameter("device: give a device id, e.g. device=coldroom")
    return device


@alerts_api.get("/api/alerts/history")
def history() -> Response | tuple[Response, int]:
    """Every change found within `since` (default 7d), newest first; `device`: its alerts only."""
    device = _device_arg()
    since = request.args.get("since", "7d")
    match = RANGE.fullmatch(since)
    if match is None:
        return _error("since: a number and a unit s, m, h, d or w, e.g. since=7d", 400)
    range_s = int(match.group(1)) * UNIT_S[match.group(2)]
    if range_s > MAX_HISTORY_S:
        return _error("since: at most 366 days", 400)
    view = _alerts()
    return jsonify(history=view.history(now_us() - range_s * 1_000_000, device) if view else [])


@alerts_api.post("/api/alerts/<alert_id>/ack")
def acknowledge(alert_id: str) -> Response | tuple[Response, int]:
    """A person is on it: JSON {"by", "comment"}. 404 unknown alert, 409 not firing, 503 when
    no bridge leads the alerts (several bridges; the request stays queued for the next one)."""
    view = _alerts()
    body = _json_body()
    # Signed in with an account: the acknowledgement is that account's, whatever the body says.
    by = current_app.extensions["sensorpipe.access"].who() or _text(body, "by", MAX_BY, required=True)
    comment = _text(body, "comment", MAX_COMMENT, required=False, lines=True)
    if view is None:
        return _error(f"no alert {alert_id!r}", 404)
    try:
        acknowledged = view.acknowledge(alert_id, by, comment)
        audit("alert.acknowledged", {"alert": alert_id, "by": by, "comment": comment})
        return jsonify(acknowledged)
    except KeyError:
        return _error(f"no alert {alert_id!r}", 404)
    except AlertConflict as exc:
        return _error(str(exc), 409)
    except AlertsUnavailable as exc:
        return _error(str(exc), 503)


@alerts_api.get("/api/rules")
def rules() -> Response | tuple[Response, int]:
    """Every rule; `device`: those watching that device."""
    device = _device_arg()
    view = _alerts()
    return jsonify(rules=view.rules(device) if view else [])


@alerts_api.post("/api/rules")
def create_rule() -> Response | tuple[Response, int]:
    """A new rule (201); 400 with what is wrong, 409 when the id is taken."""
    return _put_rule(None)


@alerts_api.put("/api/rules/<rule_id>")
def change_rule(rule_id: str) -> Response | tuple[Response, int]:
    """Change a rule made here; 409 for a rule of the rules file, 404 unknown."""
    return _put_rule(rule_id)


def _put_rule(rule_id: str | None) -> Response | tuple[Response, int]:
    view = _alerts()
    body = _json_body()
    if view is None:
        return _error("alerts are not running on this bridge", 503)
    if rule_id is not None and body.setdefault("id", rule_id) != rule_id:
        return _error("the id in the body is not the one in the address", 400)
    body.pop("provisioned", None)  # what GET /api/rules adds: a rule read can be sent back
    body.pop("watching", None)
    try:
        rule = view.put_rule(body, create=rule_id is None)
    except AlertRuleError as exc:
        return _error(str(exc), 400)
    except AlertConflict as exc:
        return _error(str(exc), 409)
    except KeyError:
        return _error(f"no rule {rule_id!r}", 404)
    audit("rule.created" if rule_id is None else "rule.changed", rule)
    return (jsonify(rule), 201) if rule_id is None else jsonify(rule)


@alerts_api.delete("/api/rules/<rule_id>")
def delete_rule(rule_id: str) -> Response | tuple[Response, int]:
    view = _alerts()
    if view is None:
        return _error(f"no rule {rule_id!r}", 404)
    try:
        view.delete_rule(rule_id)
    except KeyError:
        return _error(f"no rule {rule_id!r}", 404)
    except AlertConflict as exc:
        return _error(str(exc), 409)
    audit("rule.deleted", {"id": rule_id})
    return jsonify(deleted=rule_id)
