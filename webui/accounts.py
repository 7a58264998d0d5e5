"""Named accounts with roles, for the web UI: who may see, who may acknowledge, who may change.

- viewer: the dashboards, the reports, the alerts as they are;
- operator: also acknowledges alerts;
- admin: also edits alert rules and the accounts.

Kept in a SQLite file (`SENSORPIPE_ACCOUNTS_DB`), passwords hashed with Argon2id
(argon2-cffi's defaults: the hash carries its own salt and parameters). Managed from the
dashboard's accounts page (admins) and from `python -m bridge accounts` on the machine.
The shared `SENSORPIPE_WEB_PASSWORD` keeps working beside them and counts as an admin.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROLES = ("viewer", "operator", "admin")
NAME = re.compile(r"[a-z][a-z0-9._-]{0,63}")
MIN_PASSWORD = 10

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class AccountError(ValueError):
    """An account change that cannot be made: the message says why (never the password)."""


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    created: str


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise AccountError("a name is 1 to 64 of a-z 0-9 . _ - starting with a letter")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"a role is one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD or any(ch in password for ch in "\r\n\0"):
        raise AccountError(f"a password is one line of at least {MIN_PASSWORD} characters")
    return password


def at_least(role: str, needed: str) -> bool:
    """Does `role` include what `needed` may do?"""
    return ROLES.index(role) >= ROLES.index(needed)


class AccountStore:
    """The accounts in one SQLite file, safe to use from the web server's threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._hasher = PasswordHasher()
        # A hash to check wrong names against, so an unknown name takes as long as a wrong
        # password; made at the first wrong name (an Argon2 hash at every start costs 0.4 s).
        self._decoy: str | None = None

    def close(self) -> None:
        self._db.close()

    def secret(self) -> str:
        """A random secret kept in the file: signs session cookies when no other is set."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'cookie_secret'").fetchone()
            if row:
                return str(row[0])
            value = secrets.token_urlsafe(32)
            self._db.execute("INSERT INTO meta VALUES ('cookie_secret', ?)", (value,))
            return value

    def accounts(self) -> list[Account]:
        with self._lock:
            rows = self._db.execute("SELECT name, role, created FROM accounts ORDER BY name").fetchall()
        return [Account(*row) for row in rows]

    def any(self) -> bool:
        """Is there an account at all (sign-in is on then)?"""
        with self._lock:
            return self._db.execute("SELECT 1 FROM accounts LIMIT 1").fetchone() is not None

    def role_of(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT role FROM accounts WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def add(self, name: str, role: str, password: str) -> Account:
        check_name(name)
        check_role(role)
        check_password(password)
        created = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        digest = self._hasher.hash(password)
        with self._lock:
            try:
                self._db.execute("INSERT INTO accounts VALUES (?, ?, ?, ?)", (name, role, digest, created))
            except sqlite3.IntegrityError:
                raise AccountError(f"there is an account {name!r} already") from None
        return Account(name, role, created)

    def set_role(self, name: str, role: str) -> None:
        check_role(role)
        with self._lock:
            if self._db.execute("UPDATE accounts SET role = ? WHERE name = ?", (role, name)).rowcount == 0:
                raise AccountError(f"no account {name!r}")

    def set_password(self, name: str, password: str) -> None:
        digest = self._hasher.hash(check_password(password))
        with self._lock:
            if self._db.execute("UPDATE accounts SET hash = ? WHERE name = ?", (digest, name)).rowcount == 0:
                raise AccountError(f"no account {name!r}")

    def remove(self, name: str) -> None:
        with self._lock:
            if self._db.execute("DELETE FROM accounts WHERE name = ?", (name,)).rowcount == 0:
                raise AccountError(f"no account {name!r}")

    def admins(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM accounts WHERE role = 'admin'").fetchone()[0])

    def verify(self, name: str, password: str) -> str | None:
        """The account's role when `password` is its password, else None."""
        with self._lock:
            row = self._db.execute("SELECT role, hash FROM accounts WHERE name = ?", (name,)).fetchone()
            if row is None and self._decoy is None:
                self._decoy = self._hasher.hash(secrets.token_urlsafe(16))
        try:
            self._hasher.verify(row[1] if row else str(self._decoy), password)
        except (VerificationError, InvalidHashError):
            return None
        return str(row[0]) if row else None
