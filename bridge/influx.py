"""InfluxDB through its v1 HTTP API: `/write` with line protocol, `/query` with InfluxQL.

This is the API InfluxDB 1.x (what Debian ships) speaks, and 2.x and 3.x keep it for
compatibility, so one client covers them all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0


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
    token: str = ""


def quote_string(text: str) -> str:
    """An InfluxQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_ident(name: str) -> str:
    """An InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxV1:
    """A small, thread-safe client for the v1 API; one `requests.Session` per instance."""

    def __init__(self, target: InfluxTarget) -> None:
        self.target = target
        self._session = requests.Session()
        if ":" in target.token:
            user, _, password = target.token.partition(":")
            self._params = {"u": user, "p": password}
        else:
            self._params = {}
            if target.token:
                self._session.headers["Authorization"] = f"Token {target.token}"

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self._session.request(method, self.target.url + path, timeout=TIMEOUT_S, **kwargs)
        except requests.RequestException as exc:
            raise InfluxUnavailable(f"{self.target.url} unreachable: {type(exc).__name__}") from None

    def ping(self) -> str:
        """The server's version (from `/ping`); raises InfluxUnavailable."""
        response = self._request("GET", "/ping")
        if response.status_code != 204:
            raise InfluxUnavailable(f"/ping answered {response.status_code}")
        return response.headers.get("X-Influxdb-Version", "unknown")

    def ensure_database(self) -> None:
        """Create the database if it is missing (a no-op on 1.x when it exists)."""
        self.query(f"CREATE DATABASE {quote_ident(self.target.database)}", write=True)

    def write(self, lines: list[str]) -> None:
        """Store the lines (microsecond timestamps). Raises InfluxUnavailable or InfluxRejected.

        On InfluxRejected some lines of the request may have been stored (a partial write).
        """
        response = self._request(
            "POST",
            "/write",
            params={**self._params, "db": self.target.database, "precision": "u"},
            data="\n".join(lines).encode(),
        )
        if response.status_code == 204:
            return
        message = _error_message(response)
        if response.status_code == 400:
            raise InfluxRejected(message)
        if response.status_code == 404 and "database not found" in message:
            raise InfluxUnavailable(f"database {self.target.database!r} not found")
        raise InfluxUnavailable(f"/write answered {response.status_code}: {message}")

    def query(self, influxql: str, *, write: bool = False) -> list[dict[str, Any]]:
        """Run InfluxQL; return the statement's `series` list (times in epoch ms)."""
        response = self._request(
            "POST" if write else "GET",
            "/query",
            params={**self._params, "db": self.target.database, "q": influxql, "epoch": "ms"},
        )
        if response.status_code >= 500 or response.status_code in (401, 403):
            raise InfluxUnavailable(f"/query answered {response.status_code}: {_error_message(response)}")
        if response.status_code != 200:
            raise InfluxRejected(f"/query answered {response.status_code}: {_error_message(response)}")
        results = response.json().get("results", [])
        if not results:
            return []
        if "error" in results[0]:
            raise InfluxRejected(results[0]["error"])
        series: list[dict[str, Any]] = results[0].get("series", [])
        return series

    def close(self) -> None:
        self._session.close()


def _error_message(response: requests.Response) -> str:
    try:
        return str(response.json().get("error", response.text))[:300]
    except ValueError:
        return response.text[:300]
