"""The numbers of a report (issue "records people can sign"), read from InfluxDB's raw points.

For one device over a range cut into days (the caller's local days): per day and metric the
count, mean, minimum and maximum with the times they were measured; per day and threshold,
how many readings were past it; over the whole range, every gap with its cause as the
readings' own numbering tells it:

- `seq_missing`: the seq numbers jump: readings were taken and numbered but never stored
  (the outbox was full and dropped them, or they were lost on the way);
- `not_taken`: the time jumps but the seq does not: nothing was lost, the publisher took no
  readings then (stopped, its sensor failing, its clock not set);
- `seq_restarted`: the seq went back (a new outbox: the publisher was installed anew);
- `none_stored`: nothing stored between the range's start (or end) and the first (last)
  reading.

Selectors (`min`, `max`) without GROUP BY return the point's own time: one statement per
metric per day, all days of a device in one request.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.device_events import events_measurement
from bridge.history import web_answer
from bridge.influx import ROLLUP_RP, InfluxV1, quote_ident, quote_string
from bridge.rollups import HOUR_US, MINUTE_US, rollup_measurement

NOT_METRICS = frozenset({"seq"})
DEFAULT_GAP_US = 5 * 60 * 1_000_000  # with no interval known: a gap is five minutes without a reading
GAP_INTERVALS = 3  # with an interval known: more than this many intervals without a reading
STATEMENTS_PER_REQUEST = 60
STATUS_SLACK_MS = 1_000
DAY_US = 86_400_000_000  # how far around the range the device's events are looked for


@dataclass(frozen=True)
class Threshold:
    """A level a rule watches: readings of `metric` `above` (or `below`) `level`."""

    rule: str
    metric: str
    kind: str  # above, below
    level: float


@dataclass(frozen=True)
class MetricDay:
    count: int
    mean: float | None
    min: float | None
    min_at_ms: float | None
    max: float | None
    max_at_ms: float | None


@dataclass(frozen=True)
class Day:
    start_ms: float
    end_ms: float
    metrics: dict[str, MetricDay]
    outside: dict[str, int]  # rule -> readings past its level that day


@dataclass(frozen=True)
class Gap:
    start_ms: float  # the last reading before it (or the range's start)
    end_ms: float  # the first reading after it (or the range's end)
    cause: str
    missing: int | None  # readings that would have been there: seq numbers, or intervals
    seq_from: int | None = None  # the seq numbers that never arrived, for seq_missing
    seq_to: int | None = None
    # What the device said then (bridge/device_events.py): {"at_ms", "what": offline, online,
    # read_failures or outbox_dropped, "count" for the last two}.
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class DeviceReport:
    device: str
    start_ms: float
    end_ms: float
    interval_s: float | None
    stored: int  # readings stored in the range
    expected: int | None  # from the interval: the range's length over it
    missing_seq: int  # readings numbered but never stored
    days: list[Day]
    gaps: list[Gap] = field(default_factory=list)


class ReportReader:
    """Reads the report's numbers of one device; raises InfluxUnavailable or InfluxRejected.

    With `rollups` (a callable: asked at each report, as the bridge learns whether it keeps
    them), the numbers come from the 1-hour rollups where they give them exactly, and the
    raw points are read only where they must be: the hour of each day's minimum and maximum
    (for its time), the hours past a rule's level (to count the readings), and the hours
    around a gap (for its seq numbers). A day that does not start on the hour (a zone
    offset of minutes) is read from the 1-minute rollups.
    """

    def __init__(self, influx: InfluxV1, measurement: str, rollups: bool | Callable[[], bool] = False) -> None:
        self._influx = influx
        self._name = measurement
        self._measurement = quote_ident(measurement)
        self._rollups = rollups

    def device(
        self,
        device: str,
        day_starts_us: Sequence[int],
        end_us: int,
        interval_s: float | None,
        thresholds: Sequence[Threshold] = (),
    ) -> DeviceReport:
        """The report of `device` over [day_starts_us[0], end_us), one Day per start."""
        use_rollups = self._rollups() if callable(self._rollups) else self._rollups
        report = self._from_rollups(device, day_starts_us, end_us, interval_s, thresholds) if use_rollups else None
        if report is None:
            report = self._from_raw(device, day_starts_us, end_us, interval_s, thresholds)
        if not report.gaps:
            return report
        return replace(report, gaps=self._explained(device, report.gaps, day_starts_us[0], end_us))

    def _explained(self, device: str, gaps: list[Gap], start_us: int, end_us: int) -> list[Gap]:
        """Each gap with what the device said during it: status changes, and how many failed
        reads and dropped readings its health counted from before the gap to after it."""
        measurement = f"{quote_ident(ROLLUP_RP)}.{quote_ident(events_measurement(self._name))}"
        [answer] = self._influx.query_many(
            [f'SELECT * FROM {measurement} WHERE "device" = {quote_string(device)} '
             f"AND time >= {(start_us - DAY_US) * 1000} AND time < {(end_us + DAY_US) * 1000}"],
            epoch="ms",
        )  # fmt: skip
        rows = [dict(zip(s["columns"], values, strict=True)) for s in answer for values in s["values"]]
        rows.sort(key=lambda row: row["time"])
        health = [row for row in rows if row.get("kind") == "health"]
        explained = []
        told: set[int] = set()  # each status change goes to one gap only
        for gap in gaps:
            said: list[dict[str, Any]] = []
            for index, row in enumerate(rows):
                if row.get("kind") != "status" or index in told:
                    continue
                # The status comes a moment after the first reading it announces (another topic,
                # the bridge's clock): an "online" just after the gap is still the gap's.
                until = gap.end_ms + (STATUS_SLACK_MS if row["online"] else 0)
                if gap.start_ms < row["time"] <= until:
                    told.add(index)
                    said.append({"at_ms": row["time"], "what": "online" if row["online"] else "offline"})
            before = next((row for row in reversed(health) if row["time"] <= gap.start_ms), None)
            after = next((row for row in health if row["time"] >= gap.end_ms), None) or next(
                (row for row in reversed(health) if row["time"] <= gap.end_ms), None
            )
            for key, what in (("reads_failed", "read_failures"), ("outbox_dropped", "outbox_dropped")):
                if after is None or after.get(key) is None or after is before:
                    continue
                start = before.get(key) if before is not None else None
                # A publisher that started again counts from 0: then its count is the gap's.
                count = after[key] - start if start is not None and after[key] >= start else after[key]
                if count > 0:
                    said.append({"at_ms": after["time"], "what": what, "count": int(count)})
            explained.append(replace(gap, events=said))
        return explained

    def _from_raw(
        self,
        device: str,
        day_starts_us: Sequence[int],
        end_us: int,
        interval_s: float | None,
        thresholds: Sequence[Threshold],
    ) -> DeviceReport:
        start_us = day_starts_us[0]
        bounds = list(zip(day_starts_us, [*day_starts_us[1:], end_us], strict=True))
        where_device = f'FROM {self._measurement} WHERE "device" = {quote_string(device)}'

        def span(a: int, b: int) -> str:
            return f"{where_device} AND time >= {a * 1000} AND time < {b * 1000}"

        [counts] = self._influx.query_many([f"SELECT count(*) {span(start_us, end_us)}"])
        columns = _row(counts)
        metrics = sorted(
            name.removeprefix("count_")
            for name, value in columns.items()
            if name.startswith("count_") and value and name.removeprefix("count_") not in NOT_METRICS
        )
        stored = max((int(value) for name, value in columns.items() if name.startswith("count_")), default=0)
        statements: list[str] = []
        for a, b in bounds:
            if metrics:
                aggregates = ", ".join(
                    f'count({quote_ident(m)}) AS "count_{i}", mean({quote_ident(m)}) AS "mean_{i}"'
                    for i, m in enumerate(metrics)
                )
                statements.append(f"SELECT {aggregates} {span(a, b)}")
            for metric in metrics:
                statements.append(f"SELECT min({quote_ident(metric)}) {span(a, b)}")
                statements.append(f"SELECT max({quote_ident(metric)}) {span(a, b)}")
            for threshold in thresholds:
                op = ">" if threshold.kind == "above" else "<"
                statements.append(
                    f"SELECT count({quote_ident(threshold.metric)}) {span(a, b)} "
                    f"AND {quote_ident(threshold.metric)} {op} {threshold.level!r}"
                )
        answers = iter(self._query(statements))
        days = []
        for a, b in bounds:
            per_metric: dict[str, MetricDay] = {}
            if metrics:
                row = _row(next(answers))
                for index, metric in enumerate(metrics):
                    count = int(row.get(f"count_{index}") or 0)
                    low = _row(next(answers))
                    high = _row(next(answers))
                    if count:
                        per_metric[metric] = MetricDay(
                            count,
                            row.get(f"mean_{index}"),
                            low.get("min"),
                            low.get("time"),
                            high.get("max"),
                            high.get("time"),
                        )
            outside = {}
            for threshold in thresholds:
                outside[threshold.rule] = int(_row(next(answers)).get("count") or 0)
            days.append(Day(a / 1000, b / 1000, per_metric, outside))
        gaps = self._gaps(span(start_us, end_us), start_us, end_us, interval_s) if stored else []
        if not stored:
            gaps = [Gap(start_us / 1000, end_us / 1000, "none_stored", _intervals(end_us - start_us, interval_s))]
        return _report(device, start_us, end_us, interval_s, stored, days, gaps)

    def _from_rollups(
        self,
        device: str,
        day_starts_us: Sequence[int],
        end_us: int,
        interval_s: float | None,
        thresholds: Sequence[Threshold],
    ) -> DeviceReport | None:
        """None when the rollups hold nothing of the range (not kept for it: written before
        the bridge kept them, until `python -m bridge rollups rebuild`): the raw points answer."""
        start_us = day_starts_us[0]
        bounds = list(zip(day_starts_us, [*day_starts_us[1:], end_us], strict=True))
        device_is = f'"device" = {quote_string(device)}'

        def rollup(a: int, b: int) -> str:
            source = rollup_measurement(self._name, "1h" if a % HOUR_US == 0 and b % HOUR_US == 0 else "1m")
            return f"FROM {source} WHERE {device_is} AND time >= {a * 1000} AND time < {b * 1000}"

        def raw(a: int, b: int) -> str:
            return f"FROM {self._measurement} WHERE {device_is} AND time >= {a * 1000} AND time < {b * 1000}"

        per_hour, metrics = self._hours(device_is, start_us, end_us)
        if not per_hour:
            return None
        statements: list[str] = []
        for a, b in bounds:
            for metric in metrics:
                q = quote_ident
                statements.append(
                    f'SELECT sum({q(metric + "_count")}) AS "count", sum({q(metric + "_sum")}) AS "sum" {rollup(a, b)}'
                )
                statements.append(f'SELECT min({q(metric + "_min")}) AS "min" {rollup(a, b)}')
                statements.append(f'SELECT max({q(metric + "_max")}) AS "max" {rollup(a, b)}')
            for threshold in thresholds:
                field, op = (
                    (f"{threshold.metric}_max", ">") if threshold.kind == "above" else (f"{threshold.metric}_min", "<")
                )
                statements.append(
                    f"SELECT {quote_ident(field)} {rollup(a, b)} AND {quote_ident(field)} {op} {threshold.level!r}"
                )
        answers = iter(self._query(statements, epoch="u"))
        # The raw reads: the bucket of each extreme (its first reading at that value), and the
        # buckets past a level (their readings past it).
        exact: list[str] = []
        plan: list[tuple[int, int, dict[str, Any], list[tuple[str, int]]]] = []
        for index, (a, b) in enumerate(bounds):
            width = HOUR_US if a % HOUR_US == 0 and b % HOUR_US == 0 else MINUTE_US
            found: dict[str, Any] = {}
            for metric in metrics:
                totals, low, high = _row(next(answers)), _row(next(answers)), _row(next(answers))
                count = int(totals.get("count") or 0)
                if not count:
                    continue
                found[metric] = (count, totals["sum"], low.get("min"), high.get("max"))
                for selector, row in (("min", low), ("max", high)):
                    bucket = int(row["time"])
                    exact.append(
                        f"SELECT {selector}({quote_ident(metric)}) {raw(max(a, bucket), min(b, bucket + width))}"
                    )
            past: list[tuple[str, int]] = []
            for threshold in thresholds:
                for series in next(answers):
                    for values in series["values"]:
                        bucket = int(values[0])
                        op = ">" if threshold.kind == "above" else "<"
                        metric = quote_ident(threshold.metric)
                        within = raw(max(a, bucket), min(b, bucket + width))
                        exact.append(f"SELECT count({metric}) {within} AND {metric} {op} {threshold.level!r}")
                        past.append((threshold.rule, 1))
            plan.append((index, width, found, past))
        exact_answers = iter(self._query(exact, epoch="ms"))
        days = []
        for (a, b), (_, _, found, past) in zip(bounds, plan, strict=True):
            per_metric: dict[str, MetricDay] = {}
            for metric, (count, total, low, high) in found.items():
                low_row, high_row = _row(next(exact_answers)), _row(next(exact_answers))
                per_metric[metric] = MetricDay(
                    count, total / count, low, low_row.get("time"), high, high_row.get("time")
                )
            outside = {threshold.rule: 0 for threshold in thresholds}
            for rule, _ in past:
                outside[rule] += int(_row(next(exact_answers)).get("count") or 0)
            days.append(Day(a / 1000, b / 1000, per_metric, outside))
        stored = sum(per_hour.values())
        gaps = self._gaps_near(device_is, per_hour, start_us, end_us, interval_s)
        return _report(device, start_us, end_us, interval_s, stored, days, gaps)

    def _hours(self, device_is: str, start_us: int, end_us: int) -> tuple[dict[int, int], list[str]]:
        """Every hour of the range from the 1-hour rollups: its readings (the most of any
        metric's count, over the device's series), and the metrics seen."""
        [hours] = self._influx.query_many(
            [f"SELECT * FROM {rollup_measurement(self._name, '1h')} WHERE {device_is} "
             f"AND time >= {start_us // HOUR_US * HOUR_US * 1000} AND time < {end_us * 1000}"],
            epoch="u",
        )  # fmt: skip
        per_hour: dict[int, int] = {}
        seen: set[str] = set()
        for series in hours:
            columns = series["columns"]
            for values in series["values"]:
                row = dict(zip(columns, values, strict=True))
                counts = {k.removesuffix("_count"): int(v) for k, v in row.items() if k.endswith("_count") and v}
                seen.update(counts)
                hour = int(row["time"])
                per_hour[hour] = per_hour.get(hour, 0) + max(counts.values(), default=0)
        return per_hour, sorted(seen - NOT_METRICS)

    def _gaps_near(
        self, device_is: str, per_hour: dict[int, int], start_us: int, end_us: int, interval_s: float | None
    ) -> list[Gap]:
        """The gaps, read from the raw points of the hours that may hold one: an hour with
        fewer readings than the interval gives (or none), with the hour on each side."""
        first_hour = start_us // HOUR_US * HOUR_US
        last_hour = (end_us - 1) // HOUR_US * HOUR_US
        # Readings in a whole hour: from the interval, or without one (no health heard) the
        # most common count of the range's hours, which a gap-free hour has.
        full = 3600 / interval_s if interval_s else statistics.median_high(per_hour.values())
        suspect = []
        for hour in range(first_hour, last_hour + 1, HOUR_US):
            span = min(hour + HOUR_US, end_us) - max(hour, start_us)
            if per_hour.get(hour, 0) < full * span / HOUR_US - 0.5 or hour in (first_hour, last_hour):
                suspect.append(hour)
        windows: list[list[int]] = []
        for hour in suspect:
            a, b = max(start_us, hour - HOUR_US), min(end_us, hour + 2 * HOUR_US)
            if windows and a <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], b)
            else:
                windows.append([a, b])
        gaps: list[Gap] = []
        for a, b in windows:
            where = f"FROM {self._measurement} WHERE {device_is} AND time >= {a * 1000} AND time < {b * 1000}"
            for gap in self._gaps(where, a, b, interval_s):
                edge = gap.cause == "none_stored" and (
                    (gap.start_ms == a / 1000 and a != start_us) or (gap.end_ms == b / 1000 and b != end_us)
                )
                if not edge and gap not in gaps:  # a window's own edges are no gap of the range
                    gaps.append(gap)
        return gaps

    def _query(self, statements: Sequence[str], epoch: str = "ms") -> list[list[Any]]:
        """Every statement's answer, a batch per request (a month of days makes hundreds, and
        they travel in the URL)."""
        answers: list[list[Any]] = []
        for index in range(0, len(statements), STATEMENTS_PER_REQUEST):
            answers.extend(self._influx.query_many(statements[index : index + STATEMENTS_PER_REQUEST], epoch=epoch))
        return answers

    def _gaps(self, where: str, start_us: int, end_us: int, interval_s: float | None) -> list[Gap]:
        limit_us = int(interval_s * 1e6 * GAP_INTERVALS) if interval_s else DEFAULT_GAP_US
        first, last, jumps = self._influx.query_many(
            [
                f'SELECT first("seq") {where}',
                f'SELECT last("seq") {where}',
                # Computed by the server: only the points after a jump come back, not a month of rows.
                f'SELECT * FROM (SELECT difference("seq") AS step, elapsed("seq", 1u) AS gap_us {where}) '
                f"WHERE step <> 1 OR gap_us > {limit_us}",
            ],
            epoch="u",
        )
        gaps = []
        first_us = _row(first).get("time")
        if first_us is not None and first_us - start_us > limit_us:
            gaps.append(
                Gap(start_us / 1000, first_us / 1000, "none_stored", _intervals(first_us - start_us, interval_s))
            )
        for series in jumps:
            columns = series["columns"]
            for values in series["values"]:
                row = dict(zip(columns, values, strict=True))
                after_us, step, gap_us = int(row["time"]), int(row["step"]), int(row["gap_us"])
                before_us = after_us - gap_us
                if step > 1:
                    seq_after = self._seq_at(where, after_us)
                    gaps.append(
                        Gap(
                            before_us / 1000,
                            after_us / 1000,
                            "seq_missing",
                            step - 1,
                            None if seq_after is None else seq_after - step + 1,
                            None if seq_after is None else seq_after - 1,
                        )
                    )
                elif step < 1:
                    gaps.append(Gap(before_us / 1000, after_us / 1000, "seq_restarted", None))
                else:
                    gaps.append(Gap(before_us / 1000, after_us / 1000, "not_taken", _intervals(gap_us, interval_s, 1)))
        last_us = _row(last).get("time")
        if last_us is not None and end_us - last_us > limit_us:
            gaps.append(Gap(last_us / 1000, end_us / 1000, "none_stored", _intervals(end_us - last_us, interval_s)))
        return gaps

    def _seq_at(self, where: str, at_us: int) -> int | None:
        [answer] = self._influx.query_many([f'SELECT "seq" {where} AND time = {at_us * 1000}'], epoch="u")
        value = _row(answer).get("seq")
        return None if value is None else int(value)


def _report(
    device: str, start_us: int, end_us: int, interval_s: float | None, stored: int, days: list[Day], gaps: list[Gap]
) -> DeviceReport:
    return DeviceReport(
        device=device,
        start_ms=start_us / 1000,
        end_ms=end_us / 1000,
        interval_s=interval_s,
        stored=stored,
        expected=None if not interval_s else int((end_us - start_us) / 1e6 // interval_s),
        missing_seq=sum(gap.missing or 0 for gap in gaps if gap.cause == "seq_missing"),
        days=days,
        gaps=gaps,
    )


def _row(series: Any) -> dict[str, Any]:
    """The first row of a statement's answer as a dict (empty when it has none)."""
    if not series:
        return {}
    first = series[0]
    return dict(zip(first["columns"], first["values"][0], strict=True)) if first.get("values") else {}


def _intervals(span_us: int, interval_s: float | None, less: int = 0) -> int | None:
    """How many readings `span_us` would have held at the interval (less the reading that ends it)."""
    return None if not interval_s else max(0, round(span_us / 1e6 / interval_s) - less)


class WebReports:
    """The report reader as the web app asks for it: JSON-ready, the web app's own errors."""

    def __init__(self, reader: ReportReader) -> None:
        self._reader = reader

    def device(
        self,
        device: str,
        day_starts_us: Sequence[int],
        end_us: int,
        interval_s: float | None,
        thresholds: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        levels = [Threshold(t["rule"], t["metric"], t["kind"], float(t["level"])) for t in thresholds]
        return web_answer(lambda: self._reader.device(device, day_starts_us, end_us, interval_s, levels), "report")
