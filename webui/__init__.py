"""The web UI: the Flask app with the dashboard, the JSON API and Socket.IO."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from flask_socketio import SocketIO
from werkzeug.exceptions import HTTPException

from webui.access import WebAccess, install
from webui.accounts_web import accounts
from webui.alerts import alerts_api
from webui.api import api
from webui.context import WebContext
from webui.live import LiveBroadcaster
from webui.pages import AssetsMissing, check_vendor_files, pages
from webui.proxies import ForwardedFrom
from webui.reports import reports

__all__ = ["AssetsMissing", "WebAccess", "WebContext", "create_app", "make_socketio"]


class StrictJSONProvider(DefaultJSONProvider):
    """JSON as the standard says: a NaN or Infinity that got this far is a bug, and it fails
    loudly here (a 500 and a traceback in the log) instead of reaching a client as text that
    no JSON parser reads."""

    sort_keys = False  # keep our field order

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


def create_app(
    context: WebContext,
    socketio: SocketIO,
    web_access: WebAccess,
    secure_cookie: bool = False,
    message_queue: str | None = None,
    channel: str = "sensorpipe",
    proxies: int = 0,
    proxy_from: Sequence[str] = (),
) -> Flask:
    """Build the app and bind `socketio` to it; raises AssetsMissing without the npm packages.

    `socketio` is made by the caller (with `make_socketio`) so that the live broadcaster
    can be handed to the ingest loop before the app exists. `proxies`: how many reverse
    proxies to believe the X-Forwarded-* headers of; `proxy_from`: from which addresses
    (webui/proxies.py; empty: any).
    """
    check_vendor_files()
    app = Flask(__name__)
    app.json = StrictJSONProvider(app)
    app.extensions["sensorpipe"] = context
    install(app, web_access, secure_cookie)
    app.register_blueprint(pages)
    app.register_blueprint(api)
    app.register_blueprint(alerts_api)
    app.register_blueprint(reports)
    app.register_blueprint(accounts)
    app.register_error_handler(HTTPException, _api_errors_as_json)
    # With `message_queue` (a redis:// URL), an emit from any bridge reaches the browsers
    # of every bridge on the same queue and `channel`. Given here, at init_app, not to the
    # constructor: there it would build a second, write-only server first.
    queue = {"message_queue": message_queue, "channel": channel} if message_queue else {}
    socketio.init_app(app, **queue)
    if proxies:
        # Outside Socket.IO's middleware, so its handshakes see the client's address too.
        app.wsgi_app = ForwardedFrom(app.wsgi_app, proxies, proxy_from)  # type: ignore[method-assign]
    return app


def _api_errors_as_json(error: HTTPException) -> HTTPException | tuple[Response, int]:
    """Under /api/, Flask's own refusals (no such route, a method it does not take) in JSON
    like the API's others, `{"error": ...}`; elsewhere its page as ever."""
    if not request.path.startswith("/api/") or error.code is None:
        return error
    answer = jsonify(error=f"{error.name}: {error.description}")
    allowed = getattr(error, "valid_methods", None)  # a 405 says which methods it would take
    if allowed:
        answer.headers["Allow"] = ", ".join(allowed)
    return answer, error.code


def make_socketio(
    web_access: WebAccess, shared: bool = False, replay_s: float = 10.0
) -> tuple[SocketIO, LiveBroadcaster]:
    """The Socket.IO server (not yet bound to an app) and its broadcaster.

    `shared`: create_app will connect it to a message queue, so other bridges' browsers
    listen too and an emit must go out even with no browser here. `replay_s`: how long
    readings are kept for the `replay` event (longer than the write interval).
    """
    # threading mode, explicitly: auto-detection would pick eventlet if it were installed.
    # No cors_allowed_origins: Socket.IO accepts the dashboard's own origin only.
    # A ping every 10 s (Socket.IO's default is 25): the web server closes a connection silent
    # for 20 s (bridge/webserver.py), and a live browser answers each ping.
    socketio = SocketIO(async_mode="threading", ping_interval=10)
    return socketio, LiveBroadcaster(socketio, web_access, shared=shared, replay_s=replay_s)
