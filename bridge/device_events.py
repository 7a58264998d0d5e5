"""What devices said of themselves, kept for the reports: status changes and health counts.

A report explains a gap with what happened then (docs/reports.md): the device's status went
offline, its sensor failed reads, its outbox dropped readings. Status and health are retained
MQTT messages, gone once the next arrives, so this sink writes them to InfluxDB as they come,
in `<measurement>_events` of the rollups' retention policy (kept as long as they are): a
status change as `online` (1 or 0), a health message only when one of its counts moved
(`reads_failed`, `outbox_dropped`), tagged with the device and `kind`. Written by a thread of
its own every second, so ingest never waits; best effort: InfluxDB away, the events of that
moment are lost (logged), never a reading.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from bridge.influx import ROLLUP_RP, InfluxV1
from bridge.lineprotocol import escape_key, escape_measurement
from common.health import Health
from common.reading import now_us

log = logging.getLogger(__name__)

FLUSH_S = 1.0
MAX_WAITING = 10_000  # events held while InfluxDB is away; then the oldest go


def events_measurement(measurement: str) -> str:
    return f"{measurement}_events"


class DeviceEvents:
    """A StatusSink and HealthSink (bridge/sinks.py) writing to InfluxDB 1.x when `enabled()`."""

    def __init__(self, influx: InfluxV1, measurement: str, enabled: Callable[[], bool]) -> None:
        self._influx = influx
        self._measurement = escape_measurement(events_measurement(measurement))
        self._enabled = enabled
        self._waiting: list[bytes] = []
        self._last: dict[str, tuple[int, int | None]] = {}  # device -> (reads_failed, outbox_dropped)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="device-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(10)
        self._flush()

    def status(self, device: str, online: bool | None) -> None:
        if online is not None:
            self._add(device, "status", f"online={int(online)}i")

    def health(self, device: str, health: Health | None) -> None:
        if health is None:
            return
        counts = (health.reads_failed, health.outbox_dropped)
        with self._lock:
            before = self._last.get(device)
            self._last[device] = counts
        if before == counts:
            return
        fields = [f"reads_failed={health.reads_failed}i", f"reads_ok={health.reads_ok}i"]
        if health.outbox_dropped is not None:
            fields.append(f"outbox_dropped={health.outbox_dropped}i")
        self._add(device, "health", ",".join(fields))

    def _add(self, device: str, kind: str, fields: str) -> None:
        line = f"{self._measurement},device={escape_key(device)},kind={kind} {fields} {now_us()}".encode()
        with self._lock:
            self._waiting.append(line)
            del self._waiting[:-MAX_WAITING]

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            lines, self._waiting = self._waiting, []
        if not lines:
            return
        try:
            if self._enabled():
                self._influx.write(lines, rp=ROLLUP_RP)
        except Exception as exc:  # best effort (see above): the events of this second are lost
            log.warning("could not keep %d device events for the reports: %s", len(lines), exc)
