"""The accounts page and API (admins only: webui/access.py): list, add, change role or
password, remove. The last admin cannot be removed or demoted while no shared password is
set: nobody could manage the accounts any more."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from webui.access import WebAccess
from webui.accounts import AccountError, AccountStore
from webui.audited import audit

accounts = Blueprint("accounts", __name__)


def _web_access() -> WebAccess:
    web_access: WebAccess = current_app.extensions["sensorpipe.access"]
    return web_access


def _store() -> AccountStore:
    store = _web_access().accounts
    if store is None:
        raise AccountError("this bridge keeps no accounts")
    return store


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise AccountError("send a JSON object")
    return body


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise AccountError(f"{key} must be text")
    return value


def _keeps_an_admin(store: AccountStore, leaving: str) -> None:
    if _web_access().password is None and store.role_of(leaving) == "admin" and store.admins() <= 1:
        raise AccountError("the last admin stays (add another admin first, or set SENSORPIPE_WEB_PASSWORD)")


@accounts.errorhandler(AccountError)
def _refused(error: AccountError) -> tuple[Response, int]:
    status = 404 if str(error).startswith("no account") else 400
    return jsonify(error=str(error)), status


@accounts.get("/accounts")
def accounts_page() -> str:
    return render_template("accounts.html", signed_in=True)


@accounts.get("/api/accounts")
def list_accounts() -> Response:
    return jsonify(accounts=[vars(account) for account in _store().accounts()])


@accounts.post("/api/accounts")
def add_account() -> tuple[Response, int]:
    body = _body()
    account = _store().add(_text(body, "name") or "", _text(body, "role") or "", _text(body, "password") or "")
    audit("account.added", {"name": account.name, "role": account.role})
    return jsonify(vars(account)), 201


@accounts.put("/api/accounts/<name>")
def change_account(name: str) -> Response:
    store, body = _store(), _body()
    role, password = _text(body, "role"), _text(body, "password")
    if store.role_of(name) is None:
        raise AccountError(f"no account {name!r}")
    if role is not None:
        if role != "admin":
            _keeps_an_admin(store, name)
        store.set_role(name, role)
        audit("account.role", {"name": name, "role": role})
    if password is not None:
        store.set_password(name, password)
        audit("account.password", {"name": name})
    return jsonify(name=name, role=store.role_of(name))


@accounts.delete("/api/accounts/<name>")
def remove_account(name: str) -> Response:
    store = _store()
    if store.role_of(name) is None:
        raise AccountError(f"no account {name!r}")
    _keeps_an_admin(store, name)
    store.remove(name)
    audit("account.removed", {"name": name})
    return jsonify(removed=name)
