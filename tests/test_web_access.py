"""The web UI on a network: own origin only, the optional password, nothing of a device run as
code, no server credential in anything the browser gets. Real bridge, real broker, real
InfluxDB; the browser is headless Chromium."""

from __future__ import annotations

import email.utils
import http.client
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
import socketio

from devstack.servers import Server
from tests.conftest import BridgeProcess, Mqtt
from tests.faults import CuttableProxy
from tests.waiting import wait_until

PASSWORD = "correct horse battery staple"
XSS = "<img src=x onerror=alert(1)>"


def test_requests_from_another_site_are_refused(start_bridge: Callable[..., BridgeProcess]) -> None:
    bridge = start_bridge()
    assert requests.get(bridge.url + "/api/devices", headers={"Origin": bridge.url}, timeout=10).status_code == 200
    foreign = requests.get(bridge.url + "/api/devices", headers={"Origin": "http://evil.example"}, timeout=10)
    assert foreign.status_code == 403
    # Without SENSORPIPE_WEB_PROXIES, forwarded headers are anyone's: they make no origin ours.
    forged = {"Origin": "http://evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}
    assert requests.get(bridge.url + "/api/devices", headers=forged, timeout=10).status_code == 403
    client = socketio.Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(bridge.url, transports=["polling"], headers={"Origin": "http://evil.example"}, wait_timeout=5)


def test_with_a_password_everything_but_healthz_needs_it(start_bridge: Callable[..., BridgeProcess]) -> None:
    bridge = start_bridge(SENSORPIPE_WEB_PASSWORD=PASSWORD)
    for path in ("/", "/report?device=d"):
        page = requests.get(bridge.url + path, allow_redirects=False, timeout=10)
        assert page.status_code == 302 and page.headers["Location"].startswith("/login"), path
    for path in (
        "/api/devices",
        "/api/rejections",
        "/api/history?device=d&metric=temperature",
        "/metrics",
        "/api/report?device=d",
        "/api/report.csv?device=d",
        "/api/report.pdf?device=d",
    ):
        assert requests.get(bridge.url + path, timeout=10).status_code == 401, path
    assert requests.get(bridge.url + "/healthz", timeout=10).status_code == 200
    bearer = {"Authorization": f"Bearer {PASSWORD}"}
    assert requests.get(bridge.url + "/metrics", headers=bearer, timeout=10).status_code == 200
    wrong = {"Authorization": "Bearer nope"}
    assert requests.get(bridge.url + "/api/devices", headers=wrong, timeout=10).status_code == 401
    stranger = socketio.Client()
    reasons: list[Any] = []
    stranger.on("connect_error", reasons.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        stranger.connect(bridge.url, transports=["polling"], wait_timeout=5)
    assert reasons == [{"message": "sign in first"}]  # the page goes to the login form on this

    session = requests.Session()
    refused = session.post(bridge.url + "/login", data={"password": "guess", "next": "/"}, allow_redirects=False)
    assert refused.status_code == 401 and "Wrong password" in refused.text
    signed_in = session.post(
        bridge.url + "/login", data={"password": PASSWORD, "next": "//evil.example/"}, allow_redirects=False
    )
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/"  # never off-site
    cookie = signed_in.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert session.get(bridge.url + "/api/devices", timeout=10).status_code == 200
    live = socketio.Client()
    live.connect(bridge.url, transports=["polling"], wait_timeout=5, headers={"Cookie": _cookie_header(session)})
    live.disconnect()
    copied = {"Cookie": _cookie_header(session)}  # as someone who captured the cookie has it
    session.post(bridge.url + "/logout")
    assert session.get(bridge.url + "/api/devices", timeout=10).status_code == 401
    # Signing out ended the session on the server: the copy is refused too.
    assert requests.get(bridge.url + "/api/devices", headers=copied, timeout=10).status_code == 401
    copy = socketio.Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        copy.connect(bridge.url, transports=["polling"], wait_timeout=5, headers=copied)


def test_a_session_holds_on_every_bridge_with_the_same_password_and_secret(
    start_bridge: Callable[..., BridgeProcess],
) -> None:
    secret = "a long random string"
    bridge = start_bridge(SENSORPIPE_WEB_PASSWORD=PASSWORD, SENSORPIPE_WEB_SECRET=secret)
    session = requests.Session()
    signed_in = session.post(bridge.url + "/login", data={"password": PASSWORD}, allow_redirects=False, timeout=10)
    assert signed_in.status_code == 302
    cookie = {"Cookie": _cookie_header(session)}
    for settings, status in (
        ({"SENSORPIPE_WEB_SECRET": secret}, 200),  # another bridge behind the same address, or a restart
        ({"SENSORPIPE_WEB_SECRET": "another secret"}, 401),  # the secret is part of the key
        ({"SENSORPIPE_WEB_SECRET": ""}, 401),
    ):
        other = start_bridge(SENSORPIPE_WEB_PASSWORD=PASSWORD, **settings)
        assert requests.get(other.url + "/api/devices", headers=cookie, timeout=10).status_code == status, settings
    changed = start_bridge(SENSORPIPE_WEB_PASSWORD="a new password", SENSORPIPE_WEB_SECRET=secret)
    assert requests.get(changed.url + "/api/devices", headers=cookie, timeout=10).status_code == 401


def _cookie_header(session: requests.Session) -> str:
    return "; ".join(f"{name}={value}" for name, value in session.cookies.items())


def test_wrong_passwords_are_throttled(start_bridge: Callable[..., BridgeProcess]) -> None:
    bridge = start_bridge(SENSORPIPE_WEB_PASSWORD=PASSWORD)
    for _ in range(10):
        assert requests.post(bridge.url + "/login", data={"password": "guess"}, timeout=10).status_code == 401
    blocked = requests.post(bridge.url + "/login", data={"password": PASSWORD}, allow_redirects=False, timeout=10)
    assert blocked.status_code == 429  # even the right one, until the window passes
    # Without SENSORPIPE_WEB_PROXIES an X-Forwarded-For header changes nothing.
    assert _login(bridge, PASSWORD, forwarded_for="198.51.100.2").status_code == 429
    foreign = requests.post(
        bridge.url + "/login", data={"password": PASSWORD}, headers={"Origin": "http://evil.example"}, timeout=10
    )
    assert foreign.status_code == 403


def test_behind_a_proxy_wrong_passwords_are_counted_per_client(start_bridge: Callable[..., BridgeProcess]) -> None:
    """SENSORPIPE_WEB_PROXIES=1: the client is the last X-Forwarded-For entry, the one the proxy
    added. These requests carry the header as nginx would send it; nginx itself runs the same
    setting in tests/test_side_doors.py."""
    bridge = start_bridge(SENSORPIPE_WEB_PASSWORD=PASSWORD, SENSORPIPE_WEB_PROXIES="1")
    for _ in range(10):
        assert _login(bridge, "guess", forwarded_for="203.0.113.7").status_code == 401
    assert _login(bridge, PASSWORD, forwarded_for="203.0.113.7").status_code == 429
    assert _login(bridge, PASSWORD, forwarded_for="198.51.100.2").status_code == 302  # another client
    # A client cannot choose its address: what it sends itself comes before the proxy's entry.
    assert _login(bridge, PASSWORD, forwarded_for="198.51.100.9, 203.0.113.7").status_code == 429


def _login(bridge: BridgeProcess, password: str, forwarded_for: str) -> requests.Response:
    return requests.post(
        bridge.url + "/login",
        data={"password": password},
        headers={"X-Forwarded-For": forwarded_for},
        allow_redirects=False,
        timeout=10,
    )


def test_no_server_credential_reaches_the_browser(
    start_bridge: Callable[..., BridgeProcess], broker: Server, mqtt_client: Mqtt, prefix: str
) -> None:
    # The test broker and InfluxDB accept any credentials; these only have to be configured.
    mqtt_secret, influx_secret = "mqtt-secret-4711", "influx-secret-0815"
    bridge = start_bridge(
        SENSORPIPE_MQTT_URL=f"mqtt://bridge:{mqtt_secret}@127.0.0.1:{broker.port}",
        SENSORPIPE_INFLUX_TOKEN=f"admin:{influx_secret}",
        SENSORPIPE_WEB_PASSWORD=PASSWORD,
    )
    mqtt_client.publish(f"{prefix}/desk/reading", {"temperature": 21.0})
    mqtt_client.publish(f"{prefix}/desk/reading", b"garbage")
    session = requests.Session()
    session.post(bridge.url + "/login", data={"password": PASSWORD})
    wait_until(lambda: session.get(bridge.url + "/api/devices").json(), 20, "the device known")
    answers = [
        session.get(bridge.url + path, timeout=10)
        for path in (
            "/",
            "/device/desk",
            "/static/common.js",
            "/static/live.js",
            "/static/overview.js",
            "/static/device.js",
            "/api/devices",
            "/api/rejections",
            "/api/history?device=desk&metric=temperature",
            "/api/sparklines?device=desk",
            "/api/pipeline",
            "/healthz",
            "/metrics",
            "/report?device=desk",
            "/api/report?device=desk",
            "/api/report.pdf?device=desk",
        )
    ]
    assert [a.url for a in answers if a.status_code != 200] == []
    bodies = [a.text for a in answers] + [bridge.log()]  # the bridge's own log, too
    for secret in (mqtt_secret, influx_secret, PASSWORD):
        assert not any(secret in body for body in bodies), secret


def test_the_browser_signs_in_and_shows_device_strings_as_text(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str, page: Any, artifacts: Path
) -> None:
    bridge = start_bridge(SENSORPIPE_WEB_PASSWORD=PASSWORD)
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:  # an alert() would mean device data ran as code
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto(bridge.url + "/")
    page.wait_for_selector("form.login")
    page.screenshot(path=str(artifacts / "login.png"))
    page.fill("#password", "guess")
    page.click("button[type=submit]")
    page.wait_for_selector(".error")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector('#connection[data-state="connected"]')

    # Strings from a device: its location tag, and a device id that is markup (refused, listed).
    mqtt_client.publish(f"{prefix}/lab/reading", {"temperature": 20.5, "location": XSS, "sensor": "<b>dht22</b>"})
    mqtt_client.publish(f"{prefix}/{XSS}/reading", {"temperature": 1.0})
    wait_until(lambda: bridge_devices(page), 20, "the device on the dashboard")
    page.reload()
    page.wait_for_selector('article[data-device="lab"] .origin:not(:empty)')
    assert page.text_content('article[data-device="lab"] .origin') == f"{XSS} · <b>dht22</b>"
    assert page.query_selector("article img, article b") is None
    assert dialogs == []
    rejected = page.evaluate("fetch('/api/rejections').then((r) => r.json())")
    assert any(item["reason"] == "bad_device" for item in rejected["latest"])

    page.click(".logout button")
    page.wait_for_selector("form.login")
    assert page.evaluate("fetch('/api/devices').then((r) => r.status)") == 401


def test_a_page_whose_session_ended_goes_to_the_login_form_on_reconnect(
    start_bridge: Callable[..., BridgeProcess], page: Any
) -> None:
    """The device page fetches nothing on a timer: only Socket.IO's refusal tells it (on the
    reconnect after a cut, or on its next long poll if it had not upgraded to a websocket).

    Signed out elsewhere (another tab posts /logout with the same cookie): the session ends
    on the server. (Clearing the browser's cookie instead raced: a response still on its
    way, the page's own fetches after connecting, set the refreshed cookie again.)"""
    bridge = start_bridge(SENSORPIPE_WEB_PASSWORD=PASSWORD)
    proxy = CuttableProxy(bridge.port)
    try:
        page.goto(f"http://127.0.0.1:{proxy.port}/device/lab")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector('#connection[data-state="connected"]')
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        other_tab = requests.post(bridge.url + "/logout", cookies=cookies, allow_redirects=False, timeout=10)
        assert other_tab.status_code in (302, 303)
        assert requests.get(bridge.url + "/api/devices", cookies=cookies, timeout=10).status_code == 401
        proxy.cut()
        # Either the cut shows first, or the page learned it already: a Socket.IO long poll
        # (before the upgrade to a websocket, one at most every 10 s) answered 401 meanwhile.
        page.wait_for_selector('#connection[data-state="disconnected"], form.login')
        proxy.restore()
        page.wait_for_selector("form.login", timeout=60_000)
        assert page.url.endswith("/login?next=%2Fdevice%2Flab")
    finally:
        proxy.close()


def bridge_devices(page: Any) -> bool:
    return bool(page.evaluate("fetch('/api/devices').then((r) => r.json())"))


@pytest.mark.parametrize("secure", ["0", "1"])
def test_the_login_cookie_is_http_only_same_site_lasts_31_days_and_is_secure_when_asked(
    start_bridge: Callable[..., BridgeProcess], secure: str
) -> None:
    """`SENSORPIPE_WEB_SECURE_COOKIE=1` (behind a TLS proxy) marks the cookie Secure, so a
    browser never sends it over plain HTTP; either way script cannot read it (HttpOnly),
    other sites' requests do not carry it (SameSite=Lax), and it lasts 31 days."""
    bridge = start_bridge(SENSORPIPE_WEB_PASSWORD=PASSWORD, SENSORPIPE_WEB_SECURE_COOKIE=secure)
    answer = requests.post(bridge.url + "/login", data={"password": PASSWORD}, allow_redirects=False, timeout=10)
    assert answer.status_code in (302, 303)
    cookie = answer.headers["Set-Cookie"]
    attributes = {part.strip().split("=", 1)[0].lower(): part.strip() for part in cookie.split(";")}
    assert cookie.startswith("sensorpipe_session=") and "httponly" in attributes
    assert attributes["samesite"] == "SameSite=Lax"
    assert ("secure" in attributes) is (secure == "1")
    expires = email.utils.parsedate_to_datetime(attributes["expires"].split("=", 1)[1])
    days = (expires - datetime.now(UTC)).total_seconds() / 86400
    assert 30.9 < days <= 31.0


def _login_from(source: str, bridge: BridgeProcess, password: str, forwarded_for: str) -> int:
    """A login sent from the loopback address `source` (127.0.0.2: another host, here)."""
    body = urlencode({"password": password})
    connection = http.client.HTTPConnection("127.0.0.1", bridge.port, timeout=10, source_address=(source, 0))
    try:
        connection.request(
            "POST",
            "/login",
            body,
            {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": forwarded_for},
        )
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_forwarded_address_is_believed_from_the_named_proxy_only(
    start_bridge: Callable[..., BridgeProcess],
) -> None:
    """SENSORPIPE_WEB_PROXY_FROM=localhost (a host name, looked up): a client reaching the
    bridge directly (from 127.0.0.2) cannot dodge the throttle with a new X-Forwarded-For for
    every guess, while behind the proxy (127.0.0.1) the clients are still told apart."""
    bridge = start_bridge(
        SENSORPIPE_WEB_PASSWORD=PASSWORD, SENSORPIPE_WEB_PROXIES="1", SENSORPIPE_WEB_PROXY_FROM="localhost"
    )
    for n in range(10):
        assert _login_from("127.0.0.2", bridge, "guess", forwarded_for=f"198.51.100.{n}") == 401
    assert _login_from("127.0.0.2", bridge, PASSWORD, forwarded_for="198.51.100.77") == 429
    for _ in range(10):
        assert _login_from("127.0.0.1", bridge, "guess", forwarded_for="203.0.113.7") == 401
    assert _login_from("127.0.0.1", bridge, PASSWORD, forwarded_for="203.0.113.7") == 429
    assert _login_from("127.0.0.1", bridge, PASSWORD, forwarded_for="203.0.113.8") == 302
