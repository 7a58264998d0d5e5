"""InfluxDB through its v1 HTTP API: `/write` with line protocol, `/query` with InfluxQL.

This is the API InfluxDB 1.x (what Debian ships) speaks, and 2.x and 3.x keep it for
compatibility, so one client covers them all.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0


ROLLUP_RP = "rollups"  # the retention policy of the rollups (1.x): kept for ever


class InfluxError(Exception):
    """Base class for InfluxDB failures."""


class InfluxUnavailable(InfluxError):
    """Transient: the server cannot be reached or answered 5xx/401/404-database; retry later."""


class InfluxRejected(InfluxError):
    """Permanent for this data: the server refused it (400); retrying the same lines fails."""


@dataclass(frozen=True)
class InfluxTarget:
    """Where and as whom: base URL, database, and `user:password` (1.x) or a token (2.x/3.x)."""

    url: str
    database: str
    token: str = field(default="", repr=False)  # never in a repr or a log line


def quote_string(text: str) -> str:
    """An InfluxQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    """An InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxV1:
    """A small client for the v1 API on http.client; thread-safe (one connection per thread).

    Plain http.client: no dependency, and one kept-alive connection per thread (the ingest
    worker writes while web requests query; a requests.Session is not made for sharing).
    """

    def __init__(self, target: InfluxTarget) -> None:
        self.target = target
        parts = urlsplit(target.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._base_path = parts.path.rstrip("/")
        self._headers: dict[str, str] = {}
        self._params: dict[str, str] = {}
        if ":" in target.token:
            user, _, password = target.token.partition(":")
            self._params = {"u": user, "p": password}
        elif target.token:
            self._headers["Authorization"] = f"Token {target.token}"
        self._local = threading.local()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it was used before (may have gone stale)."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
        if self._https:
            connection = http.client.HTTPSConnection(self._host, self._port, timeout=TIMEOUT_S)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=TIMEOUT_S)
        self._local.connection = connection
        return connection, False

    def _request(
        self, method: str, path: str, params: dict[str, str], body: bytes | None = None, timeout: float = TIMEOUT_S
    ) -> Answer:
        url = f"{self._base_path}{path}?{urlencode({**self._params, **params})}"
        while True:
            connection, reused = self._connection()
            connection.timeout = timeout  # for a new socket; a kept-alive one is set below
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            try:
                connection.request(method, url, body=body, headers=self._headers)
                response = connection.getresponse()
                return Answer(response.status, response.getheader("X-Influxdb-Version"), response.read())
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                self._local.connection = None
                # A kept-alive connection the server closed: try once anew. Not after a
                # timeout: a server that does not answer would cost the wait twice.
                if not reused or isinstance(exc, TimeoutError):
                    what = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else type(exc).__name__
                    raise InfluxUnavailable(f"{self.target.url} unreachable: {what}") from None

    def ping(self, timeout: float = TIMEOUT_S) -> str:
        """The server's version (from `/ping`); raises InfluxUnavailable, also when no
        answer comes within `timeout` seconds."""
        answer = self._request("GET", "/ping", {}, timeout=timeout)
        if answer.status != 204:
            raise InfluxUnavailable(f"/ping answered {answer.status}")
        return answer.version or "unknown"

    def reads_back(self) -> bool:
        return True  # a 1.x server: /write and /query on the same database

    def ensure_database(self) -> None:
        """Create the database if it is missing (a no-op on 1.x when it exists), and the
        retention policy the rollups go to (bridge/rollups.py): kept for ever."""
        db = quote_ident(self.target.database)
        self.query(f"CREATE DATABASE {db}", write=True)
        rollups = f"CREATE RETENTION POLICY {quote_ident(ROLLUP_RP)} ON {db} DURATION INF REPLICATION 1"
        with contextlib.suppress(InfluxRejected):  # it exists with other settings: the admin's
            self.query(rollups, write=True)

    def keep_raw_for(self, duration_s: int | None) -> str:
        """Set how long the database's default retention policy keeps points (None: for
        ever); returns its name. Points older than that are dropped by InfluxDB, and refused
        when written."""
        db = quote_ident(self.target.database)
        policies = self.query(f"SHOW RETENTION POLICIES ON {db}")
        rows = [dict(zip(serie["columns"], row, strict=True)) for serie in policies for row in serie["values"]]
        name = next((str(row["name"]) for row in rows if row.get("default")), "autogen")
        duration = "INF" if duration_s is None else f"{duration_s}s"
        # Shards are dropped whole once all they hold is past the retention: InfluxDB's advice
        # for their length (1 h below 2 days, 1 d below 6 months, else 7 d).
        span = duration_s or 10**9
        shard = "1h" if span < 2 * 86_400 else "1d" if span < 180 * 86_400 else "7d"
        self.query(
            f"ALTER RETENTION POLICY {quote_ident(name)} ON {db} DURATION {duration} SHARD DURATION {shard}", write=True
        )
        return name

    def write(self, lines: Sequence[bytes | str], rp: str | None = None) -> None:
        """Store the lines (microsecond timestamps) in the default retention policy, or `rp`.
        Raises InfluxUnavailable or InfluxRejected.

        On InfluxRejected some lines of the request may have been stored (a partial write).
        """
        body = b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines)
        params = {"db": self.target.database, "precision": "u"} | ({"rp": rp} if rp else {})
        answer = self._request("POST", "/write", params, body)
        if answer.status == 204:
            return
        message = answer.error()
        if answer.status == 400:
            raise InfluxRejected(message)
        if answer.status == 404 and "database not found" in message:
            raise InfluxUnavailable(f"database {self.target.database!r} not found")
        if answer.status == 404 and "retention policy not found" in message:
            raise InfluxUnavailable(f"database {self.target.database!r}: retention policy {rp!r} not found")
        raise InfluxUnavailable(f"/write answered {answer.status}: {message}")

    def query(self, influxql: str, *, write: bool = False, epoch: str = "ms") -> list[dict[str, Any]]:
        """Run InfluxQL; return the statement's `series` list (times in epoch `epoch`: ms, u, ns)."""
        return self.query_many([influxql], write=write, epoch=epoch)[0]

    def query_many(self, statements: Sequence[str], *, write: bool = False, epoch: str = "ms") -> list[list[Any]]:
        """Run several InfluxQL statements in one request; the `series` list of each, in order."""
        params = {"db": self.target.database, "q": ";".join(statements), "epoch": epoch}
        answer = self._request("POST" if write else "GET", "/query", params)
        if answer.status >= 500 or answer.status in (401, 403):
            raise InfluxUnavailable(f"/query answered {answer.status}: {answer.error()}")
        if answer.status != 200:
            raise InfluxRejected(f"/query answered {answer.status}: {answer.error()}")
        found: list[list[Any]] = [[] for _ in statements]
        for result in json.loads(answer.body, parse_int=_json_int).get("results", []):
            if "error" in result:
                raise InfluxRejected(result["error"])
            index = result.get("statement_id", 0)
            if 0 <= index < len(found):
                found[index] = result.get("series", [])
        return found

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


@dataclass(frozen=True)
class Answer:
    """What the server said: status, version header and body."""

    status: int
    version: str | None
    body: bytes

    def error(self) -> str:
        """The server's error message, from its JSON `error` or the raw body."""
        try:
            return str(json.loads(self.body).get("error", self.body))[:300]
        except (ValueError, AttributeError):
            return self.body.decode("utf-8", errors="replace")[:300]


def _json_int(text: str) -> int | float:
    """InfluxDB's JSON writes a stored -0.0 as `-0`, which as an integer loses its sign."""
    return -0.0 if text == "-0" else int(text)
