"""`python -m devstack.demo`: the whole pipeline on this machine, stopped cleanly by Ctrl-C.

Starts a private Mosquitto and InfluxDB (state in `.demo/` of the repository, loopback
only), the bridge with the web UI, and simulated publishers; prints what runs where.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from devstack.servers import Server, ServerError, free_port, influxdb, mosquitto, wait_influx_ready

ROOT = Path(__file__).resolve().parent.parent
DEVICES = ("sim-greenhouse", "sim-coldroom")
LOCATIONS = {"sim-greenhouse": "Greenhouse", "sim-coldroom": "Cold room"}


class Child:
    """A program of ours run as a child process, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self._log = log_path.open("ab")
        # Its own session, like the servers (devstack.servers): Ctrl-C reaches the demo only,
        # which stops publishers, bridge and servers in that order.
        self.process = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

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


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__)
    parser.add_argument("--state", type=Path, default=ROOT / ".demo", help="folder for the servers' state and logs")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between simulated readings")
    args = parser.parse_args()
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
        broker = mosquitto(state / "mosquitto", free_port(1883))
        database = influxdb(state / "influxdb", free_port(8086))
        for server in (broker, database):
            server.start()
            servers.append(server)
        wait_influx_ready(database.port)
        web_port = free_port(5000)
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "SENSORPIPE_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}",
            "SENSORPIPE_INFLUX_URL": f"http://127.0.0.1:{database.port}",
            "SENSORPIPE_WEB_PORT": str(web_port),
        }
        bridge = Child("bridge", [sys.executable, "-m", "bridge"], env, logs / "bridge.log")
        children.append(bridge)
        _wait_http(f"http://127.0.0.1:{web_port}/healthz", bridge, 60)
        for device in DEVICES:
            publisher_env = {
                **env,
                "SENSORPIPE_DEVICE": device,
                "SENSORPIPE_LOCATION": LOCATIONS[device],
                "SENSORPIPE_INTERVAL": str(args.interval),
                "SENSORPIPE_OUTBOX": str(args.state / "outbox" / f"{device}.sqlite"),
            }
            children.append(
                Child(f"publisher {device}", [sys.executable, "-m", "publisher"], publisher_env, logs / f"{device}.log")
            )
        port_flag = "" if broker.port == 1883 else f" -p {broker.port}"
        influx_flag = "" if database.port == 8086 else f" -port {database.port}"
        print(
            f"""
sensorpipe demo is running (started in {time.monotonic() - started:.1f} s):
  Mosquitto   127.0.0.1:{broker.port}   state in {broker.folder}
  InfluxDB    127.0.0.1:{database.port}   state in {database.folder}
  bridge      web UI and API on 127.0.0.1:{web_port}
  publishers  {", ".join(DEVICES)} (simulated, one reading every {args.interval:g} s)
  logs        {logs}

  Dashboard:  http://127.0.0.1:{web_port}/
  Publish:    mosquitto_pub{port_flag} -q 1 -t sensors/desk/reading -m '{{"temperature": 22.5}}'
  Query:      influx{influx_flag} -database sensors -execute 'SELECT * FROM environment'
  Rejections: curl http://127.0.0.1:{web_port}/api/rejections

Press Ctrl-C to stop everything.""",
            flush=True,
        )
        if broker.port != 1883 or database.port != 8086 or web_port != 5000:
            print("(a default port was taken, by a system service perhaps: the ports above are free ones)")
        while True:
            for child in children:
                if child.process.poll() is not None:
                    print(f"{child.name} exited with {child.process.returncode}; see {logs}", file=sys.stderr)
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
