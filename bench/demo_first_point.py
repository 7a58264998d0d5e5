"""How long from a fresh clone to the first point plotted on the demo's dashboard.

    .venv/bin/python bench/demo_first_point.py [--runs 3]

Each run clones this repository's HEAD into a temporary folder, runs `scripts/demo` there
(which installs the venv and npm packages into the clone; Debian packages already on the
machine are not installed again), opens the printed dashboard in headless Chromium and
waits for the first plotted point. Prints each run and the median.
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.browser import chromium_executable  # noqa: E402


def one_run() -> tuple[float, float, float]:
    """(seconds to the demo printing its address, to the page loaded, to the first point)."""
    with tempfile.TemporaryDirectory() as folder:
        clone = Path(folder) / "sensorpipe"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        started = time.monotonic()
        demo = subprocess.Popen(
            ["scripts/demo"], cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            assert demo.stdout is not None
            output = ""
            while "Dashboard:" not in output:
                line = demo.stdout.readline()
                if not line and demo.poll() is not None:
                    raise RuntimeError(f"the demo exited: {output}")
                output += line
            ready = time.monotonic() - started
            match = re.search(r"Dashboard:\s+(\S+)", output)
            assert match
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium_executable(), headless=True)
                page = browser.new_page()
                page.goto(match.group(1))
                loaded = time.monotonic() - started
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.chart')].some(c => Number(c.dataset.points) > 0)",
                    timeout=120_000,
                )
                plotted = time.monotonic() - started
                browser.close()
        finally:
            demo.send_signal(signal.SIGINT)
            demo.communicate(timeout=60)
    return ready, loaded, plotted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    plotted_all = []
    for run in range(1, args.runs + 1):
        ready, loaded, plotted = one_run()
        plotted_all.append(plotted)
        print(f"run {run}: demo ready {ready:.1f} s, page loaded {loaded:.1f} s, first point plotted {plotted:.1f} s")
    print(
        f"median from fresh clone to first plotted point: {statistics.median(plotted_all):.1f} s over {args.runs} runs"
    )
    print("reproduce: .venv/bin/python bench/demo_first_point.py --runs", args.runs)


if __name__ == "__main__":
    main()
