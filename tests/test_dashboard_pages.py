"""The overview and the device page in headless Chromium: ranges, live, CSV, reconnect
without a hole, only the device on screen streamed, health and staleness, a phone screen."""

from __future__ import annotations

import csv
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from bridge.influx import InfluxV1
from bridge.lineprotocol import to_line
from common.reading import Reading, now_us
from tests.conftest import BridgeProcess, Mqtt, Program
from tests.faults import CuttableProxy
from tests.waiting import wait_settled, wait_until

MINUTE_US = 60_000_000


def chart_points(page: Any, selector: str) -> int:
    return int(page.get_attribute(selector, "data-points") or 0)


def stored(influx: InfluxV1, device: str, since: str = "1h") -> int:
    series = influx.query(
        f"SELECT count(temperature) FROM environment WHERE device = '{device}' AND time > now() - {since}"
    )
    return int(series[0]["values"][0][1]) if series else 0


def write_history(influx: InfluxV1, device: str, minutes: int, skip: range = range(0)) -> list[int]:
    """One reading a minute for `minutes` up to now (minus the minutes in `skip`); their
    times (µs), to count those in the window a chart shows (`in_window`)."""
    now = now_us()
    readings = [
        Reading(device, now - m * MINUTE_US, {"temperature": 20 + m % 7, "humidity": 50.0}, seq=minutes - m)
        for m in range(minutes, 0, -1)
        if m not in skip
    ]
    influx.write([to_line(reading, "environment") for reading in readings])
    return [reading.ts_us for reading in readings]


def in_window(page: Any, selector: str, stamps: list[int]) -> int:
    """How many of these times (µs) fall in the window the chart was last drawn for: what
    it should show, whenever the test looks (a range ending now moves on)."""
    start, end = (int(ms) for ms in (page.get_attribute(selector, "data-window") or "0 0").split())
    return sum(start * 1000 <= ts <= end * 1000 for ts in stamps)


def test_device_page_ranges_live_points_and_csv(
    start_bridge: Callable[..., BridgeProcess],
    influx: InfluxV1,
    mqtt_client: Mqtt,
    prefix: str,
    page: Any,
    artifacts: Path,
    tmp_path: Path,
) -> None:
    stamps = write_history(influx, "lab", 2 * 24 * 60, skip=range(20, 40))  # two days, 20 minutes missing
    bridge = start_bridge()  # learns the device from InfluxDB
    page.goto(bridge.url + "/device/lab?range=1h")
    page.wait_for_selector('#connection[data-state="connected"]')
    temperature = '#charts .chart[data-metric="temperature"]'
    # Minutes 1-19 and 40-59 ago (the reading of exactly an hour ago is just outside).
    wait_until(
        lambda: chart_points(page, temperature) == in_window(page, temperature, stamps) >= 38,
        20,
        "the last hour: 39 readings (20 missing)",
    )
    # The note is written once every metric's history is in (humidity may come after).
    wait_until(lambda: "as stored" in (page.text_content("#range-note") or ""), 20, "the range note")
    # The missing 20 minutes are one gap in the drawn line (a null between the points), not
    # a line across.
    assert page.get_attribute(temperature, "data-gaps") == "1"

    mqtt_client.publish(f"{prefix}/lab/reading", {"temperature": 30.5, "humidity": 40.0})
    wait_until(
        lambda: chart_points(page, temperature) == in_window(page, temperature, stamps) + 1,
        20,
        "the live reading on the chart",
    )

    page.click('button[data-range="7d"]')
    wait_until(lambda: "mean of" in (page.text_content("#range-note") or ""), 20, "the 7 d range, downsampled")
    points_7d = chart_points(page, temperature)
    assert 0 < points_7d <= 1200  # about one point per pixel of a 1200 px page, not 2,860 readings
    page.screenshot(path=str(artifacts / "device-7d.png"), full_page=True)

    def last_15m() -> bool:  # the history in the window, and the live reading
        return chart_points(page, temperature) == in_window(page, temperature, stamps) + 1

    page.click('button[data-range="15m"]')
    wait_until(last_15m, 20, "15 minutes: 14 readings and the live one")

    # Pan: half a range earlier is a fixed window, 15 minutes wide, ending 7.5 minutes ago.
    page.click("#earlier")
    wait_until(lambda: 0 < chart_points(page, temperature) == in_window(page, temperature, stamps), 20, "earlier")
    page.click('button[data-range="15m"]')
    wait_until(last_15m, 20, "back to the last 15 minutes")
    shown = chart_points(page, temperature)

    with page.expect_download() as download_info:
        page.click("#csv")
    path = tmp_path / "download.csv"
    download_info.value.save_as(path)
    rows = list(csv.DictReader(path.open()))
    assert {row["metric"] for row in rows} == {"temperature", "humidity"}
    assert len([r for r in rows if r["metric"] == "temperature"]) == shown
    assert "30.5" in {r["value"] for r in rows}
    page.screenshot(path=str(artifacts / "device.png"), full_page=True)


def test_reconnect_leaves_no_hole_and_only_the_shown_device_is_streamed(
    start_bridge: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    influx: InfluxV1,
    page: Any,
) -> None:
    bridge = start_bridge()
    proxy = CuttableProxy(bridge.port)
    other = run_publisher("other", SENSORPIPE_INTERVAL="0.5")
    shown = run_publisher("shown", SENSORPIPE_INTERVAL="0.5")
    try:
        frames: list[str] = []
        page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
        page.goto(f"http://127.0.0.1:{proxy.port}/device/shown?range=15m")
        page.wait_for_selector('#connection[data-state="connected"]')
        wait_until(lambda: chart_points(page, '#charts .chart[data-metric="temperature"]') >= 4, 20, "live points")
        proxy.cut()  # readings go on being stored; none reaches the page
        cut_at = time.monotonic()
        page.wait_for_selector('#connection[data-state="disconnected"]')
        during = stored(influx, "shown", "15m") + 3
        wait_until(lambda: stored(influx, "shown", "15m") >= during, 20, "three readings stored during the cut")
        # Longer than the bridge's replay to a reconnecting page (5 s + 3 write intervals, 8 s
        # here: webui/live.py), which alone would fill a short hole: the first seconds of the
        # cut only the page's refetch of its range can bring back.
        wait_until(lambda: time.monotonic() > cut_at + 11, 20, "the cut outlasting the replay")
        proxy.restore()
        page.wait_for_selector('#connection[data-state="connected"]', timeout=30_000)
        shown.stop(signal.SIGTERM)
        count = wait_settled(lambda: stored(influx, "shown", "15m"), 1.5, what="shown's stored count")
        temperature = '#charts .chart[data-metric="temperature"]'
        wait_until(
            lambda: chart_points(page, '#charts .chart[data-metric="temperature"]') == count,
            20,
            f"all {count} stored readings on the chart (it has {chart_points(page, temperature)})",
        )
        readings = [f for f in frames if f.startswith('42["readings"')]
        assert readings and all('"device":"other"' not in f for f in readings)
    finally:
        proxy.close()
        other.stop()


def test_the_overview_fetches_the_devices_again_after_a_reconnect(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str, page: Any
) -> None:
    """A device whose only reading arrived while the page was cut off, longer ago than the
    10 s the bridge replays to a reconnecting page (webui/live.py), gets its card and value
    once the page is back: only the overview's fetch on reconnect can bring it."""
    bridge = start_bridge()
    proxy = CuttableProxy(bridge.port)
    try:
        mqtt_client.publish(f"{prefix}/first/reading", {"temperature": 20.0})
        wait_until(lambda: bridge.get("/api/devices"), 20, "the first device known")
        page.goto(f"http://127.0.0.1:{proxy.port}/")
        page.wait_for_selector('article[data-device="first"]')
        page.wait_for_selector('#connection[data-state="connected"]')
        proxy.cut()
        page.wait_for_selector('#connection[data-state="disconnected"]')
        mqtt_client.publish(f"{prefix}/during/reading", {"temperature": 7.5})
        wait_until(lambda: len(bridge.get("/api/devices")) == 2, 20, "the bridge knows the second device")
        past_replay = time.monotonic() + 11
        wait_until(lambda: time.monotonic() > past_replay, 20, "the reading older than the replay")
        assert page.query_selector('article[data-device="during"]') is None
        proxy.restore()
        page.wait_for_selector('#connection[data-state="connected"]', timeout=30_000)
        value = 'article[data-device="during"] [data-metric="temperature"] dd'
        page.wait_for_selector(value, timeout=20_000)
        assert page.text_content(value) == "7.5 °C"
    finally:
        proxy.close()


def test_overview_health_stale_pipeline_and_a_phone_screen(
    start_bridge: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    browser: Any,
    artifacts: Path,
) -> None:
    bridge = start_bridge()
    flaky = run_publisher(
        "flaky", SENSORPIPE_INTERVAL="0.3", SENSORPIPE_SIM_FAIL_RATE="0.3", SENSORPIPE_HEALTH_INTERVAL="0.5"
    )
    # A phone in dark mode: the page follows the system's colour scheme.
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    page = context.new_page()
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
    try:
        page.goto(bridge.url + "/")
        page.wait_for_selector('#connection[data-state="connected"]')
        wait_until(
            lambda: chart_points(page, 'article[data-device="flaky"] .chart[data-metric="temperature"]') >= 5,
            20,
            "sparkline",
        )
        page.wait_for_function("document.querySelector('#pipeline .rate').textContent.includes('readings/s')")
        assert (page.text_content("#pipeline .mqtt") or "").strip() == "MQTT connected"  # not "disconnected"
        assert "InfluxDB 1.6" in (page.text_content("#pipeline .influx") or "")
        # Health reports (every 0.5 s here) are pushed: the count of failed reads moves on
        # without a reload, and the frames carried them.
        health = 'article[data-device="flaky"] .health'
        first = wait_until(lambda: "failed reads" in (text := page.text_content(health) or "") and text, 20, "health")
        wait_until(lambda: page.text_content(health) != first, 20, f"a newer health report than {first!r}")
        assert any(f.startswith('42["health",{"device":"flaky"') for f in frames)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(21, 23, 27)"  # dark
        page.screenshot(path=str(artifacts / "overview-phone.png"), full_page=True)
        flaky.stop(signal.SIGKILL)  # gone without a word: only staleness tells
        page.wait_for_selector('article[data-device="flaky"] .stale:not([hidden])', timeout=20_000)
        page.goto(bridge.url + "/device/flaky")
        page.wait_for_selector('#charts .chart[data-metric="humidity"]')
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(artifacts / "device-phone.png"), full_page=True)
    finally:
        context.close()


def test_a_devices_metrics_keep_one_order_with_their_units(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str, page: Any
) -> None:
    """Readings name their metrics in any order (and the device page fetches each chart's
    history at once, which arrive in any order): the overview's values and sparklines and
    the device page's charts are always temperature, humidity, pressure, then the others by
    name, each with its unit."""
    bridge = start_bridge()
    mqtt_client.publish(
        f"{prefix}/bench/reading",
        {"zeta": 1.0, "pressure": 1013.2, "humidity": 40.0, "co2": 420.0, "temperature": 21.0},
    )
    wanted = ["temperature", "humidity", "pressure", "co2", "zeta"]
    page.goto(bridge.url + "/")
    card = 'article[data-device="bench"]'
    page.wait_for_function(f"() => document.querySelectorAll('{card} .latest [data-metric]').length === 5")
    order = "(selector) => [...document.querySelectorAll(selector)].map((el) => el.dataset.metric)"
    assert page.evaluate(order, f"{card} .latest [data-metric]") == wanted
    assert page.text_content(f'{card} .latest [data-metric="pressure"] dd') == "1013.2 hPa"
    page.wait_for_function(f"() => document.querySelectorAll('{card} .charts .chart').length === 5")
    assert page.evaluate(order, f"{card} .charts .chart") == wanted
    for _ in range(3):  # each load: the five history requests answer in their own order
        page.goto(bridge.url + "/device/bench")
        page.wait_for_function("() => document.querySelectorAll('#charts .chart').length === 5")
        assert page.evaluate(order, "#charts .chart") == wanted
    assert page.text_content('#charts .chart[data-metric="pressure"] h2') == "pressure (hPa)"


def test_two_sensors_on_one_card_each_metric_with_its_unit_and_the_failing_one_named(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str, page: Any
) -> None:
    """A publisher with a DHT22 in the room and a DS18B20 named freezer: one card, the room's
    metrics first, then the freezer's, each with the unit of the metric it ends in (and in °F
    when chosen); the health line says which sensor fails, and its title the corrections."""
    bridge = start_bridge()
    mqtt_client.publish(
        f"{prefix}/cold-room/reading",
        {"freezer_temperature": -18.5, "zeta": 1.0, "humidity": 40.0, "temperature": 21.0, "dew_point": 7.0},
    )
    health = {
        "reads_ok": 10,
        "reads_failed": 3,
        "last_error": "1-Wire CRC mismatch",
        "outbox_depth": 0,
        "uptime_s": 20,
        "sensors": {
            "dht22": {"driver": "dht22", "reads_ok": 5, "reads_failed": 0, "last_error": None},
            "freezer": {"driver": "ds18b20", "reads_ok": 5, "reads_failed": 3, "last_error": "1-Wire CRC mismatch"},
        },
        "calibration": {"freezer_temperature": {"gain": 0.98361, "offset": -0.0328, "since": "2026-12-01T08:00:00Z"}},
    }
    mqtt_client.publish(f"{prefix}/cold-room/health", health, retain=True)
    card = 'article[data-device="cold-room"]'
    page.goto(bridge.url + "/")
    page.wait_for_function(f"() => document.querySelectorAll('{card} .latest [data-metric]').length === 5")
    order = "(selector) => [...document.querySelectorAll(selector)].map((el) => el.dataset.metric)"
    wanted = ["temperature", "humidity", "dew_point", "zeta", "freezer_temperature"]
    assert page.evaluate(order, f"{card} .latest [data-metric]") == wanted
    assert page.text_content(f'{card} .latest [data-metric="freezer_temperature"] dd') == "-18.5 °C"
    page.wait_for_function(f"() => document.querySelector('{card} .health').textContent.includes('freezer')")
    line = page.text_content(f"{card} .health")
    assert "dht22: 0 failed reads" in line and "freezer: 3 failed reads" in line and "calibrated" in line
    title = page.get_attribute(f"{card} .health", "title") or ""
    assert "freezer: 1-Wire CRC mismatch" in title and "freezer_temperature" in title and "2026-12-01" in title
    page.click("#units")
    page.wait_for_function(f"() => document.querySelector('{card} .latest [data-metric=\"freezer_temperature\"] dd')")
    assert page.text_content(f'{card} .latest [data-metric="freezer_temperature"] dd') == "-1.3 °F"
    page.goto(bridge.url + "/device/cold-room")
    page.wait_for_function("() => document.querySelectorAll('#charts .chart').length === 5")
    assert page.evaluate(order, "#charts .chart") == wanted
    assert page.text_content('#charts .chart[data-metric="freezer_temperature"] h2') == "freezer_temperature (°F)"


def test_temperatures_in_fahrenheit_by_the_viewers_choice(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str, page: Any, tmp_path: Path
) -> None:
    """The °F button: temperatures and dew points shown in °F on both pages, values, charts
    and the CSV (which says its unit), kept in the browser across loads; humidity as it was;
    what is stored and what the API answers stays in °C."""
    bridge = start_bridge()
    mqtt_client.publish(f"{prefix}/lab/reading", {"temperature": 20.0, "humidity": 40.0, "dew_point": 6.0})
    card = 'article[data-device="lab"]'
    page.goto(bridge.url + "/")
    page.wait_for_selector(f'{card} .latest [data-metric="temperature"] dd')
    assert page.text_content(f'{card} .latest [data-metric="temperature"] dd') == "20.0 °C"
    page.click("#units")  # loads the page again
    page.wait_for_function(f"() => document.querySelector('{card} .latest [data-metric=\"temperature\"] dd')")
    assert page.text_content(f'{card} .latest [data-metric="temperature"] dd') == "68.0 °F"
    assert page.text_content(f'{card} .latest [data-metric="dew_point"] dd') == "42.8 °F"
    assert page.text_content(f'{card} .latest [data-metric="humidity"] dd') == "40.0 %"
    assert page.text_content("#units") == "°C"  # the way back

    page.goto(bridge.url + "/device/lab")
    temperature = '#charts .chart[data-metric="temperature"]'
    page.wait_for_selector(f'{temperature}[data-points="1"]')
    assert page.text_content(f"{temperature} h2") == "temperature (°F)"
    with page.expect_download() as download_info:
        page.click("#csv")
    path = tmp_path / "lab.csv"
    download_info.value.save_as(path)
    rows = {row["metric"]: row for row in csv.DictReader(path.open(encoding="utf-8"))}
    assert (float(rows["temperature"]["value"]), rows["temperature"]["unit"]) == (68.0, "°F")
    assert (float(rows["humidity"]["value"]), rows["humidity"]["unit"]) == (40.0, "%")
    latest = requests.get(bridge.url + "/api/devices", timeout=10).json()[0]["latest"]
    assert latest["temperature"] == 20.0  # the API: °C, as stored
