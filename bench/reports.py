"""A month's report of ten devices at a reading every 2 s: how long the page and the PDF take.

    .venv/bin/python bench/reports.py [--devices 10] [--days 30] [--every-s 2] [--runs 3]

Starts a private Mosquitto and InfluxDB 1.6.7 (loopback, temporary folders), fills it with
`--devices` devices of `--days` days each, temperature and humidity every `--every-s`
seconds up to now (raw line protocol), starts a real bridge and times, `--runs` times each:
`/api/report?all=1` over the last `--days` days (the numbers, as the page gets them),
`/report?all=1` (the page, rendered) and `/api/report.pdf?all=1`. Prints the medians, the
PDF's size, and the command to reproduce. The target (issue "records people can sign"):
under 5 s on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.influx import InfluxTarget, InfluxV1  # noqa: E402
from bridge.rebuild import Rebuild  # noqa: E402
from devstack.loadgen import fill_raw, start_bridge  # noqa: E402
from devstack.servers import influxdb, mosquitto, wait_influx_ready  # noqa: E402

PREFIX = "bench"


def fetch(url: str) -> tuple[float, int]:
    """(seconds, bytes) of one GET that must answer 200."""
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=600) as answer:
        body = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{url} answered {answer.status}")
    return time.monotonic() - started, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--every-s", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rollups", choices=["0", "1"], default="1", help="read from the rollups (1) or raw only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name, contextlib.ExitStack() as running:
        folder = Path(name)
        broker = running.enter_context(mosquitto(folder / "mosquitto").serving())
        server = running.enter_context(influxdb(folder / "influxdb").serving())
        wait_influx_ready(server.port)
        influx_url = f"http://127.0.0.1:{server.port}"
        influx = InfluxV1(InfluxTarget(influx_url, "sensors"))
        influx.ensure_database()
        started = time.monotonic()
        points = sum(fill_raw(influx, f"room-{k}", args.days, args.every_s) for k in range(args.devices))
        print(f"filled {points:,} raw points in {time.monotonic() - started:.0f} s")
        started = time.monotonic()
        with open(folder / "rebuild.log", "w") as out:  # the rollups a bridge keeps as it stores
            Rebuild(influx, "environment", folder / "rebuild-state.json", out).run(None, restart=True)
        print(f"rollups made in {time.monotonic() - started:.0f} s")
        bridge, port = start_bridge(
            broker.port,
            influx_url,
            PREFIX,
            folder / "bridge.log",
            {"SENSORPIPE_TIMEZONE": "UTC", "SENSORPIPE_ROLLUPS": args.rollups},
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    fetch(base + "/healthz")
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            today = date.today()
            query = f"all=1&from={(today - timedelta(days=args.days)).isoformat()}&to={today.isoformat()}"
            figures: dict[str, list[float]] = {}
            sizes: dict[str, int] = {}
            for _ in range(args.runs):
                for label, path in (("numbers (JSON)", "/api/report"), ("page", "/report"), ("PDF", "/api/report.pdf")):
                    seconds, size = fetch(f"{base}{path}?{query}")
                    figures.setdefault(label, []).append(seconds)
                    sizes[label] = size
        finally:
            bridge.terminate()
            bridge.wait(30)
    source = "the rollups" if args.rollups == "1" else "the raw points only"
    print(
        f"report of {args.devices} devices over {args.days + 1} days, a reading every {args.every_s} s, from {source}:"
    )
    for label, runs in figures.items():
        each = ", ".join(f"{s:.2f}" for s in runs)
        print(f"  {label}: median {statistics.median(runs):.2f} s (runs: {each}); {sizes[label] / 1024:.0f} KiB")
    print(
        f"reproduce: .venv/bin/python bench/reports.py --devices {args.devices} --days {args.days} "
        f"--every-s {args.every_s} --runs {args.runs} --rollups {args.rollups}"
    )


if __name__ == "__main__":
    main()
