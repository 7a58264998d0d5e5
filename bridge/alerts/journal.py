"""What the alerts must not forget, in one SQLite file: state, history, notifications due.

Every change is written in one transaction together with the notifications it calls for
(an outbox): a bridge killed after the change was written sends them after its restart; one
killed before writing it judges the same readings again (they were not acknowledged) and
makes the same change once. History is append-only. Rules made on the dashboard live here
too; those of the rules file are read from the file at every start.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bridge.alerts.engine import Alert, Change
from bridge.alerts.rules import Rule, rule_from_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    alert TEXT NOT NULL, state TEXT NOT NULL, previous TEXT NOT NULL,
    at_us INTEGER NOT NULL, found_us INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_found ON history (found_us);
CREATE TABLE IF NOT EXISTS outbox (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    target INTEGER NOT NULL, body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, due_us INTEGER NOT NULL, error TEXT);
CREATE TABLE IF NOT EXISTS seen (device TEXT PRIMARY KEY, ts_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rule (id TEXT PRIMARY KEY, body TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Pending:
    """A notification not yet delivered to target number `target`."""

    n: int
    target: int
    body: dict[str, object]
    attempts: int
    due_us: int
    error: str | None

    @property
    def found_ms(self) -> float:
        """When the change it tells of was found (epoch ms)."""
        found = self.body.get("found")
        return float(found) if isinstance(found, int | float) else 0.0


class AlertJournal(Protocol):
    """What the alerts keep, wherever they keep it: this SQLite file (one bridge), or Redis
    (several, bridge/alerts/shared.py)."""

    def close(self) -> None: ...
    def record(self, changes: list[Change], targets: int) -> None: ...
    def forget(self, alert_ids: list[str]) -> None: ...
    def alerts(self) -> list[Alert]: ...
    def history(self, since_us: int, device: str | None = None, limit: int = 10_000) -> list[dict[str, object]]: ...
    def due(self, now_us: int, limit: int = 100) -> list[Pending]: ...
    def delivered(self, n: int) -> None: ...
    def failed(self, n: int, error: str, retry_at_us: int) -> None: ...
    def undelivered(self) -> list[Pending]: ...
    def save_seen(self, last_seen: dict[str, int]) -> None: ...
    def seen(self) -> dict[str, int]: ...
    def rules(self) -> list[Rule]: ...
    def save_rule(self, rule: Rule) -> None: ...
    def delete_rule(self, rule_id: str) -> None: ...


class Journal:
    """The alerts' SQLite file. Safe to call from any thread (one lock, short transactions)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            # WAL: a write is one fsync of the log, and readers (the web pages) never wait.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- changes and their notifications ---------------------------------------------------

    def record(self, changes: list[Change], targets: int) -> None:
        """Write these changes, their history and a notification per target for each that
        notifies: all or nothing."""
        if not changes:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for change in changes:
                    alert = change.alert
                    self._db.execute(
                        "INSERT OR REPLACE INTO alert (id, body) VALUES (?, ?)", (alert.id, json.dumps(alert.stored()))
                    )
                    event = history_entry(change)
                    self._db.execute(
                        "INSERT INTO history (alert, state, previous, at_us, found_us, body) VALUES (?, ?, ?, ?, ?, ?)",
                        (alert.id, alert.state, change.previous, change.at_us, change.found_us, json.dumps(event)),
                    )
                    if change.notify:
                        for target in range(targets):
                            self._db.execute(
                                "INSERT INTO outbox (target, body, due_us) VALUES (?, ?, ?)",
                                (target, json.dumps(event), change.found_us),
                            )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def forget(self, alert_ids: list[str]) -> None:
        """The alerts of a deleted rule: gone from the state (their history stays)."""
        with self._lock:
            self._db.executemany("DELETE FROM alert WHERE id = ?", [(i,) for i in alert_ids])

    def alerts(self) -> list[Alert]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM alert").fetchall()
        return [Alert.from_json(json.loads(body)) for (body,) in rows]

    def history(self, since_us: int, device: str | None = None, limit: int = 10_000) -> list[dict[str, object]]:
        """Changes found since then (of `device`'s alerts, if given), newest first."""
        # An alert id is `<rule>:<device>`, and a rule id has no colon: the device follows the first.
        where = "found_us >= ?"
        params: tuple[int | str, ...] = (since_us,)
        if device is not None:
            where, params = where + " AND substr(alert, instr(alert, ':') + 1) = ?", (since_us, device)
        with self._lock:
            rows = self._db.execute(
                f"SELECT body FROM history WHERE {where} ORDER BY n DESC LIMIT ?", (*params, limit)
            ).fetchall()
        return [json.loads(body) for (body,) in rows]

    # --- the outbox ---------------------------------------------------------------------------

    def due(self, now_us: int, limit: int = 100) -> list[Pending]:
        with self._lock:
            rows = self._db.execute(
                "SELECT n, target, body, attempts, due_us, error FROM outbox WHERE due_us <= ? ORDER BY n LIMIT ?",
                (now_us, limit),
            ).fetchall()
        return [_pending(row) for row in rows]

    def delivered(self, n: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE n = ?", (n,))

    def failed(self, n: int, error: str, retry_at_us: int) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, error = ?, due_us = ? WHERE n = ?", (error, retry_at_us, n)
            )

    def undelivered(self) -> list[Pending]:
        """Every notification not yet delivered, oldest first (for the page and /healthz)."""
        with self._lock:
            rows = self._db.execute("SELECT n, target, body, attempts, due_us, error FROM outbox ORDER BY n").fetchall()
        return [_pending(row) for row in rows]

    # --- devices last heard, rules made on the dashboard ------------------------------------

    def save_seen(self, last_seen: dict[str, int]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO seen (device, ts_us) VALUES (?, ?)", last_seen.items())
            self._db.execute("COMMIT")

    def seen(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT device, ts_us FROM seen").fetchall())

    def rules(self) -> list[Rule]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM rule ORDER BY id").fetchall()
        return [rule_from_json(json.loads(body)) for (body,) in rows]

    def save_rule(self, rule: Rule) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO rule (id, body) VALUES (?, ?)", (rule.id, rule_body(rule)))

    def delete_rule(self, rule_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM rule WHERE id = ?", (rule_id,))


def rule_body(rule: Rule) -> str:
    """A dashboard rule as it is kept (JSON, without the `provisioned` flag)."""
    return json.dumps({k: v for k, v in rule.to_json().items() if k != "provisioned"})


def _pending(row: tuple[int, int, str, int, int, str | None]) -> Pending:
    n, target, body, attempts, due_us, error = row
    return Pending(n, target, json.loads(body), attempts, due_us, error)


def history_entry(change: Change) -> dict[str, object]:
    """One line of an alert's history, in the contract's form (times in ms)."""
    alert = change.alert
    return {
        **alert.to_json(),
        "previous": change.previous,
        "at": change.at_us / 1000,
        "found": change.found_us / 1000,
        "repeat": change.repeat,
        "by": change.by,
        "comment": change.comment,
    }
