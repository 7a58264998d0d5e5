"""Where the ingest loop's line protocol goes: InfluxDB 1.x's `/write`, or influxdb-client for
2.x, 3.x and Cloud, chosen from the server's `/ping` version unless configured."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from urllib3.exceptions import HTTPError

from bridge.influx import InfluxRejected, InfluxUnavailable, InfluxV1

log = logging.getLogger(__name__)

API_CHOICES = ("auto", "v1", "v2")


class PointWriter(Protocol):
    """Stores lines of line protocol, UTF-8 (µs timestamps); raises InfluxUnavailable or
    InfluxRejected."""

    def write(self, lines: Sequence[bytes], rp: str | None = None) -> None:
        """`rp`: a retention policy other than the default (1.x: the rollups')."""
        ...

    def ensure_database(self) -> None: ...

    def reads_back(self) -> bool:
        """Can what is written be queried with InfluxQL at the same client (1.x)? The rollups
        need it (bridge/rollups.py); raises InfluxUnavailable while that is not known yet."""
        ...


class InfluxV2Writer:
    """influxdb-client's synchronous write API: every error raises, nothing is buffered."""

    def __init__(self, url: str, token: str, org: str, bucket: str) -> None:
        self._bucket = bucket
        self._org = org
        # retries=False: the ingest loop retries a failed batch itself, with backoff.
        self._client = InfluxDBClient(url=url, token=token, org=org, timeout=10_000, retries=False)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: Sequence[bytes], rp: str | None = None) -> None:
        # `rp` is 1.x's: a 2.x bucket has one retention (and the rollups are not kept there).
        try:
            # "us": WritePrecision.US, which the library's own annotations do not accept.
            self._write_api.write(self._bucket, self._org, b"\n".join(lines), write_precision="us")  # type: ignore[arg-type]
        except InfluxDBError as exc:
            status = getattr(exc, "status", None)
            message = str(exc.message if hasattr(exc, "message") else exc)[:300]
            if status in (400, 422):
                raise InfluxRejected(message) from None
            raise InfluxUnavailable(f"/api/v2/write answered {status}: {message}") from None
        except (HTTPError, OSError) as exc:
            raise InfluxUnavailable(f"InfluxDB unreachable: {type(exc).__name__}") from None

    def reads_back(self) -> bool:
        return False  # 2.x, 3.x: InfluxQL needs a DBRP mapping the bridge does not make

    def ensure_database(self) -> None:
        """Buckets are made by the server's admin (they carry an org and a retention)."""
        raise InfluxUnavailable(f"bucket {self._bucket!r} not found: create it in InfluxDB")

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]  # the library has no annotations here


class AutoWriter:
    """Picks v1 or v2 from the server's `/ping` version at the first write, then sticks to it.

    Deciding at the first write, not at start, lets the bridge start while InfluxDB is down.
    """

    def __init__(self, v1: InfluxV1, org: str) -> None:
        self._v1 = v1
        self._org = org
        self._chosen: PointWriter | None = None

    def _choose(self) -> PointWriter:
        if self._chosen is None:
            version = self._v1.ping()  # raises InfluxUnavailable while the server is down
            target = self._v1.target
            if version.startswith("1."):
                self._chosen = self._v1
                log.info("InfluxDB %s at %s: writing with the v1 API (/write)", version, target.url)
            else:
                self._chosen = InfluxV2Writer(target.url, target.token, self._org, target.database)
                log.info(
                    "InfluxDB %s at %s: writing with influxdb-client (/api/v2/write), bucket %r",
                    version,
                    target.url,
                    target.database,
                )
        return self._chosen

    def write(self, lines: Sequence[bytes], rp: str | None = None) -> None:
        self._choose().write(lines, rp)

    def ensure_database(self) -> None:
        self._choose().ensure_database()

    def reads_back(self) -> bool:
        return self._choose().reads_back()


def make_writer(api: str, v1: InfluxV1, org: str) -> PointWriter:
    """The writer for setting `SENSORPIPE_INFLUX_API` (auto, v1 or v2)."""
    if api == "v1":
        return v1
    if api == "v2":
        return InfluxV2Writer(v1.target.url, v1.target.token, org, v1.target.database)
    return AutoWriter(v1, org)
