"""The README's demo, as a person runs it: everything starts, data flows, Ctrl-C stops it all."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import ROOT
from tests.waiting import wait_until


def test_demo_runs_the_whole_pipeline_and_stops_cleanly(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "devstack.demo", "--state", str(tmp_path / "state"), "--interval", "0.5"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal gives it
    )
    try:
        assert demo.stdout is not None
        output = ""
        deadline = time.monotonic() + 90
        while "Press Ctrl-C" not in output and time.monotonic() < deadline and demo.poll() is None:
            output += demo.stdout.readline()
        assert "Press Ctrl-C" in output, output
        dashboard = re.search(r"Dashboard:\s+(http://\S+)/", output)
        influx_port = re.search(r"InfluxDB\s+127\.0\.0\.1:(\d+)", output)
        broker_port = re.search(r"Mosquitto\s+127\.0\.0\.1:(\d+)", output)
        assert dashboard and influx_port and broker_port, output

        def both_devices_reporting() -> bool:
            devices = requests.get(dashboard.group(1) + "/api/devices", timeout=5).json()
            return len([d for d in devices if d["online"] and d["latest"]]) == 2

        wait_until(both_devices_reporting, 60, "both simulated devices online with values")
        page = requests.get(dashboard.group(1) + "/", timeout=5)
        assert page.status_code == 200 and "uPlot" in page.text

        def both_devices_stored() -> bool:  # within the bridge's write interval of arriving
            query = requests.get(
                f"http://127.0.0.1:{influx_port.group(1)}/query",
                params={"db": "sensors", "q": 'SELECT count(temperature) FROM environment GROUP BY "device"'},
                timeout=5,
            ).json()
            return len(query["results"][0].get("series", [])) == 2

        wait_until(both_devices_stored, 30, "both devices' readings in InfluxDB")
    finally:
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C does: every process of the terminal's group
        rest, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, rest
    assert "stopped: publishers, bridge, InfluxDB, Mosquitto" in rest
    # In that order: the broker outlived the publishers (it did not get the Ctrl-C itself).
    for log in (tmp_path / "state" / "logs").glob("sim-*.log"):
        assert "lost the broker" not in log.read_text(), log.read_text()
    for log in (tmp_path / "state" / "logs").glob("*.log"):
        assert "Traceback (most recent call last)" not in log.read_text(), log.read_text()[-3000:]
    for port in (broker_port.group(1), influx_port.group(1)):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(port))) != 0, f"something still listens on {port}"


def _start_demo(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """The demo with `args`, and what it printed up to its banner's last line (or its end).
    On free ports (--any-ports): the first test has the default ports, when they are free."""
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack.demo",
            "--state",
            str(tmp_path / "state"),
            "--interval",
            "0.5",
            "--any-ports",
            *args,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert demo.stdout is not None
    output = ""
    deadline = time.monotonic() + 90
    while "Press Ctrl-C" not in output and time.monotonic() < deadline and demo.poll() is None:
        output += demo.stdout.readline()
    return demo, output


def _ctrl_c(demo: subprocess.Popen[str]) -> str:
    if demo.poll() is None:
        os.killpg(demo.pid, signal.SIGINT)
    rest, _ = demo.communicate(timeout=60)
    return rest


def test_demo_on_the_lan_asks_for_the_password_it_prints(tmp_path: Path) -> None:
    """`--lan ADDRESS` (the test gives 127.0.0.1: servers here listen on loopback only; plain
    `--lan` is every interface): the dashboard and API answer only with the printed password."""
    demo, output = _start_demo(tmp_path, "--lan", "127.0.0.1")
    try:
        assert "Press Ctrl-C" in output, output
        dashboard = re.search(r"Dashboard:\s+(http://127\.0\.0\.1:\d+)/", output)
        password = re.search(r"Password:\s+(\S+)", output)
        assert dashboard and password, output
        url = dashboard.group(1)
        assert requests.get(url + "/api/devices", timeout=5).status_code == 401
        bearer = {"Authorization": f"Bearer {password.group(1)}"}

        def both_devices() -> bool:
            return len(requests.get(url + "/api/devices", headers=bearer, timeout=5).json()) == 2

        wait_until(both_devices, 60, "both simulated devices, signed in")
        assert "Bearer <password>" in output  # the printed curl line says how
    finally:
        rest = _ctrl_c(demo)
    assert demo.returncode == 0, rest


def test_demo_with_a_sensor_that_cannot_be_read_says_why_and_stops(tmp_path: Path) -> None:
    """`--sensor dht22` on this machine, which is no Pi (no GPIO chip, and the test venv has no
    Pi extras): the demo names the publisher's one-line reason and stops everything, exit 1."""
    demo, output = _start_demo(tmp_path, "--sensor", "dht22", "--device", "pi-demo", "--interval", "2")
    try:
        rest, _ = demo.communicate(timeout=60)  # it stops by itself
    finally:
        _ctrl_c(demo) if demo.returncode is None else None
    assert demo.returncode == 1, output + rest
    assert re.search(r"publisher pi-demo exited with 1: publisher: cannot open the dht22 sensor: .+", rest), rest
    assert "stopped: publishers, bridge, InfluxDB, Mosquitto" in rest
    assert "Traceback" not in output + rest
    for log in (tmp_path / "state" / "logs").glob("*.log"):
        assert "Traceback (most recent call last)" not in log.read_text(), log.read_text()[-3000:]
