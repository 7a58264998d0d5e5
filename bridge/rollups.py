"""Rollups: count, sum, mean, min and max of every metric per 1-minute and 1-hour bucket.

Kept by the bridge itself, not by InfluxDB's continuous queries (they never look at a bucket
again, and our publishers deliver late readings after every outage by design). Each batch of
readings the store writes carries the rollup points of every bucket it touches, computed
from all the raw points of that bucket: those already stored (read back) and the batch's own,
a point at the same series and time counted once (a redelivery overwrites itself, as in
InfluxDB). The raw points are written, then their rollups (to the retention policy
`rollups`, kept for ever while the raw points may expire: SENSORPIPE_RAW_RETENTION), and
the readings are acknowledged only after both: a bridge killed before has its readings
redelivered, and the buckets are computed again. A rollup always equals the aggregate of its
bucket's raw points.

The 1-hour rollups are computed from the hour's 1-minute rollups (count and sum add up, min
and max of the minutes'): exact, and no read of an hour of raw points.

Reading back what is stored is the cost. A bridge that is the only writer (no share group)
remembers the points of the buckets it touched lately (bounded), so on-time readings, the
common case, are rolled up without a query; a bucket it does not remember (late data, or
after a restart) is read once. With a share group every bucket is read each time, since
other bridges write the same series.

Names (docs/contract.md "Rollups"): measurements `<measurement>_1m` and `<measurement>_1h`
in the retention policy `rollups`,
the readings' tags, fields `<metric>_count` (integer), `<metric>_sum`, `<metric>_mean`,
`<metric>_min`, `<metric>_max` (floats), the bucket's start as the time.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bridge.influx import ROLLUP_RP, InfluxV1, quote_ident, quote_string
from bridge.lineprotocol import escape_key, escape_measurement
from common.reading import Reading

MINUTE_US = 60_000_000
HOUR_US = 3_600_000_000
SOURCES = {"1m": MINUTE_US, "1h": HOUR_US}
TAGS = ("device", "location", "sensor")  # the readings' tags (common.reading.Reading.tags)
NOT_METRICS = frozenset({"time", "seq", *TAGS})
STATEMENTS_PER_QUERY = 100  # the statements go in the URL
REMEMBER_MAX = 20_000  # buckets remembered (minutes with their points, hours with their minutes)

V = TypeVar("V")
Series = tuple[tuple[str, str], ...]  # a reading's tags, sorted by key
Points = dict[int, dict[str, float]]  # ts µs -> metric values


@dataclass
class Aggregate:
    """Of one metric in one bucket."""

    count: int
    total: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Aggregate | None:
        values = list(values)
        if not values:
            return None
        return cls(len(values), _sum(values), min(values), max(values))

    @classmethod
    def combine(cls, parts: Iterable[Aggregate]) -> Aggregate | None:
        parts = list(parts)
        if not parts:
            return None
        if len(parts) == 1:  # an hour of one minute so far: the common case of a batch
            (only,) = parts
            return cls(only.count, only.total, only.low, only.high)
        return cls(
            sum(p.count for p in parts),
            _sum([p.total for p in parts]),
            min(p.low for p in parts),
            max(p.high for p in parts),
        )

    @property
    def mean(self) -> float:
        return self.total / self.count


Minutes = dict[int, dict[str, Aggregate]]  # minute start µs -> metric -> aggregate


@dataclass
class Bucket:
    """One series' minute: its raw points (to know a redelivery from a new point) and the
    aggregates of each metric."""

    points: Points
    aggregates: dict[str, Aggregate]


@dataclass
class Hour:
    """One series' hour: the aggregates of its minutes, and of the whole hour."""

    minutes: Minutes
    combined: dict[str, Aggregate]

    @classmethod
    def of(cls, minutes: Minutes) -> Hour:
        return cls(minutes, combine_minutes(minutes.values()))


@dataclass
class Prepared:
    """The rollup lines of one batch, and what to remember once they are written."""

    lines: list[bytes]
    _buckets: dict[tuple[Series, int], tuple[Bucket, Points, dict[str, Aggregate]]] = field(default_factory=dict)
    _hours: dict[tuple[Series, int], tuple[Hour, Minutes, dict[str, Aggregate]]] = field(default_factory=dict)
    _owner: Rollups | None = None

    def commit(self) -> None:
        """The write succeeded: remember the buckets as they are now stored."""
        if self._owner is None or not self._owner.exclusive:
            return
        buckets = {}
        for key, (bucket, new, aggregates) in self._buckets.items():
            points = bucket.points
            for ts, values in new.items():
                before = points.get(ts)
                points[ts] = values if before is None else {**before, **values}
            bucket.aggregates = aggregates
            buckets[key] = bucket
        hours = {}
        for key, (hour, minutes, combined) in self._hours.items():
            hour.minutes.update(minutes)
            hour.combined = combined
            hours[key] = hour
        _keep(self._owner._buckets, buckets)
        _keep(self._owner._hours, hours)


_series: dict[tuple[str, str | None, str | None], Series] = {}  # bounded like lineprotocol's


def series_of(reading: Reading) -> Series:
    """A reading's tags, sorted: its series (looked up: the same few come with every batch)."""
    key = (reading.device, reading.sensor, reading.location)
    series = _series.get(key)
    if series is None:
        if len(_series) >= REMEMBER_MAX:
            _series.clear()
        series = _series[key] = tuple(sorted(reading.tags.items()))
    return series


class Rollups:
    """Computes the rollup points for the batches of one store (its worker thread only)."""

    def __init__(self, influx: InfluxV1, measurement: str, exclusive: bool) -> None:
        """`exclusive`: this bridge is the only one writing these series (no share group),
        so the buckets it wrote can be remembered instead of read back."""
        self._influx = influx
        self.measurement = measurement
        self.exclusive = exclusive
        self._buckets: OrderedDict[tuple[Series, int], Bucket] = OrderedDict()
        self._hours: OrderedDict[tuple[Series, int], Hour] = OrderedDict()
        self.queries = 0  # read-back requests, for /metrics and the benchmark
        self._starts: dict[tuple[str, Series], str] = {}
        self._names: dict[str, str] = {}  # metric -> its escaped field name

    def prepare(self, readings: Sequence[Reading]) -> Prepared:
        """The rollup lines for the buckets these readings fall in. Raises InfluxUnavailable
        or InfluxRejected (reading back failed: the store retries the batch)."""
        batch: dict[tuple[Series, int], Points] = {}
        for reading in readings:
            ts = reading.ts_us
            key = (series_of(reading), ts - ts % MINUTE_US)
            points = batch.get(key)
            if points is None:
                points = batch[key] = {}
            before = points.get(ts)  # fields of one series and time merge; the later wins
            points[ts] = reading.metrics if before is None else {**before, **reading.metrics}
        stored = self._stored_points([key for key in batch if not self._knows(self._buckets, key)])
        buckets: dict[tuple[Series, int], tuple[Bucket, Points, dict[str, Aggregate]]] = {}
        by_hour: dict[tuple[Series, int], tuple[Minutes, bool]] = {}  # changed minutes; all grown?
        for key, new in batch.items():
            bucket = self._buckets[key] if key not in stored else Bucket(stored[key], _aggregates(stored[key]))
            aggregates, grown = _added(bucket, new)
            buckets[key] = (bucket, new, aggregates)
            series, minute = key
            changed = by_hour.get((series, minute - minute % HOUR_US))
            if changed is None:
                by_hour[(series, minute - minute % HOUR_US)] = ({minute: aggregates}, grown)
            else:
                changed[0][minute] = aggregates
                if not grown:
                    by_hour[(series, minute - minute % HOUR_US)] = (changed[0], False)
        stored_hours = self._stored_minutes([key for key in by_hour if not self._knows(self._hours, key)])
        hours: dict[tuple[Series, int], tuple[Hour, Minutes, dict[str, Aggregate]]] = {}
        lines = [self.line("1m", s, m, a) for (s, m), (_, _, a) in buckets.items()]
        for key, (minutes, grown) in by_hour.items():
            hour = Hour.of(stored_hours[key]) if key in stored_hours else self._hours[key]
            combined = _grown(hour, minutes) if grown else combine_minutes({**hour.minutes, **minutes}.values())
            hours[key] = (hour, minutes, combined)
            lines.append(self.line("1h", key[0], key[1], combined))
        return Prepared([line for line in lines if line], buckets, hours, self)

    def _knows(self, memory: OrderedDict[tuple[Series, int], Any], key: tuple[Series, int]) -> bool:
        if self.exclusive and key in memory:
            memory.move_to_end(key)
            return True
        return False

    # --- reading back ----------------------------------------------------------------------

    def _stored_points(self, keys: list[tuple[Series, int]]) -> dict[tuple[Series, int], Points]:
        """The raw points stored in these (series, minute) buckets."""
        found = self._read_back(quote_ident(self.measurement), MINUTE_US, keys)
        return {key: {t: v for t, row in rows.items() if (v := _metrics(row))} for key, rows in found.items()}

    def _stored_minutes(self, keys: list[tuple[Series, int]]) -> dict[tuple[Series, int], Minutes]:
        """The 1-minute rollups stored in these (series, hour) buckets."""
        found = self._read_back(rollup_measurement(self.measurement, "1m"), HOUR_US, keys)
        return {key: {t: _parse_rollup(row) for t, row in rows.items()} for key, rows in found.items()}

    def _read_back(
        self, measurement: str, span_us: int, keys: list[tuple[Series, int]]
    ) -> dict[tuple[Series, int], dict[int, dict[str, Any]]]:
        """Every row of `measurement` (InfluxQL, quoted) in each (series, bucket start) of
        `keys`, by time (µs)."""
        statements = [
            f"SELECT * FROM {measurement} WHERE {series_where(series)} "
            f"AND time >= {start * 1000} AND time < {(start + span_us) * 1000}"
            for series, start in keys
        ]
        answers: list[list[dict[str, Any]]] = []
        for first in range(0, len(statements), STATEMENTS_PER_QUERY):
            self.queries += 1
            answers += self._influx.query_many(statements[first : first + STATEMENTS_PER_QUERY], epoch="u")
        found: dict[tuple[Series, int], dict[int, dict[str, Any]]] = {}
        for key, answer in zip(keys, answers, strict=True):
            rows = found[key] = {}
            for serie in answer:
                for row in serie["values"]:
                    rows[int(row[0])] = dict(zip(serie["columns"], row, strict=True))
        return found

    # --- writing ---------------------------------------------------------------------------

    def line(self, source: str, series: Series, start_us: int, aggregates: dict[str, Aggregate]) -> bytes:
        if not aggregates:
            return b""
        start = self._starts.get((source, series))
        if start is None:  # "measurement,tags", escaped: the same few for every batch
            if len(self._starts) >= REMEMBER_MAX:
                self._starts.clear()
            tags = "".join(f",{escape_key(k)}={escape_key(v)}" for k, v in series)
            start = self._starts[(source, series)] = escape_measurement(f"{self.measurement}_{source}") + tags
        fields = []
        for metric in sorted(aggregates):
            a, name = aggregates[metric], self._names.get(metric)
            if name is None:
                if len(self._names) >= REMEMBER_MAX:
                    self._names.clear()
                name = self._names[metric] = escape_key(metric)
            if math.isfinite(a.total):
                fields.append(
                    f"{name}_count={a.count}i,{name}_sum={a.total!r},{name}_mean={a.total / a.count!r},"
                    f"{name}_min={a.low!r},{name}_max={a.high!r}"
                )
            else:  # no float holds the sum (rollups._sum)
                fields.append(f"{name}_count={a.count}i,{name}_min={a.low!r},{name}_max={a.high!r}")
        return f"{start} {','.join(fields)} {start_us}".encode()


def _keep(memory: OrderedDict[tuple[Series, int], V], news: dict[tuple[Series, int], V]) -> None:
    """Remember `news`, the newest last, forgetting the longest unused beyond the bound."""
    for key, value in news.items():
        memory[key] = value
        memory.move_to_end(key)
    while len(memory) > REMEMBER_MAX:
        memory.popitem(last=False)


def _added(bucket: Bucket, new: Points) -> tuple[dict[str, Aggregate], bool]:
    """The bucket's aggregates with these points in (a point at a time it holds replaces its
    values, as in InfluxDB), and whether they only grew (no min or max can have moved inward,
    so the hour's can be updated from them: `_grown`). Incremental: a batch costs its own
    readings, not the bucket's."""
    aggregates = dict(bucket.aggregates)  # the stored ones stay as they are until commit
    if bucket.points.keys().isdisjoint(new):  # all new points: the common case, in C loops
        rows = list(new.values())
        for metric in set().union(*rows) if len(rows) > 1 else rows[0]:
            column = [row[metric] for row in rows if metric in row]
            a = aggregates.get(metric)
            low, high, total = min(column), max(column), sum(column)
            if a is not None:
                low, high, total = min(a.low, low), max(a.high, high), a.total + total
            count = len(column) + (a.count if a is not None else 0)
            aggregates[metric] = Aggregate(count, total if math.isfinite(total) else math.nan, low, high)
        return aggregates, True
    again: set[str] = set()  # metrics whose min or max a replaced value may have been
    changed = {metric: Aggregate(a.count, a.total, a.low, a.high) for metric, a in aggregates.items()}
    for ts, values in new.items():
        old = bucket.points.get(ts, {})
        for metric, value in values.items():
            a = changed.get(metric)
            if metric in old:
                if old[metric] == value:
                    continue  # a redelivery
                if a is not None and old[metric] in (a.low, a.high):
                    again.add(metric)
                    continue
                if a is not None:
                    a.count, a.total = a.count - 1, a.total - old[metric]
            if a is None:
                changed[metric] = Aggregate(1, value, value, value)
            else:
                a.count, a.total, a.low, a.high = a.count + 1, a.total + value, min(a.low, value), max(a.high, value)
    for a in changed.values():
        if not math.isfinite(a.total):  # past what a float holds, or NaN already
            a.total = math.nan
    if again:  # from all the points, as they will be
        merged = {ts: {**bucket.points.get(ts, {}), **new.get(ts, {})} for ts in bucket.points.keys() | new.keys()}
        for metric, a in _aggregates(merged).items():
            if metric in again:
                changed[metric] = a
    return changed, not again


def _grown(hour: Hour, minutes: Minutes) -> dict[str, Aggregate]:
    """The hour's aggregates with these minutes in, each of which only grew (`_added`): its
    count and sum change by theirs, its min and max can only move outward. A batch costs
    the minutes it touched, not the hour's sixty."""
    combined = dict(hour.combined)
    for minute, aggregates in minutes.items():
        before = hour.minutes.get(minute, {})
        for metric, a in aggregates.items():
            c, b = combined.get(metric), before.get(metric)
            if c is None:
                combined[metric] = a
                continue
            count, total = c.count + a.count, c.total + a.total
            if b is not None:
                count, total = count - b.count, total - b.total
            combined[metric] = Aggregate(count, total, min(c.low, a.low), max(c.high, a.high))
    return combined


def combine_minutes(minutes: Iterable[dict[str, Aggregate]]) -> dict[str, Aggregate]:
    """An hour's aggregates from all its minutes' (exact: counts and sums add up, min and
    max are the minutes')."""
    parts = list(minutes)
    combined = {}
    for metric in {metric for aggregates in parts for metric in aggregates}:
        found = Aggregate.combine(a[metric] for a in parts if metric in a)
        if found is not None:
            combined[metric] = found
    return combined


def _aggregates(points: Points) -> dict[str, Aggregate]:
    by_metric: dict[str, list[float]] = {}
    for values in points.values():
        for metric, value in values.items():
            by_metric.setdefault(metric, []).append(value)
    return {metric: a for metric, values in by_metric.items() if (a := Aggregate.of(values)) is not None}


def _metrics(row: dict[str, Any]) -> dict[str, float]:
    """The metric values of a stored raw point (not its tags, time or seq)."""
    return {
        name: float(value)
        for name, value in row.items()
        if name not in NOT_METRICS and isinstance(value, int | float) and not isinstance(value, bool)
    }


def _sum(values: Sequence[float]) -> float:
    """Their exact sum, or NaN when no float holds it (values near ±1.8e308): such a bucket's
    rollup has no `_sum` and `_mean`; its count, min and max stay exact."""
    try:
        total = math.fsum(values)
    except OverflowError:
        return math.nan
    return total if math.isfinite(total) else math.nan


def _parse_rollup(row: dict[str, object]) -> dict[str, Aggregate]:
    """A stored rollup row back into its aggregates (a metric missing a min or max is left
    out; one without a sum, as `_sum` says, counts with a NaN sum)."""
    found = {}
    for name in row:
        if not name.endswith("_count"):
            continue
        metric = name.removesuffix("_count")
        count, total = row.get(name), row.get(f"{metric}_sum")
        low, high = row.get(f"{metric}_min"), row.get(f"{metric}_max")
        if isinstance(count, int) and count > 0 and all(isinstance(v, int | float) for v in (low, high)):
            kept = float(total) if isinstance(total, int | float) else math.nan
            found[metric] = Aggregate(count, kept, float(low), float(high))  # type: ignore[arg-type]
    return found


def rollup_measurement(measurement: str, source: str) -> str:
    """The InfluxQL name of a rollup measurement: in its own retention policy."""
    return f"{quote_ident(ROLLUP_RP)}.{quote_ident(f'{measurement}_{source}')}"


def series_where(series: Series) -> str:
    """The exact series: each tag it has, and '' (absent) for those it has not."""
    tags = dict(series)
    return " AND ".join(f"{quote_ident(tag)} = {quote_string(tags.get(tag, ''))}" for tag in TAGS)
