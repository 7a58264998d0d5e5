"""Years of history: a device-year answered from the rollups, and a bridge that starts quickly.

    .venv/bin/python bench/history.py [--days 365] [--month-devices 9] [--every-s 2]

Starts a private Mosquitto and InfluxDB 1.6.7 (loopback, temporary folders) and fills it as
the history issue says: one device with a reading every `--every-s` seconds for `--days`
days, and `--month-devices` devices with 30 days each (written as raw line protocol, the way
an older bridge left them). Then:

1. disk: InfluxDB's data and WAL folders, raw only;
2. `python -m bridge rollups rebuild`, timed, and the disk again with the rollups;
3. a real bridge, with rollups (SENSORPIPE_ROLLUPS=1) and without (0): seconds from its start
   to /healthz 200 (it reads the newest reading of every device first), and
   `/api/history?since=365d` and `since=30d` at 1,000 points: median of 5 of each;
4. with rollups, headless Chromium (Playwright) on the year device's page: the year range
   opened, moved half a year earlier and back (the ◀ ▶ buttons), zoomed into a tenth by a
   drag and out by a double-click; each from the action to both charts drawn, median of 5.

Prints the figures and the command to reproduce.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from bridge.influx import InfluxTarget, InfluxV1  # noqa: E402
from bridge.rebuild import Rebuild  # noqa: E402
from devstack.browser import chromium_executable  # noqa: E402
from devstack.loadgen import fill_raw as fill  # noqa: E402
from devstack.loadgen import start_bridge  # noqa: E402
from devstack.servers import influxdb, mosquitto, wait_influx_ready  # noqa: E402

PREFIX = "bench"
DAY_S = 86_400


def folder_mib(folder: Path, pattern: str = "*") -> float:
    return sum(f.stat().st_size for f in folder.rglob(pattern) if f.is_file()) / 2**20


def settled_mib(server_folder: Path) -> float:
    """The TSM files' size once InfluxDB wrote its cache out (the WAL emptied). Not counted:
    the series file, 32 MiB preallocated per database whatever it holds."""
    deadline = time.monotonic() + 120
    while folder_mib(server_folder / "wal") > 1 and time.monotonic() < deadline:
        time.sleep(1)
    return folder_mib(server_folder / "data", "*.tsm")


def get_s(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as answer:
        body = json.load(answer)
    elapsed = time.perf_counter() - started
    if not body.get("points"):
        raise RuntimeError(f"{url}: no points")
    return elapsed


def browser_figures(url: str) -> dict[str, float]:
    """Median seconds of each action on the year device's page, from the action to its
    charts drawn (the page's `data-loaded`, then the next animation frame)."""
    timings: dict[str, list[float]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_executable(), headless=True)
        page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()

        def timed(name: str, action: Callable[[], object]) -> None:
            before = page.evaluate("Number(document.getElementById('device')?.dataset.loaded || 0)")
            started = time.perf_counter()
            action()
            page.wait_for_function(
                "(t) => Number(document.getElementById('device').dataset.loaded || 0) > t", arg=before, timeout=120_000
            )
            page.evaluate("new Promise((done) => requestAnimationFrame(() => done(0)))")
            timings.setdefault(name, []).append(time.perf_counter() - started)

        def drag() -> None:
            box = page.locator('#charts .chart[data-metric="temperature"] .u-over').bounding_box()
            assert box is not None
            y = box["y"] + box["height"] / 2
            page.mouse.move(box["x"] + box["width"] * 0.45, y)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.55, y, steps=5)
            page.mouse.up()

        for _ in range(5):
            timed("open the year", lambda: page.goto(url + "/device/year?range=365d", wait_until="commit"))
            timed("half a year earlier", lambda: page.click("#earlier"))
            timed("half a year later", lambda: page.click("#later"))
            timed("zoom into a tenth", drag)
            timed("zoom out", lambda: page.dblclick('#charts .chart[data-metric="temperature"] .u-over'))
        browser.close()
    return {name: statistics.median(runs) for name, runs in timings.items()}


def bridge_figures(
    stack_broker: int, influx_url: str, folder: Path, rollups: str
) -> tuple[float, float, float, str, dict[str, float]]:
    """(start s, since=365d median s, since=30d median s, 365d source, browser medians) of
    one bridge (the browser's with rollups only: without, each action takes seconds)."""
    started = time.monotonic()
    bridge, port = start_bridge(
        stack_broker, influx_url, PREFIX, folder / f"bridge-{rollups}.log", {"SENSORPIPE_ROLLUPS": rollups}
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if bridge.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the bridge did not start: {(folder / f'bridge-{rollups}.log').read_text()[-2000:]}"
                )
            time.sleep(0.05)
        start_s = time.monotonic() - started
        base = f"http://127.0.0.1:{port}/api/history?device=year&metric=temperature&points=1000"
        year = [get_s(base + "&since=365d") for _ in range(5)]
        month = [get_s(base + "&since=30d") for _ in range(5)]
        with urllib.request.urlopen(base + "&since=365d", timeout=120) as answer:
            source = json.load(answer).get("source", "raw")
        browser = browser_figures(f"http://127.0.0.1:{port}") if rollups == "1" else {}
    finally:
        bridge.terminate()
        bridge.wait(30)
    return start_s, statistics.median(year), statistics.median(month), source, browser


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--month-devices", type=int, default=9)
    parser.add_argument("--every-s", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name, contextlib.ExitStack() as running:
        folder = Path(name)
        broker = running.enter_context(mosquitto(folder / "mosquitto").serving())
        server = running.enter_context(influxdb(folder / "influxdb", snapshot_cold_s=5).serving())
        wait_influx_ready(server.port)
        influx_url = f"http://127.0.0.1:{server.port}"
        influx = InfluxV1(InfluxTarget(influx_url, "sensors"))
        influx.ensure_database()
        started = time.monotonic()
        points = fill(influx, "year", args.days, args.every_s)
        points += sum(fill(influx, f"month-{k}", 30, args.every_s) for k in range(args.month_devices))
        print(f"filled {points:,} raw points in {time.monotonic() - started:.0f} s")
        raw_mib = settled_mib(folder / "influxdb")
        started = time.monotonic()
        with open(folder / "rebuild.log", "w") as out:
            Rebuild(influx, "environment", folder / "rebuild-state.json", out).run(None, restart=True)
        rebuild_s = time.monotonic() - started
        total_mib = settled_mib(folder / "influxdb")
        per_year = raw_mib / (points / (DAY_S / args.every_s * 365))
        print(
            f"disk (TSM files, the WAL written out): {raw_mib:.1f} MiB raw, {total_mib:.1f} MiB with the rollups; "
            f"about {per_year:.0f} MiB per device-year raw at one reading every {args.every_s} s"
        )
        print(f"rollups rebuild of {args.days} days: {rebuild_s:.0f} s")
        for rollups in ("0", "1"):
            start_s, year_s, month_s, source, browser = bridge_figures(broker.port, influx_url, folder, rollups)
            print(
                f"bridge with SENSORPIPE_ROLLUPS={rollups}: started (healthz 200) in {start_s:.1f} s; "
                f"/api/history since=365d points=1000: median {year_s * 1000:.0f} ms (source {source}), "
                f"since=30d: median {month_s * 1000:.0f} ms"
            )
            if browser:
                print(
                    "device page in headless Chromium, action to both charts drawn, median of 5: "
                    + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in browser.items())
                )
    print(
        f"reproduce: .venv/bin/python bench/history.py --days {args.days} "
        f"--month-devices {args.month_devices} --every-s {args.every_s}"
    )


if __name__ == "__main__":
    main()
