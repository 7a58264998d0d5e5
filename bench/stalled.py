"""The dashboard while hundreds of connections stall: does the page still load and stay live?

    .venv/bin/python bench/stalled.py [--stalled 300] [--runs 5] [--kinds silent partial websocket]
                                      [--bridge-root DIR]

A private Mosquitto and InfluxDB 1.6.7 and a real `python -m bridge` (from this checkout, or
from `--bridge-root`, another checkout with its own .venv and node_modules, to compare). For
each kind of stalled connection, `--stalled` of them are held open against the bridge's web
port for the whole measurement (one closed by the bridge is opened again at once):
- none: no stalled connections (the baseline);
- silent: a TCP connection that sends nothing and reads nothing (a phone gone from the Wi-Fi
  right after connecting, a port scanner);
- partial: the first line of a request and one header, then nothing (slowloris);
- websocket: a completed Socket.IO websocket handshake, then never a byte read or sent.
Meanwhile headless Chromium (Debian's, via Playwright) opens the overview `--runs` times:
- load: from navigation to the device's card showing its latest value;
- live: from publishing a reading to the page showing it (5 readings a run).
Prints the medians (and each run), and the bridge's resident memory and threads at the end
of each kind; a step not done in 60 s is reported as not done.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.reading import Reading, encode_reading, now_us  # noqa: E402
from devstack.browser import chromium_executable  # noqa: E402
from devstack.loadgen import start_bridge, wait_healthy  # noqa: E402
from devstack.servers import private_stack  # noqa: E402

PREFIX = "bench"
DEVICE = "stall-watch"
STEP_TIMEOUT_MS = 60_000
KINDS = ("none", "silent", "partial", "websocket")
TCP_CLOSE, TCP_CLOSE_WAIT = 7, 8  # tcpi_state values (linux/tcp.h)


def _opening(kind: str, port: int) -> bytes:
    if kind == "partial":
        return b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if kind == "websocket":
        key = base64.b64encode(os.urandom(16)).decode()
        return (
            f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Origin: http://127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    return b""


class Stallers:
    """Keeps `count` stalled connections of one kind open against the port, in one thread.

    Nothing is ever read from them: whether the bridge closed one is seen in the kernel's
    TCP state (TCP_INFO), and a closed one is opened again.
    """

    def __init__(self, kind: str, port: int, count: int) -> None:
        self.kind, self.port, self.count = kind, port, count
        self.reopened = 0
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.sendall(_opening(self.kind, self.port))
        return sock

    def _run(self) -> None:
        socks = [self._open() for _ in range(self.count)]
        self._opened.set()
        while not self._stop.wait(0.2):
            for index, sock in enumerate(socks):
                if _closed_by_peer(sock):
                    sock.close()
                    socks[index] = self._open()
                    self.reopened += 1
        for sock in socks:
            sock.close()

    def start(self) -> None:
        self._thread.start()
        if not self._opened.wait(60):
            raise RuntimeError("could not open the stalled connections in 60 s")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the peer closed the connection (FIN or RST), without reading its data."""
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return True
    return state in (TCP_CLOSE, TCP_CLOSE_WAIT)


def one_run(browser: Any, url: str, publisher: mqtt.Client, base: float) -> tuple[float | None, list[float]]:
    """Seconds to the card's value, and the live latencies (ms) of 5 readings."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    latest = f"article[data-device='{DEVICE}'] .latest dd"
    started = time.perf_counter()
    load: float | None
    try:
        page.goto(url + "/", wait_until="commit", timeout=STEP_TIMEOUT_MS)
        page.wait_for_selector(latest, timeout=STEP_TIMEOUT_MS)
        load = time.perf_counter() - started
    except Exception:  # a page that does not load is a result, not a crash of the benchmark
        load = None
    latencies: list[float] = []
    if load is not None:
        for step in range(5):
            value = base + step / 10
            text = f"{value:.1f}"
            sent = time.perf_counter()
            publisher.publish(
                f"{PREFIX}/{DEVICE}/reading",
                encode_reading(Reading(DEVICE, now_us(), {"temperature": value}, seq=None)),
                qos=1,
            )
            try:
                page.wait_for_function(
                    f'() => [...document.querySelectorAll("{latest}")]'
                    f".some((dd) => dd.textContent.includes('{text}'))",
                    timeout=STEP_TIMEOUT_MS,
                    polling="raf",
                )
                latencies.append((time.perf_counter() - sent) * 1000)
            except Exception:  # as above
                break
    context.close()
    return load, latencies


def _footprint(pid: int) -> tuple[float, int]:
    """The process's resident memory (MiB) and thread count, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def shown_s(value: float | None) -> str:
    return "not done" if value is None else f"{value * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stalled", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--bridge-root", type=Path, default=ROOT)
    args = parser.parse_args()
    root = args.bridge_root.resolve()
    print(f"bridge from {root}")
    with (
        tempfile.TemporaryDirectory() as folder,
        private_stack(Path(folder)) as stack,
        sync_playwright() as playwright,
    ):
        bridge, port = start_bridge(stack.broker.port, stack.influx_url, PREFIX, Path(folder) / "bridge.log", root=root)
        url = f"http://127.0.0.1:{port}"
        browser = playwright.chromium.launch(executable_path=chromium_executable(), headless=True)
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-stalled")
        publisher.connect("127.0.0.1", stack.broker.port)
        publisher.loop_start()
        try:
            wait_healthy(url, bridge)
            first = encode_reading(Reading(DEVICE, now_us(), {"temperature": 1.0}, seq=None))
            publisher.publish(f"{PREFIX}/{DEVICE}/reading", first, qos=1)
            base = 10.0
            for kind in args.kinds:
                stallers = Stallers(kind, port, args.stalled) if kind != "none" else None
                if stallers:
                    stallers.start()
                loads: list[float | None] = []
                live: list[float] = []
                runs_live: list[str] = []
                for _ in range(args.runs):
                    load, latencies = one_run(browser, url, publisher, base)
                    base += 1
                    loads.append(load)
                    live.extend(latencies)
                    runs_live.append(f"{statistics.median(latencies):.0f}" if len(latencies) == 5 else "not done")
                reopened = stallers.reopened if stallers else 0
                rss_mib, threads = _footprint(bridge.pid)
                if stallers:
                    stallers.stop()
                done = [v for v in loads if v is not None]
                load_median = statistics.median(done) if len(done) == len(loads) else None
                live_median = f"{statistics.median(live):.0f} ms" if len(live) == 5 * args.runs else "not done"
                label = "no stalled connections" if kind == "none" else f"{args.stalled} stalled ({kind})"
                print(
                    f"{label}: load {shown_s(load_median)} (runs: {', '.join(shown_s(v) for v in loads)}); "
                    f"live {live_median} (runs: {', '.join(runs_live)}); reopened by the bench {reopened}; "
                    f"bridge {rss_mib:.0f} MiB, {threads} threads"
                )
        finally:
            publisher.loop_stop()
            publisher.disconnect()
            browser.close()
            bridge.terminate()
            bridge.wait(60)
    extra = f" --bridge-root {args.bridge_root}" if root != ROOT else ""
    print(
        f"reproduce: .venv/bin/python bench/stalled.py --stalled {args.stalled} --runs {args.runs} "
        f"--kinds {' '.join(args.kinds)}{extra}"
    )


if __name__ == "__main__":
    main()
