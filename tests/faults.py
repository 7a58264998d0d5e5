"""Fault injection for tests: a TCP proxy whose link can be cut, and a steady QoS 1 publisher."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bridge.influx import InfluxV1
from common.mqtt import AckTracker, disconnect
from common.reading import Reading, encode_reading, now_us
from tests.waiting import wait_until


class CuttableProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target`; `cut()` drops every connection and
    refuses new ones (as a pulled network cable would, seen from the client) until `restore()`."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._start_accepting()

    def _start_accepting(self) -> None:
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed by cut()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                if listener.fileno() == -1:  # cut() while this one was being connected: dropped too
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass  # either side closed: the other is closed below
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def restore(self) -> None:
        # The port can stay busy for a moment after cut(), until the kernel has let go of
        # the connections that were just dropped.
        deadline = time.monotonic() + 10
        while True:
            try:
                self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._start_accepting()

    def close(self) -> None:
        self.cut()


class SilentServer:
    """A TCP server that accepts every connection, reads what comes and never answers: an
    InfluxDB that hangs (a full disk, a stuck compaction), seen from its client."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self._sockets.append(client)
            threading.Thread(target=self._swallow, args=(client,), daemon=True).start()

    @staticmethod
    def _swallow(client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while client.recv(65536):
                pass

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            sock.close()


class SteadyPublisher:
    """Publishes `per_device` readings for each device at about `rate` a second, QoS 1, from a
    persistent session that reconnects by itself (paho resends what was not acknowledged).

    Every reading has its own microsecond `ts` and a `seq` from 0, so the stored points can
    be counted per device and checked for gaps.
    """

    def __init__(self, port: int, prefix: str, devices: list[str], per_device: int, rate: float) -> None:
        self.devices = devices
        self.per_device = per_device
        self._prefix = prefix
        self._rate = rate
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"steady-{prefix}", clean_session=False)
        self._client.max_inflight_messages_set(1000)
        self._client.reconnect_delay_set(1, 2)
        self._client.connect_async("127.0.0.1", port)
        self._client.loop_start()
        self._acks = AckTracker()
        self._client.on_publish = self._acks.on_publish
        self.published = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def total(self) -> int:
        return self.per_device * len(self.devices)

    def start(self) -> SteadyPublisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        base_us = now_us() - 3_600_000_000
        started = time.monotonic()
        for seq in range(self.per_device):
            for index, device in enumerate(self.devices):
                reading = Reading(device, base_us + seq * 1_000_000 + index, {"temperature": 20 + seq / 100}, seq=seq)
                info = self._client.publish(f"{self._prefix}/{device}/reading", encode_reading(reading), qos=1)
                self._acks.sent(info.mid)
                self.published += 1
            ahead = self.published / self._rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    def wait_done(self, timeout: float) -> bool:
        """Everything published and acknowledged by the broker."""
        deadline = time.monotonic() + timeout
        self._thread.join(timeout)  # after this, only this thread uses the tracker
        while time.monotonic() < deadline:
            if self.published == self.total and not self._acks.unacked():
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        disconnect(self._client)


# --- the 20,000-reading run of the fault and scale-out tests ------------------------------

DEVICES = [f"room-{i:02d}" for i in range(50)]
PER_DEVICE = 400  # 20,000 readings
RATE = 2000  # readings a second: the run lasts ~10 s, so each fault lands mid-run


def stored_count(influx: InfluxV1) -> int:
    series = influx.query("SELECT count(seq) FROM environment")
    return int(series[0]["values"][0][1]) if series else 0


def assert_exactly_all_stored(influx: InfluxV1, timeout: float) -> None:
    """Every device has seq 0..PER_DEVICE-1 once each, and nothing else is stored."""
    wait_until(lambda: stored_count(influx) >= len(DEVICES) * PER_DEVICE, timeout, "all 20,000 readings")
    series = influx.query('SELECT seq FROM environment GROUP BY "device"')
    per_device = {s["tags"]["device"]: [row[1] for row in s["values"]] for s in series}
    assert sorted(per_device) == DEVICES
    for device, seqs in per_device.items():
        assert sorted(seqs) == list(range(PER_DEVICE)), f"{device}: missing or doubled seq"
    assert stored_count(influx) == len(DEVICES) * PER_DEVICE
