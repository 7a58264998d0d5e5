"""Private Mosquitto and InfluxDB servers for the demo and the tests.

Each runs as a child process on loopback ports in a folder of its own, and never touches
the system's services or their files.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


# Settings of the shipped broker config the private brokers take over as they are.
SHIPPED_LIMITS = ("max_queued_messages", "max_queued_bytes", "max_inflight_messages", "autosave_interval")


# Where free_port looks: above the well-known and most registered services' ports.
PORTS_FROM = 20000


class ServerError(RuntimeError):
    """A private server did not start."""


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """`preferred` if nothing listens there on `host`, otherwise a free port below the
    kernel's ephemeral range.

    Not a port the kernel picks (bind to 0): those come from the range it also gives every
    outgoing connection, so between this check and the server's own bind a client's
    connection could take it (a bridge in a suite run exited with "address already in use").
    """
    below = max(_ephemeral_start(), PORTS_FROM + 1000)
    candidates = ([preferred] if preferred else []) + [random.randrange(PORTS_FROM, below) for _ in range(50)]
    for port in [*candidates, 0]:
        with socket.socket() as sock:
            # As the servers do: a port with only closed connections lingering is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise ServerError("no free port")  # unreachable: port 0 always binds


def _ephemeral_start() -> int:
    """The lowest port the kernel gives outgoing connections (Linux's default: 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServerError(f"not listening on {port} after {timeout} s: {log_path.read_text()[-2000:]}")


@dataclass
class Server:
    """A running private server: its port, folder and process."""

    name: str
    port: int
    folder: Path
    args: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until it listens; raises ServerError."""
        self._log = self.log_path.open("ab")
        # A session of its own: Ctrl-C in a terminal signals the whole foreground process
        # group, and the server must outlive the programs that use it, stopped by whoever
        # started it, in order.
        self.process = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for_port(self.port, self.process, self.log_path, timeout)
        except ServerError as exc:
            self.stop()
            raise ServerError(f"{self.name}: {exc}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Stop the process by its id (SIGTERM lets both servers save their state)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    @contextlib.contextmanager
    def serving(self) -> Iterator[Server]:
        """Started for the `with` block, stopped by its process id when it ends however it ends."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def kill(self) -> None:
        """kill -9: no chance to save anything."""
        self.stop(signal.SIGKILL)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def mosquitto(folder: Path, port: int | None = None, extra_config: str = "") -> Server:
    """A Mosquitto (not yet started) listening on 127.0.0.1, anonymous, persistent in `folder`.

    The queue and in-flight limits are those of the shipped `mosquitto/mosquitto.conf`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    data = folder / "data"
    data.mkdir(exist_ok=True)
    shipped = (Path(__file__).resolve().parent.parent / "mosquitto" / "mosquitto.conf").read_text()
    limits = "\n".join(line for line in shipped.splitlines() if line.split(" ", 1)[0] in SHIPPED_LIMITS)
    config = folder / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence true\n"
        f"persistence_location {data}/\n"
        "log_dest stderr\n"
        "log_type error\nlog_type warning\nlog_type notice\n"
        f"{limits}\n{extra_config}\n"
    )
    if os.geteuid() == 0:
        # Started as root, Mosquitto switches to user `mosquitto`, which cannot reach a
        # folder below a 0700 parent (/root, pytest's temporary folders): then it never
        # saves its queues, silently. `user root` keeps it as the user who started it.
        config.write_text(config.read_text() + "user root\n")
    return Server("mosquitto", port, folder, [MOSQUITTO, "-c", str(config)], folder / "mosquitto.log")


SHIPPED_CONFIG_DIR = Path(__file__).resolve().parent.parent / "mosquitto"


def shipped_mosquitto(config_dir: Path, port: int | None = None) -> Server:
    """A Mosquitto (not yet started) running the shipped config from `config_dir`.

    `config_dir` is a copy of the repository's `mosquitto/` folder (users are added to it
    with scripts/broker-user). Only what cannot be the same outside a container changes:
    the `/mosquitto/...` paths point into `config_dir`, and every listener moves to a free
    loopback port (the MQTT one to `port`; the Server's port).
    """
    port = port or free_port()
    data = config_dir / "data"
    data.mkdir(exist_ok=True)
    lines = []
    for shipped in (config_dir / "mosquitto.conf").read_text().splitlines():
        local = shipped.replace("/mosquitto/data/", f"{data}/").replace("/mosquitto/config", str(config_dir))
        lines.append(f"listener {port} 127.0.0.1" if local == "listener 1883" else local)
    for optional in (config_dir / "conf.d").glob("*.conf"):
        text = optional.read_text().replace("/mosquitto/config", str(config_dir))
        text = "\n".join(
            f"listener {free_port()} 127.0.0.1" if line.startswith("listener ") else line for line in text.splitlines()
        )
        optional.write_text(text + "\n")
    if os.geteuid() == 0:
        lines.append("user root")  # as in mosquitto(): keep the folder writable for it
    config = config_dir / "mosquitto-local.conf"
    config.write_text("\n".join(lines) + "\n")
    return Server("mosquitto", port, config_dir, [MOSQUITTO, "-c", str(config)], config_dir / "mosquitto.log")


def influxdb(
    folder: Path,
    port: int | None = None,
    snapshot_cold_s: int | None = None,
    retention_check_s: int | None = None,
    auth: bool = False,
) -> Server:
    """An InfluxDB 1.x (not yet started) on 127.0.0.1 with all its state in `folder`.
    `snapshot_cold_s`: write the in-memory cache to TSM files once no write came for that
    long (InfluxDB's default is 10 minutes), to measure what the data takes on disk.
    `retention_check_s`: drop what is past its retention that often (default 30 minutes).
    `auth`: authentication on (the first user is created without it, as an admin must be)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    rpc_port = free_port()
    config = folder / "influxdb.conf"
    snapshot = f'  cache-snapshot-write-cold-duration = "{snapshot_cold_s}s"\n' if snapshot_cold_s else ""
    config.write_text(
        "reporting-disabled = true\n"
        f'bind-address = "127.0.0.1:{rpc_port}"\n'
        f'[meta]\n  dir = "{folder}/meta"\n'
        f'[data]\n  dir = "{folder}/data"\n  wal-dir = "{folder}/wal"\n'
        '  query-log-enabled = false\n  index-version = "inmem"\n'
        f"{snapshot}"
        f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n'
        + ("  auth-enabled = true\n" if auth else "")
        + "[monitor]\n  store-enabled = false\n"
        "[continuous_queries]\n  enabled = false\n"
        + (f'[retention]\n  check-interval = "{retention_check_s}s"\n' if retention_check_s else "")
    )
    return Server("influxdb", port, folder, [INFLUXD, "-config", str(config)], folder / "influxdb.log")


def wait_influx_ready(port: int, timeout: float = 30.0) -> None:
    """Wait until `/ping` answers 204: the port opens a little before queries work."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as response:
                if response.status == 204:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise ServerError(f"influxdb on {port} did not answer /ping within {timeout} s")


def redis(folder: Path, port: int | None = None) -> Server:
    """A Redis (not yet started) on 127.0.0.1, keeping nothing on disk (for several bridges)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(folder), "--protected-mode", "yes"]
    return Server("redis", port, folder, args, folder / "redis.log")


@dataclass
class Stack:
    """The servers of a benchmark, started and ready."""

    broker: Server
    influx: Server
    redis: Server | None = None

    @property
    def influx_url(self) -> str:
        return f"http://127.0.0.1:{self.influx.port}"


@contextlib.contextmanager
def private_stack(folder: Path, with_redis: bool = False, broker_config: str = "") -> Iterator[Stack]:
    """A private Mosquitto and InfluxDB (and Redis) in `folder`, ready to use; on leaving,
    every one that started is stopped by its process id, also when a later one failed.
    `broker_config`: more lines for Mosquitto's config (the later of two settings wins)."""
    servers = [mosquitto(folder / "mosquitto", extra_config=broker_config), influxdb(folder / "influxdb")]
    if with_redis:
        servers.append(redis(folder / "redis"))
    with contextlib.ExitStack() as running:
        for server in servers:
            running.enter_context(server.serving())
        wait_influx_ready(servers[1].port)
        yield Stack(*servers)
