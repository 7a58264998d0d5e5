"""`python -m devstack.demo`: the whole pipeline on this machine, stopped cleanly by Ctrl-C.

Starts a private Mosquitto and InfluxDB (state in `.demo/` of the repository, loopback
only), the bridge with the web UI, and simulated publishers; prints what runs where.

For a classroom: `--lan` serves the dashboard on every interface (or the address given)
behind a password it makes and prints (or `--password`); the broker and InfluxDB stay on
loopback. `--sensor dht22 --pin D4` reads a real sensor on this Pi instead of the two
simulated devices (scripts/demo installs the Pi extras for it).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from devstack.servers import Server, ServerError, free_port, influxdb, mosquitto, wait_influx_ready
from publisher.sensors import SENSORS

ROOT = Path(__file__).resolve().parent.parent
DEVICES = ("sim-greenhouse", "sim-coldroom")
LOCATIONS = {"sim-greenhouse": "Greenhouse", "sim-coldroom": "Cold room"}


class Child:
    """A program of ours run as a child process, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._start = log_path.stat().st_size if log_path.exists() else 0
        self._log = log_path.open("ab")
        # Its own session, like the servers (devstack.servers): Ctrl-C reaches the demo only,
        # which stops publishers, bridge and servers in that order.
        self.process = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def last_line(self) -> str:
        """The last line it wrote in this run (why it stopped, for a program of ours)."""
        with self.log_path.open("rb") as log:
            log.seek(self._start)
            lines = log.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(nothing in its log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _wait_http(url: str, child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise ServerError(f"{child.name} exited with {child.process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise ServerError(f"{child.name} did not answer {url} within {timeout} s")


def describe(args: argparse.Namespace) -> str:
    return f"{args.sensor} on {args.pin}" if args.sensor in ("dht22", "dht11") else args.sensor


def dashboard(host: str, local: str, port: int, password: str | None) -> str:
    """Where to open the dashboard, and with which password (with --lan)."""
    if password is None:
        return f"http://{local}:{port}/"
    if host in {"0.0.0.0", "::"}:
        name = socket.gethostname().split(".")[0]
        where = f"http://{name}.local:{port}/ from a phone or laptop on this network (or this host's address)"
    else:
        where = f"http://{host}:{port}/"
    return f"{where}\n  Password:   {password}"


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__)
    parser.add_argument("--state", type=Path, default=ROOT / ".demo", help="folder for the servers' state and logs")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between readings")
    parser.add_argument(
        "--lan",
        nargs="?",
        const="0.0.0.0",
        metavar="ADDRESS",
        help="serve the dashboard on the LAN (every interface, or this address) behind a password",
    )
    parser.add_argument("--password", help="the dashboard's password with --lan (default: a new one, printed)")
    parser.add_argument("--sensor", choices=SENSORS, default="simulated")
    parser.add_argument("--pin", default="D4", help="the DHT sensor's GPIO pin (Blinka name, D0-D27)")
    parser.add_argument("--device", default=socket.gethostname().split(".")[0], help="the real sensor's device id")
    parser.add_argument(
        "--any-ports", action="store_true", help="free ports, not the defaults (1883, 8086, 5000): for several demos"
    )
    args = parser.parse_args()
    if args.password is not None and args.lan is None:
        parser.error("--password is for --lan (on loopback the demo has none)")
    return args


def programs_env(
    args: argparse.Namespace, broker_port: int, influx_port: int, web_host: str, web_port: int
) -> tuple[dict[str, str], str | None]:
    """The settings bridge and publishers share, and the dashboard's password (with --lan)."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SENSORPIPE_MQTT_URL": f"mqtt://127.0.0.1:{broker_port}",
        "SENSORPIPE_INFLUX_URL": f"http://127.0.0.1:{influx_port}",
        "SENSORPIPE_WEB_HOST": web_host,
        "SENSORPIPE_WEB_PORT": str(web_port),
    }
    if not args.lan:
        return env, None
    password = args.password or secrets.token_urlsafe(9)
    return env | {"SENSORPIPE_WEB_PASSWORD": password, "SENSORPIPE_WEB_SECRET": secrets.token_urlsafe(32)}, password


def start_publishers(args: argparse.Namespace, env: dict[str, str], logs: Path) -> list[Child]:
    """The two simulated devices, or the one real sensor of --sensor."""
    children = []
    devices = DEVICES if args.sensor == "simulated" else (args.device,)
    for device in devices:
        publisher_env = {
            **env,
            "SENSORPIPE_DEVICE": device,
            "SENSORPIPE_INTERVAL": str(args.interval),
            "SENSORPIPE_OUTBOX": str(args.state / "outbox" / f"{device}.sqlite"),
            "SENSORPIPE_SENSOR": args.sensor,
            "SENSORPIPE_PIN": args.pin,
        }
        if device in LOCATIONS:
            publisher_env["SENSORPIPE_LOCATION"] = LOCATIONS[device]
        children.append(
            Child(f"publisher {device}", [sys.executable, "-m", "publisher"], publisher_env, logs / f"{device}.log")
        )
    return children


def main() -> int:
    args = parse_args()
    state: Path = args.state.resolve()
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # Explicitly: a shell starting this in the background may have set SIGINT to be ignored.
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    signal.signal(signal.SIGHUP, _stop_on_signal)  # the terminal closed: the children would not hear it

    servers: list[Server] = []
    children: list[Child] = []
    started = time.monotonic()
    try:
        preferred = (None, None, None) if args.any_ports else (1883, 8086, 5000)
        broker = mosquitto(state / "mosquitto", free_port(preferred[0]))
        database = influxdb(state / "influxdb", free_port(preferred[1]))
        for server in (broker, database):
            server.start()
            servers.append(server)
        wait_influx_ready(database.port)
        web_host = args.lan or "127.0.0.1"
        web_port = free_port(preferred[2], web_host)
        env, password = programs_env(args, broker.port, database.port, web_host, web_port)
        bridge = Child("bridge", [sys.executable, "-m", "bridge"], env, logs / "bridge.log")
        children.append(bridge)
        local = "127.0.0.1" if web_host in {"0.0.0.0", "::"} else web_host
        _wait_http(f"http://{local}:{web_port}/healthz", bridge, 60)
        children += start_publishers(args, env, logs)
        devices = [child.name.removeprefix("publisher ") for child in children[1:]]
        port_flag = "" if broker.port == 1883 else f" -p {broker.port}"
        influx_flag = "" if database.port == 8086 else f" -port {database.port}"
        print(
            f"""
sensorpipe demo is running (started in {time.monotonic() - started:.1f} s):
  Mosquitto   127.0.0.1:{broker.port}   state in {broker.folder}
  InfluxDB    127.0.0.1:{database.port}   state in {database.folder}
  bridge      web UI and API on {web_host}:{web_port}
  publishers  {", ".join(devices)} ({describe(args)}, one reading every {args.interval:g} s)
  logs        {logs}

  Dashboard:  {dashboard(web_host, local, web_port, password)}
  Publish:    mosquitto_pub{port_flag} -q 1 -t sensors/desk/reading -m '{{"temperature": 22.5}}'
  Query:      influx{influx_flag} -database sensors -execute 'SELECT * FROM environment'
  Rejections: curl {"-H 'Authorization: Bearer <password>' " if password else ""}http://{local}:{web_port}/api/rejections

Press Ctrl-C to stop everything.""",
            flush=True,
        )
        if not args.any_ports and (broker.port != 1883 or database.port != 8086 or web_port != 5000):
            print("(a default port was taken, by a system service perhaps: the ports above are free ones)")
        while True:
            for child in children:
                if child.process.poll() is not None:
                    print(f"{child.name} exited with {child.process.returncode}: {child.last_line()}", file=sys.stderr)
                    print(f"(its log: {child.log_path})", file=sys.stderr)
                    return 1
            for server in servers:
                if not server.running:
                    print(f"{server.name} stopped; see {server.log_path}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    except ServerError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl-C must not leave servers behind
            signal.signal(signum, signal.SIG_IGN)
        for child in reversed(children):
            child.stop()
        for server in reversed(servers):
            server.stop()
        print("stopped: publishers, bridge, InfluxDB, Mosquitto", flush=True)


if __name__ == "__main__":
    sys.exit(main())
