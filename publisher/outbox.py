"""The publisher's on-disk outbox: every reading waits here until the broker acknowledged it.

SQLite in WAL mode with `synchronous=FULL`: a reading is on disk (fsynced) before it is
sent, so broker outages, restarts and power loss lose nothing. The same file holds the
device's next `seq`, written in the same transaction as the reading it numbered, so `seq`
never repeats and never goes back, whatever happens to the process.

One connection shared by the sampling thread (appends) and the sender thread (reads and
deletes), behind one lock: SQLite serialises writers anyway, and the work per call is tiny.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from common.reading import Reading, encode_reading

log = logging.getLogger(__name__)
DROP_LOG_EVERY = 1000  # while it is full, a warning per this many dropped readings

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class OutboxError(Exception):
    """The outbox file cannot be used (unwritable, corrupt, or another device's)."""


@dataclass(frozen=True)
class Entry:
    """One stored reading, exactly as it goes on the wire."""

    seq: int
    payload: bytes


class Outbox:
    """Readings of one device, in `seq` order, from taken to acknowledged."""

    def __init__(self, path: Path, device: str, max_entries: int) -> None:
        self.path = path
        self.max_entries = max_entries
        self._dropping = False  # full at the last add: its warning is said (once per 1,000 more)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            owner = self._get("device")
            if owner not in (None, device):
                raise OutboxError(f"{path} holds the readings of device {owner!r}, not {device!r}")
            self._set("device", device)  # a write now, so an unwritable file fails at start, not later
            self._depth: int = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot use {path} as the outbox: {exc}") from None
        self._lock = threading.Lock()

    # --- taking readings ----------------------------------------------------------------

    def add(self, make: Callable[[int], Reading]) -> Reading:
        """Number a reading with the next `seq` and store it durably; returns it.

        `make(seq)` builds the reading. When the outbox is full, the oldest entries make
        room and are counted in `dropped`.
        """
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            seq = int(self._get("next_seq") or 0)
            reading = make(seq)
            self._db.execute("INSERT INTO outbox (seq, payload) VALUES (?, ?)", (seq, encode_reading(reading)))
            self._set("next_seq", str(seq + 1))
            self._depth += 1
            overflow = self._depth - self.max_entries
            if overflow > 0:
                cursor = self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (overflow,)
                )
                self._depth -= cursor.rowcount
                dropped = self._dropped() + cursor.rowcount
                self._set("dropped", str(dropped))
                if (dropped - cursor.rowcount) // DROP_LOG_EVERY != dropped // DROP_LOG_EVERY or not self._dropping:
                    log.warning(
                        "the outbox is full (%d readings): the oldest go to make room, %d dropped so far",
                        self.max_entries,
                        dropped,
                    )
                self._dropping = True
            else:
                self._dropping = False
        return reading

    # --- sending ------------------------------------------------------------------------

    def after(self, seq: int, limit: int) -> list[Entry]:
        """Up to `limit` entries with a `seq` above `seq`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
        return [Entry(row[0], bytes(row[1])) for row in rows]

    def remove(self, seqs: Iterable[int]) -> None:
        """Forget acknowledged entries (one transaction, so one fsync for many).

        An acknowledged entry that is no longer here was dropped while the outbox was full
        after it had been sent: paho still held it and delivered it once the broker was back.
        It was not lost after all, so it leaves the `dropped` count again (seen in the full
        outbox test: without this, health counted one reading more lost than the seqs show).
        """
        batch = [(seq,) for seq in seqs]
        if not batch:
            return
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            before = self._db.total_changes
            self._db.executemany("DELETE FROM outbox WHERE seq = ?", batch)
            removed = self._db.total_changes - before
            self._depth -= removed
            if removed < len(batch):
                self._set("dropped", str(max(0, self._dropped() - (len(batch) - removed))))

    # --- reporting ----------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Readings not yet acknowledged by the broker."""
        return self._depth

    @property
    def dropped(self) -> int:
        """Readings thrown away, ever, because the outbox was full."""
        with self._lock:
            return self._dropped()

    @property
    def next_seq(self) -> int:
        with self._lock:
            return int(self._get("next_seq") or 0)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _dropped(self) -> int:
        return int(self._get("dropped") or 0)

    def _get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))
