"""The dashboard in headless Chromium: history on open, live updates, nothing from a CDN."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.reading import format_ts, now_us
from tests.conftest import BridgeProcess, Mqtt, Program
from tests.waiting import wait_until


def chart_points(page: Any, device: str, metric: str) -> int:
    selector = f'article[data-device="{device}"] .chart[data-metric="{metric}"]'
    value = page.get_attribute(selector, "data-points")
    return int(value or 0)


def test_history_then_live_points_and_a_new_device_appears(
    start_bridge: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    mqtt_client: Mqtt,
    prefix: str,
    page: Any,
    artifacts: Path,
) -> None:
    bridge = start_bridge()
    minute_us = 60_000_000
    for minutes_ago in range(30, 0, -1):  # half an hour of history, one reading a minute
        ts = format_ts(now_us() - minutes_ago * minute_us)
        mqtt_client.publish(f"{prefix}/desk/reading", {"ts": ts, "temperature": 20 + minutes_ago / 10})
    wait_until(lambda: bridge.get("/api/devices"), what="the device known to the bridge")

    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
    page.goto(bridge.url + "/")
    page.wait_for_selector('#connection[data-state="connected"]')
    wait_until(lambda: chart_points(page, "desk", "temperature") == 30, what="30 history points on the chart")
    assert page.text_content('article[data-device="desk"] .name') == "desk"

    # A live reading: one more point, and the latest value shown.
    mqtt_client.publish(f"{prefix}/desk/reading", {"temperature": 23.4})
    wait_until(lambda: chart_points(page, "desk", "temperature") == 31, what="the live point on the chart")
    page.wait_for_function(
        """() => document.querySelector('article[data-device="desk"] .latest [data-metric="temperature"] dd')
                   ?.textContent === '23.4 °C'"""
    )

    # A publisher that starts now shows up without a reload, online, with both charts moving.
    publisher = run_publisher("sim-live", SENSORPIPE_INTERVAL="0.5")
    try:
        page.wait_for_selector('article[data-device="sim-live"] .online[data-state="online"]')
        wait_until(lambda: chart_points(page, "sim-live", "humidity") >= 3, what="live humidity points")
        wait_until(lambda: chart_points(page, "sim-live", "temperature") >= 3, what="live temperature points")
        page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
    finally:
        publisher.stop()
    page.wait_for_selector('article[data-device="sim-live"] .online[data-state="offline"]')
    # Told by the push, the publisher's own `offline` (not found later by a refetch).
    assert '42["status",{"device":"sim-live","online":false}]' in frames

    assert requested, "the page made no requests"
    assert all(url.startswith(bridge.url) for url in requested), [u for u in requested if bridge.url not in u]


def test_a_new_install_shows_how_to_publish_a_first_reading(
    start_bridge: Callable[..., BridgeProcess], page: Any
) -> None:
    bridge = start_bridge()
    page.goto(bridge.url + "/")
    page.wait_for_selector("#empty:not([hidden])")
    assert "mosquitto_pub" in page.text_content("#empty")


def test_poison_never_blanks_the_dashboard_and_an_empty_retained_message_clears(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str, page: Any
) -> None:
    # Left behind, retained, by an unlucky publisher: this used to make /api/devices answer
    # a bare NaN after every restart, and the pages drew nothing at all.
    mqtt_client.publish(f"{prefix}/broken/health", b'{"reads_ok": NaN}', retain=True)
    bridge = start_bridge()
    health = {"reads_ok": 9, "reads_failed": 2, "last_error": None, "outbox_depth": 0, "uptime_s": 60}
    mqtt_client.publish(f"{prefix}/desk/health", json.dumps(health).encode(), retain=True)
    mqtt_client.publish(f"{prefix}/desk/status", b"online", retain=True)
    # A Latin-1 location (not UTF-8) and a lone surrogate, between good readings.
    for index, poison in enumerate([b'{"location": "K\xfcche", "temperature": 1}', b'{"sensor": "\\ud800", "t": 1}']):
        ts = format_ts(now_us() - (1 - index) * 60_000_000)  # a minute apart: two sparkline buckets
        mqtt_client.publish(f"{prefix}/desk/reading", {"ts": ts, "temperature": 21 + index})
        mqtt_client.publish(f"{prefix}/kitchen/reading", poison)
    wait_until(lambda: len(bridge.get("/api/rejections")["latest"]) == 3, what="the three refused")

    page.goto(bridge.url + "/")
    wait_until(lambda: chart_points(page, "desk", "temperature") == 2, what="desk's two readings on its sparkline")
    card = 'article[data-device="desk"]'
    page.wait_for_selector(f'{card} .online[data-state="online"]')
    assert "2 failed reads" in (page.text_content(f"{card} .health") or "")
    assert page.locator('article[data-device="broken"]').count() == 0
    assert page.locator('article[data-device="kitchen"]').count() == 0

    # Empty retained messages clear what they stood for, live.
    mqtt_client.publish(f"{prefix}/desk/health", b"", retain=True)
    mqtt_client.publish(f"{prefix}/desk/status", b"", retain=True)
    page.wait_for_function(f"() => document.querySelector('{card} .health').textContent === ''")
    page.wait_for_selector(f'{card} .online[data-state="unknown"]')

    page.goto(bridge.url + "/device/desk")
    page.wait_for_selector('#charts .chart[data-metric="temperature"][data-points="2"]')
