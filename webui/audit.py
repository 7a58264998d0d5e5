"""The audit log: an append-only record of who changed what (alert rules, acknowledgements,
accounts), each entry carrying the hash of the one before it.

SHA-256 over the previous entry's hash and this entry's number, time, who, action and
details (canonical JSON): an entry edited or removed afterwards breaks the chain from there
on, which `python -m bridge audit verify` finds and names. What it is not: a signature. Who
may write the file may also write a whole new chain; the newest entries can be cut off
unnoticed unless their hash is kept elsewhere, which is why every report prints the chain's
length and newest hash (a signed paper report then pins it). It is not a certified 21 CFR
Part 11 system.

Kept in the accounts' SQLite file, so the command line's account changes are in it too.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    n INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Entry:
    n: int
    at: str
    who: str
    action: str
    detail: dict[str, Any]
    prev: str
    hash: str


@dataclass(frozen=True)
class Verdict:
    """`broken_at`: the first entry that does not add up (None: the whole chain holds)."""

    entries: int
    head: str
    broken_at: int | None
    reason: str | None = None


def entry_hash(prev: str, n: int, at: str, who: str, action: str, detail_json: str) -> str:
    body = json.dumps([n, at, who, action, detail_json], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{prev}\n{body}".encode()).hexdigest()


def canonical(detail: dict[str, Any]) -> str:
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)


class AuditLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def record(self, who: str, action: str, detail: dict[str, Any]) -> Entry:
        """Append one entry (in one transaction with reading the newest: the command line
        and the bridge may write at once)."""
        at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        detail_json = canonical(detail)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT n, hash FROM audit ORDER BY n DESC LIMIT 1").fetchone()
                n, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
                digest = entry_hash(prev, n, at, who, action, detail_json)
                self._db.execute(
                    "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?)", (n, at, who, action, detail_json, prev, digest)
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Entry(n, at, who, action, detail, prev, digest)

    def entries(self, since: str | None = None, until: str | None = None) -> list[Entry]:
        """Entries oldest first, with `at` (RFC 3339 UTC) from `since` and before `until`."""
        query, params = "SELECT n, at, who, action, detail, prev, hash FROM audit", []
        conditions = []
        if since:
            conditions.append("at >= ?")
            params.append(since)
        if until:
            conditions.append("at < ?")
            params.append(until)
        if conditions:
            query += " WHERE " + " AND ".join(conditions)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY n", params).fetchall()
        return [
            Entry(n, at, who, action, json.loads(detail), prev, digest)
            for n, at, who, action, detail, prev, digest in rows
        ]

    def verify(self) -> Verdict:
        """Walk the whole chain: every number in turn, every hash as recomputed."""
        with self._lock:
            rows = self._db.execute("SELECT n, at, who, action, detail, prev, hash FROM audit ORDER BY n").fetchall()
        prev, expected_n = GENESIS, 1
        for n, at, who, action, detail, stored_prev, digest in rows:
            if n != expected_n:
                return Verdict(len(rows), prev, expected_n, f"entry {expected_n} is missing")
            if stored_prev != prev:
                return Verdict(len(rows), prev, n, f"entry {n} does not follow entry {n - 1}")
            if entry_hash(prev, n, at, who, action, detail) != digest:
                return Verdict(len(rows), prev, n, f"entry {n} was changed after it was written")
            prev, expected_n = digest, n + 1
        return Verdict(len(rows), prev, None)
