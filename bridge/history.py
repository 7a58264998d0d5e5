"""Reading back from InfluxDB: a downsampled series for a chart, the latest point per device,
and the same as the web app sees it (`WebHistory`, webui.context.HistoryView)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bridge.influx import InfluxRejected, InfluxUnavailable, InfluxV1, quote_ident, quote_string
from bridge.rollups import HOUR_US, MINUTE_US, rollup_measurement, series_where
from common.reading import Reading
from webui.context import HistoryFailed, HistoryUnavailable

log = logging.getLogger(__name__)

TAG_AND_SPECIAL_COLUMNS = frozenset({"time", "device", "sensor", "location", "seq"})


@dataclass(frozen=True)
class Series:
    """One metric of one device over [start_ms, end_ms], oldest first.

    Raw (`interval_ms` 0): `points` are [epoch ms, value] as stored. Downsampled: each point
    is one `interval_ms` bucket, [bucket middle ms, mean, min, max], and a bucket without
    readings is [ms, None, None, None], so a chart draws a gap there, never a line across.
    """

    device: str
    metric: str
    start_ms: float
    end_ms: float
    interval_ms: int
    points: list[list[float | None]]
    source: str = "raw"  # where they came from: raw, or the rollups "1m" or "1h" (bridge/rollups.py)


@dataclass(frozen=True)
class Sparklines:
    """Every metric of several devices over [start_ms, end_ms] in `interval_ms` buckets:
    `devices[device][metric]` is a list of [bucket middle ms, mean], oldest first, empty
    buckets left out (a sparkline shows a gap where points are far apart)."""

    start_ms: float
    end_ms: float
    interval_ms: int
    devices: dict[str, dict[str, list[list[float]]]]


class HistoryReader:
    """InfluxQL queries over the readings measurement."""

    def __init__(self, influx: InfluxV1, measurement: str, rollups: bool | Callable[[], bool] = False) -> None:
        """`rollups`: long ranges are read from the rollups the bridge keeps (a callable: asked
        at each read, as the bridge learns from the server whether it keeps them)."""
        self._influx = influx
        self._name = measurement
        self._measurement = quote_ident(measurement)
        self._rollups_on = rollups

    @property
    def _rollups(self) -> bool:
        return self._rollups_on() if callable(self._rollups_on) else self._rollups_on

    def series(self, device: str, metric: str, start_us: int, end_us: int, points: int) -> Series:
        """One metric between two times (Unix µs), as at most about `points` points.

        When the range holds no more than `points` readings they come back as stored.
        Otherwise the range is cut into equal buckets (aligned to the clock, as InfluxDB's
        `GROUP BY time` does): mean, min and max of each, at the bucket's middle. Buckets of a
        minute or more come from the coarsest rollup that still gives them (`source`); their
        mean is weighted by each rollup's count, their min and max exact.
        Raises InfluxUnavailable or InfluxRejected.
        """
        where = (
            f'FROM {self._measurement} WHERE "device" = {quote_string(device)} '
            f"AND time >= {start_us * 1000} AND time <= {end_us * 1000}"
        )
        field = quote_ident(metric)
        # At most `points` readings: as stored, whatever the range. LIMIT, not a count: InfluxDB
        # stops reading after it, where a count reads a device-year.
        # Microseconds, as the browser gets live readings (ms with a fraction): the same
        # reading from history and live must carry the same time to be drawn once.
        raw = self._influx.query(f"SELECT {field} {where} LIMIT {points + 1}", epoch="u")
        rows: list[list[float | None]] = [[row[0] / 1000, row[1]] for serie in raw for row in serie["values"]]
        rows = [row for row in rows if row[1] is not None]
        if len(rows) <= points and (rows or not self._rollups):
            return Series(device, metric, start_us / 1000, end_us / 1000, 0, rows)
        if self._rollups:
            interval_us = (end_us - start_us) / max(1, points)
            for source, bucket_us in (("1h", HOUR_US), ("1m", MINUTE_US)):
                # No raw points (past their retention?): the minute rollups may hold them.
                if interval_us >= bucket_us or (not rows and source == "1m"):
                    found = self._rolled_up(source, bucket_us, device, metric, start_us, end_us, points)
                    if found is not None:
                        return found
            if not rows:
                return Series(device, metric, start_us / 1000, end_us / 1000, 0, rows)
        interval_ms = max(1, math.ceil((end_us - start_us) / 1000 / points))
        grouped = self._influx.query(
            f"SELECT mean({field}), min({field}), max({field}) {where} GROUP BY time({interval_ms}ms) fill(null)"
        )
        rows = [[row[0] + interval_ms / 2, row[1], row[2], row[3]] for serie in grouped for row in serie["values"]]
        # Buckets are aligned to multiples of the interval: the first may start before the
        # range, giving one bucket more than asked for; drop the oldest then.
        return Series(device, metric, start_us / 1000, end_us / 1000, interval_ms, rows[-points:])

    def _rolled_up(
        self, source: str, bucket_us: int, device: str, metric: str, start_us: int, end_us: int, points: int
    ) -> Series | None:
        """From the `source` rollups, in buckets of whole rollups; None when they hold nothing
        in the range (rollups not kept yet for it: the raw points answer)."""
        interval_ms = math.ceil((end_us - start_us) / points / bucket_us) * bucket_us // 1000
        f = {part: quote_ident(f"{metric}_{part}") for part in ("sum", "count", "min", "max")}
        grouped = self._influx.query(
            f"SELECT sum({f['sum']}) / sum({f['count']}), min({f['min']}), max({f['max']}) "
            f'FROM {rollup_measurement(self._name, source)} WHERE "device" = {quote_string(device)} '
            # A rollup's time is its bucket's start: the one holding start_us starts before it.
            f"AND time >= {(start_us - start_us % bucket_us) * 1000} AND time <= {end_us * 1000} "
            f"GROUP BY time({interval_ms}ms) fill(null)"
        )
        rows = [[row[0] + interval_ms / 2, row[1], row[2], row[3]] for serie in grouped for row in serie["values"]]
        if not any(row[1] is not None for row in rows):
            return None
        return Series(device, metric, start_us / 1000, end_us / 1000, interval_ms, rows[-points:], source)

    def sparklines(self, devices: list[str], start_us: int, end_us: int, points: int) -> Sparklines:
        """Means of every metric of `devices` in about `points` buckets between two times
        (Unix µs), in one query. Raises InfluxUnavailable or InfluxRejected."""
        interval_ms = max(1, math.ceil((end_us - start_us) / 1000 / points))
        which = " OR ".join(f'"device" = {quote_string(device)}' for device in devices)
        grouped = self._influx.query(
            f"SELECT mean(*) FROM {self._measurement} WHERE ({which}) "
            f'AND time >= {start_us * 1000} AND time <= {end_us * 1000} GROUP BY time({interval_ms}ms), "device" '
            "fill(none)"
        )
        found: dict[str, dict[str, list[list[float]]]] = {}
        for serie in grouped:
            device = serie.get("tags", {}).get("device", "")
            metrics = found.setdefault(device, {})
            columns = serie["columns"]
            for index, column in enumerate(columns):
                name = column.removeprefix("mean_")
                if index == 0 or name == "seq":
                    continue
                rows = [[row[0] + interval_ms / 2, row[index]] for row in serie["values"] if row[index] is not None]
                if rows:
                    metrics[name] = rows
        return Sparklines(start_us / 1000, end_us / 1000, interval_ms, found)

    def latest_per_device(self) -> list[Reading]:
        """The newest stored reading of every device (to know the devices after a restart).

        With rollups, bounded: the newest 1-hour rollup of each series says in which hour its
        newest raw point is, and one hour is read per series. Only devices without rollups (all
        their points older than the rollups, or rollups off) are read over all time.
        """
        found: list[Reading] = []
        condition = ""
        if self._rollups:
            hours = self._influx.query(
                f"SELECT * FROM {rollup_measurement(self._name, '1h')} GROUP BY * ORDER BY time DESC LIMIT 1", epoch="u"
            )
            statements = [
                f"SELECT * FROM {self._measurement} WHERE {series_where(tuple(serie.get('tags', {}).items()))} "
                f"AND time >= {serie['values'][0][0] * 1000} ORDER BY time DESC LIMIT 1"
                for serie in hours
            ]
            for first in range(0, len(statements), 100):
                for answer in self._influx.query_many(statements[first : first + 100], epoch="u"):
                    found += self._readings(answer)
            rolled = {reading.device for reading in found}
            listed = self._influx.query(f'SHOW TAG VALUES FROM {self._measurement} WITH KEY = "device"')
            missing = sorted({row[1] for serie in listed for row in serie["values"]} - rolled)
            if not missing:
                return _newest_per_device(found)
            if rolled and len(missing) <= 100:  # else (first start with rollups): all, as below
                where = " OR ".join(f'"device" = {quote_string(device)}' for device in missing)
                condition = f"WHERE {where} "
        query = f'SELECT * FROM {self._measurement} {condition}GROUP BY "device" ORDER BY time DESC LIMIT 1'
        return _newest_per_device(found + self._readings(self._influx.query(query, epoch="u")))

    @staticmethod
    def _readings(answer: list[dict[str, Any]]) -> list[Reading]:
        """The rows of an answer (times in µs) as readings, tags from the row or its group."""
        found = []
        for serie in answer:
            row = dict(zip(serie["columns"], serie["values"][0], strict=True))
            row.update({k: v for k, v in serie.get("tags", {}).items() if v})
            metrics = {
                name: float(value)
                for name, value in row.items()
                if name not in TAG_AND_SPECIAL_COLUMNS and isinstance(value, (int, float))
            }
            if metrics:
                found.append(
                    Reading(
                        device=row.get("device", ""),
                        ts_us=int(row["time"]),
                        metrics=metrics,
                        seq=row.get("seq"),
                        sensor=row.get("sensor"),
                        location=row.get("location"),
                    )
                )
        return found


def _newest_per_device(readings: list[Reading]) -> list[Reading]:
    """Of each device, its newest reading (a device may have several series: sensor, location)."""
    newest: dict[str, Reading] = {}
    for reading in readings:
        if reading.device not in newest or reading.ts_us > newest[reading.device].ts_us:
            newest[reading.device] = reading
    return list(newest.values())


class WebHistory:
    """The history reader as the web app asks for it: JSON-ready answers, its own errors."""

    def __init__(self, reader: HistoryReader) -> None:
        self._reader = reader

    def series(self, device: str, metric: str, start_us: int, end_us: int, points: int) -> dict[str, Any]:
        return web_answer(lambda: self._reader.series(device, metric, start_us, end_us, points))

    def sparklines(self, devices: list[str], start_us: int, end_us: int, points: int) -> dict[str, Any]:
        return web_answer(lambda: self._reader.sparklines(devices, start_us, end_us, points))


def web_answer(query: Callable[[], Any], what: str = "history") -> dict[str, Any]:
    """The query's answer (a dataclass) as JSON-ready dicts; InfluxDB's failures as the web
    app's errors (webui.context). `what` names the query in the log."""
    try:
        answer: dict[str, Any] = asdict(query())
        return answer
    except InfluxUnavailable as exc:
        raise HistoryUnavailable(f"InfluxDB: {exc}") from None
    except InfluxRejected as exc:  # a query of ours InfluxDB cannot run: a bug, not the caller's
        log.error("a %s query was refused by InfluxDB: %s", what, exc)
        raise HistoryFailed("InfluxDB could not answer this query (the bridge's log says why)") from None
