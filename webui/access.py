"""Who may use the web UI: the dashboard's own origin only, and a password when one is set.

Without SENSORPIPE_WEB_PASSWORD everything is open to whoever reaches the port (the bridge
listens on 127.0.0.1 by default). With it, pages redirect to a login form, the API and
`/metrics` answer 401, and Socket.IO refuses the connection, until the browser holds the
session cookie the login sets (HttpOnly, SameSite=Lax, Secure when configured); programs
may send `Authorization: Bearer <password>` instead. `/healthz` stays open for health checks.

Requests that carry an `Origin` header from another site are refused (403) whatever the
password: no other site's page can drive the API or log a browser in or out.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import defaultdict, deque
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

access = Blueprint("access", __name__)

OPEN_ENDPOINTS = {"access.login", "access.login_post", "api.healthz", "static"}
FAILURES_ALLOWED = 10  # wrong passwords per client address ...
FAILURE_WINDOW_S = 600.0  # ... within this long, then 429 until the oldest ages out


class WebAccess:
    """The password (if any) and the login throttle; one per app."""

    def __init__(self, password: str | None, secret: str = "") -> None:
        self.password = password or None
        self._secret = secret
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.password is not None

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
            failures = self._failures[client]
            while failures and time.monotonic() - failures[0] > FAILURE_WINDOW_S:
                failures.popleft()
            return len(failures) >= FAILURES_ALLOWED

    def failed(self, client: str) -> None:
        with self._lock:
            self._failures[client].append(time.monotonic())

    def authorized(self) -> bool:
        """May the current request (page, API call or Socket.IO handshake) go ahead?"""
        if not self.enabled:
            return True
        if session.get("signed_in") is True:
            return True
        header = request.headers.get("Authorization", "")
        return header.startswith("Bearer ") and self.correct(header.removeprefix("Bearer "))


def same_origin(origin: str) -> bool:
    """Is `origin` this site, as the browser sees it (also behind a proxy that says so)?"""
    own = {f"{request.scheme}://{request.host}"}
    forwarded_proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
    forwarded_host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    if forwarded_proto or forwarded_host:
        own.add(f"{forwarded_proto or request.scheme}://{forwarded_host or request.host}")
    return origin in own


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
        if request.endpoint in OPEN_ENDPOINTS or web_access.authorized():
            return None
        if request.endpoint is not None and request.endpoint.startswith("pages."):
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


@access.get("/login")
def login() -> ResponseReturnValue:
    if not _access().enabled:
        return redirect("/")
    return render_template("login.html", next=_safe_next(request.args.get("next")), error=None)


@access.post("/login")
def login_post() -> ResponseReturnValue:
    web_access = _access()
    if not web_access.enabled:
        return redirect("/")
    client = request.remote_addr or "?"
    next_path = _safe_next(request.form.get("next"))
    if web_access.throttled(client):
        message = "Too many wrong passwords from here: try again in a few minutes."
        return render_template("login.html", next=next_path, error=message), 429
    if not web_access.correct(request.form.get("password", "")):
        web_access.failed(client)
        return render_template("login.html", next=next_path, error="Wrong password."), 401
    session.clear()
    session["signed_in"] = True
    session.permanent = True  # 31 days (Flask's default lifetime)
    return redirect(next_path)


@access.post("/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("access.login") if _access().enabled else "/")
