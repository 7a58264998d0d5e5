"""Who may use the web UI: the dashboard's own origin only, and a password when one is set.

Without SENSORPIPE_WEB_PASSWORD everything is open to whoever reaches the port (the bridge
listens on 127.0.0.1 by default). With it, pages redirect to a login form, the API and
`/metrics` answer 401, and Socket.IO refuses the connection, until the browser holds the
session cookie the login sets (HttpOnly, SameSite=Lax, Secure when configured); programs
may send `Authorization: Bearer <password>` instead. `/healthz` stays open for health checks.

Requests that carry an `Origin` header from another site are refused (403) whatever the
password: no other site's page can drive the API or log a browser in or out.

Signing out ends the session on the server too: each sign-in gets a random session id, and
signing out puts it on a list of ended sessions (in memory, or in Redis with several bridges)
that every request is checked against, so a copy of the cookie is worth nothing afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from typing import Protocol
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from webui.accounts import AccountStore, at_least

access = Blueprint("access", __name__)

OPEN_ENDPOINTS = {"access.login", "access.login_post", "api.healthz", "static"}
PAGES = {
    "reports.report_page",
    "accounts.accounts_page",
}  # pages outside the pages blueprint: to the login form, not a 401
FAILURES_ALLOWED = 10  # wrong passwords per client address ...
FAILURE_WINDOW_S = 600.0  # ... within this long, then 429 until the oldest ages out
FAILURE_CLIENTS = 10_000  # addresses remembered by the throttle; the least recent go first
SESSION_LIFETIME_S = 31 * 86400  # Flask's default permanent session lifetime
ENDED_SESSIONS = 100_000  # ended sessions remembered in memory (until their cookie expires anyway)


class EndedSessions(Protocol):
    """The ids of sessions that were signed out, until their cookies would expire anyway."""

    def end(self, sid: str) -> None: ...

    def ended(self, sid: str) -> bool: ...


class MemoryEndedSessions:
    """EndedSessions in this process's memory: a bridge restart forgets them (then a copied
    cookie of a signed-out session is valid again until it expires); several bridges share
    them through Redis instead (bridge/shared.py)."""

    def __init__(self) -> None:
        self._ended: OrderedDict[str, float] = OrderedDict()  # sid -> monotonic time ended
        self._lock = threading.Lock()

    def end(self, sid: str) -> None:
        with self._lock:
            self._ended[sid] = time.monotonic()
            while self._ended and (
                len(self._ended) > ENDED_SESSIONS
                or time.monotonic() - next(iter(self._ended.values())) > SESSION_LIFETIME_S
            ):
                self._ended.popitem(last=False)

    def ended(self, sid: str) -> bool:
        with self._lock:
            return sid in self._ended


# What each action needs (webui/accounts.py): everything else a viewer may do.
NEEDS = {
    "alerts.acknowledge": "operator",
    "alerts.create_rule": "admin",
    "alerts.change_rule": "admin",
    "alerts.delete_rule": "admin",
}
ADMIN_BLUEPRINTS = ("accounts.",)  # the accounts page and API


def needed_role(endpoint: str | None) -> str:
    if endpoint is None:
        return "viewer"
    if endpoint.startswith(ADMIN_BLUEPRINTS):
        return "admin"
    return NEEDS.get(endpoint, "viewer")


class WebAccess:
    """The password (if any), the accounts (if any), the login throttle and the ended
    sessions; one per app."""

    def __init__(
        self,
        password: str | None,
        secret: str = "",
        ended: EndedSessions | None = None,
        accounts: AccountStore | None = None,
    ) -> None:
        self.password = password or None
        self.accounts = accounts
        # Without the shared password the cookie key needs a secret of its own: the accounts
        # file keeps a random one (with a password, the key is made from it, as before).
        self._secret = secret or (accounts.secret() if accounts is not None and not self.password else "")
        self._ended = ended or MemoryEndedSessions()
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Sign-in is on: a shared password is set, or an account exists (asked each time:
        `python -m bridge accounts add` may have made the first one meanwhile)."""
        return self.password is not None or (self.accounts is not None and self.accounts.any())

    def secret_key(self) -> bytes:
        """The cookie-signing key: from the password, so a new password ends every session,
        and from the secret (SENSORPIPE_WEB_SECRET), so that a captured cookie is no test of
        password guesses. The same on every bridge with the same settings, and after a restart."""
        seed = (self.password or "").encode()
        return hmac.new(seed, b"sensorpipe session cookies:" + self._secret.encode(), hashlib.sha256).digest()

    def correct(self, given: str) -> bool:
        return self.password is not None and hmac.compare_digest(given.encode(), self.password.encode())

    def throttled(self, client: str) -> bool:
        with self._lock:
            failures = self._failures.get(client)
            if failures is None:
                return False
            while failures and time.monotonic() - failures[0] > FAILURE_WINDOW_S:
                failures.popleft()
            if not failures:
                del self._failures[client]
            return len(failures) >= FAILURES_ALLOWED

    def failed(self, client: str) -> None:
        with self._lock:
            self._failures.setdefault(client, deque(maxlen=FAILURES_ALLOWED)).append(time.monotonic())
            self._failures.move_to_end(client)
            while len(self._failures) > FAILURE_CLIENTS:
                self._failures.popitem(last=False)

    def sign_in(self, user: str | None = None) -> None:
        """Start a session for the current browser (after the right password): of the
        account `user`, or of the shared password when None."""
        session.clear()
        session["signed_in"] = True
        session["sid"] = secrets.token_urlsafe(18)
        if user is not None:
            session["user"] = user
        session.permanent = True  # 31 days (Flask's default lifetime)

    def account_password(self, name: str, password: str) -> bool:
        return self.accounts is not None and self.accounts.verify(name, password) is not None

    def sign_out(self) -> None:
        """End the current browser's session, also for any copy of its cookie."""
        sid = session.get("sid")
        if isinstance(sid, str):
            self._ended.end(sid)
        session.clear()

    def authorized(self) -> bool:
        """May the current request (page, API call or Socket.IO handshake) go ahead?"""
        return self.role() is not None

    def role(self) -> str | None:
        """The current request's role: admin without sign-in or with the shared password,
        the account's own role (as it is now: a removed account's session ends with it), or
        None when not signed in."""
        if not self.enabled:
            return "admin"
        sid = session.get("sid")
        if session.get("signed_in") is True and isinstance(sid, str) and not self._ended.ended(sid):
            user = session.get("user")
            if user is None:
                return "admin" if self.password is not None else None
            return self.accounts.role_of(user) if self.accounts is not None and isinstance(user, str) else None
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and self.correct(header.removeprefix("Bearer ")):
            return "admin"
        return None

    def actor(self) -> str:
        """Who the current request is, for the audit log."""
        if not self.enabled:
            return "anyone (sign-in is off)"
        return self.who() or "the shared password"

    def who(self) -> str | None:
        """The signed-in account's name (None: no account, the shared password or none)."""
        user = session.get("user")
        return user if isinstance(user, str) and self.role() is not None else None


def same_origin(origin: str) -> bool:
    """Is `origin` this site, as the browser sees it? Behind SENSORPIPE_WEB_PROXIES proxies,
    ProxyFix has already put their X-Forwarded-Proto and -Host into the request; without
    proxies those headers are anyone's and not believed."""
    return origin == f"{request.scheme}://{request.host}"


def _access() -> WebAccess:
    web_access: WebAccess = current_app.extensions["sensorpipe.access"]
    return web_access


def install(app: Flask, web_access: WebAccess, secure_cookie: bool) -> None:
    """Check every request of `app`; add the login and logout pages."""
    app.extensions["sensorpipe.access"] = web_access
    app.secret_key = web_access.secret_key()
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure_cookie,
        SESSION_COOKIE_NAME="sensorpipe_session",
    )
    app.register_blueprint(access)

    @app.before_request
    def check() -> ResponseReturnValue | None:
        origin = request.headers.get("Origin")
        if origin is not None and not same_origin(origin):
            return jsonify(error="requests from other sites are not accepted"), 403
        if request.endpoint in OPEN_ENDPOINTS:
            return None
        role = web_access.role()
        if role is not None:
            needed = needed_role(request.endpoint)
            if at_least(role, needed):
                return None
            return jsonify(error=f"this needs the {needed} role; you are signed in as {role}"), 403
        if request.endpoint is not None and (request.endpoint.startswith("pages.") or request.endpoint in PAGES):
            return redirect(url_for("access.login", next=request.full_path.rstrip("?")))
        return jsonify(error="sign in first, or send Authorization: Bearer <password>"), 401


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never send the browser elsewhere after signing in."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _has_accounts() -> bool:
    accounts = _access().accounts
    return accounts is not None and accounts.any()


@access.get("/login")
def login() -> ResponseReturnValue:
    if not _access().enabled:
        return redirect("/")
    return render_template(
        "login.html", accounts=_has_accounts(), next=_safe_next(request.args.get("next")), error=None
    )


@access.post("/login")
def login_post() -> ResponseReturnValue:
    web_access = _access()
    if not web_access.enabled:
        return redirect("/")
    client = request.remote_addr or "?"
    next_path = _safe_next(request.form.get("next"))
    if web_access.throttled(client):
        message = "Too many wrong passwords from here: try again in a few minutes."
        return render_template("login.html", accounts=_has_accounts(), next=next_path, error=message), 429
    name = request.form.get("name", "").strip()
    password = request.form.get("password", "")
    if name:
        if not web_access.account_password(name, password):
            web_access.failed(client)
            return render_template(
                "login.html", accounts=_has_accounts(), next=next_path, error="Wrong name or password."
            ), 401
        web_access.sign_in(name)
        return redirect(next_path)
    if not web_access.correct(password):
        web_access.failed(client)
        return render_template("login.html", accounts=_has_accounts(), next=next_path, error="Wrong password."), 401
    web_access.sign_in()
    return redirect(next_path)


@access.post("/logout")
def logout() -> ResponseReturnValue:
    _access().sign_out()
    return redirect(url_for("access.login") if _access().enabled else "/")
