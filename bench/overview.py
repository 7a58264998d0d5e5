"""The overview page with thousands of devices: how long until it shows them, and whether
every sparkline arrives.

    .venv/bin/python bench/overview.py [--devices 1000 10000] [--runs 3] [--bridge-root DIR]

For each device count: a private Mosquitto and InfluxDB 1.6.7, an hour of history per device
(one reading a minute) written to InfluxDB, then a real `python -m bridge` (from this
checkout, or from `--bridge-root`, another checkout with its own .venv and node_modules, to
compare), which learns the devices at start. Headless Chromium (Debian's, via Playwright)
opens the overview `--runs` times and measures, from navigation:
- cards: every device's card is on the page;
- on screen: every card in the first screenful has its sparklines drawn;
- last card: after scrolling to the end, the last device's sparklines are drawn;
- failed requests: requests that failed or answered 4xx/5xx.
Prints the medians and each run; a step that takes over 120 s is reported as not done.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.lineprotocol import to_line  # noqa: E402
from common.reading import Reading, now_us  # noqa: E402
from devstack.browser import chromium_executable  # noqa: E402
from devstack.loadgen import start_bridge, wait_healthy  # noqa: E402
from devstack.servers import private_stack  # noqa: E402

PREFIX = "bench"
MINUTE_US = 60_000_000
STEP_TIMEOUT_MS = 120_000


def write_history(influx_url: str, devices: int) -> None:
    """An hour per device, one reading a minute, up to now."""
    requests.post(influx_url + "/query", params={"q": "CREATE DATABASE sensors"}, timeout=30).raise_for_status()
    now = now_us()
    lines: list[str] = []
    for index in range(devices):
        device = f"device-{index:05d}"
        for minute in range(60, 0, -1):
            reading = Reading(device, now - minute * MINUTE_US, {"temperature": 20 + minute / 10, "humidity": 45.0})
            lines.append(to_line(reading, "environment"))
        if len(lines) >= 50_000 or index == devices - 1:
            response = requests.post(
                influx_url + "/write", params={"db": "sensors", "precision": "u"}, data="\n".join(lines), timeout=120
            )
            response.raise_for_status()
            lines = []


def one_load(browser: Any, url: str, devices: int) -> dict[str, float | None]:
    """Seconds to each milestone (None: not within the step timeout) and the failures."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    failed = 0

    def on_response(response: Any) -> None:
        nonlocal failed
        failed += response.status >= 400

    def on_failed(request: Any) -> None:
        nonlocal failed
        failed += 1

    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    times: dict[str, float | None] = {}
    started = time.perf_counter()
    page.goto(url + "/", wait_until="commit")
    steps = {
        "cards": f"() => document.querySelectorAll('article.device').length >= {devices}",
        "on screen": """() => {
            const cards = [...document.querySelectorAll('article.device')].filter((card) => {
              const box = card.getBoundingClientRect();
              return box.top < window.innerHeight && box.bottom > 0;
            });
            const drawn = (card) => card.querySelector('.chart[data-points]:not([data-points="0"])');
            return cards.length > 0 && cards.every(drawn);
        }""",
    }
    for name, condition in steps.items():
        try:
            page.wait_for_function(condition, timeout=STEP_TIMEOUT_MS, polling=100)
            times[name] = time.perf_counter() - started
        except Exception:  # a step that does not finish is a result, not a crash of the benchmark
            times[name] = None
    try:
        if times["cards"] is None:  # a page that never showed its cards is busy: evaluate() would hang
            raise TimeoutError("no cards")
        scrolled = time.perf_counter()
        page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
        chart = f'article[data-device="device-{devices - 1:05d}"] .chart[data-points]:not([data-points="0"])'
        page.wait_for_function(
            f"() => document.querySelector('{chart}')",
            timeout=STEP_TIMEOUT_MS,
            polling=100,
        )
        times["last card"] = time.perf_counter() - scrolled
    except Exception:  # as above
        times["last card"] = None
    times["failed requests"] = failed
    context.close()
    return times


def shown(value: float | None) -> str:
    return "not done" if value is None else f"{value:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bridge-root", type=Path, default=ROOT)
    args = parser.parse_args()
    root = args.bridge_root.resolve()
    print(f"bridge from {root}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable(),
            headless=True,
            args=["--disable-background-networking", "--disable-component-update", "--no-first-run"],
        )
        for devices in args.devices:
            with tempfile.TemporaryDirectory() as folder, private_stack(Path(folder)) as stack:
                write_history(stack.influx_url, devices)
                settings = {"SENSORPIPE_MAX_DEVICES": str(max(devices, 10_000))}
                bridge, port = start_bridge(
                    stack.broker.port, stack.influx_url, PREFIX, Path(folder) / "bridge.log", settings, root=root
                )
                url = f"http://127.0.0.1:{port}"
                try:
                    wait_healthy(url, bridge)
                    runs = [one_load(browser, url, devices) for _ in range(args.runs)]
                finally:
                    bridge.terminate()
                    bridge.wait(30)
            parts = []
            for name in ("cards", "on screen", "last card"):
                values = [run[name] for run in runs]
                done = [v for v in values if v is not None]
                median = statistics.median(done) if len(done) == len(values) else None
                parts.append(f"{name} {shown(median)} (runs: {', '.join(shown(v) for v in values)})")
            failures = [int(run["failed requests"] or 0) for run in runs]
            print(f"{devices:,} devices: " + "; ".join(parts) + f"; failed requests per run: {failures}")
        browser.close()
    extra = f" --bridge-root {args.bridge_root}" if root != ROOT else ""
    print(
        f"reproduce: .venv/bin/python bench/overview.py --devices {' '.join(map(str, args.devices))} "
        f"--runs {args.runs}{extra}"
    )


if __name__ == "__main__":
    main()
