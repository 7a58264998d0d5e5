"""`python -m bridge rollups rebuild [--since 30d | --since 2026-01-01] [--restart]`

Computes the rollups (bridge/rollups.py) of points stored before a bridge kept them, from
the raw points, one UTC day at a time, oldest first. The bridge's settings (environment or
flags after the command's own) say which InfluxDB, database and measurement.

- Progress on stderr, one line a day; the last day done is kept in a state file
  (`rollups-rebuild-<database>-<measurement>.json` in the state folder), so a rebuild that
  was stopped goes on where it stopped (`--restart`: from the start again).
- Safe while the bridge runs: a day's rollups are written, then its raw points counted again;
  if some arrived meanwhile (an outbox replay into an old day), the day is done again. The
  bridge computes the rollups of what it writes itself, from the same raw points.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.influx import ROLLUP_RP, InfluxError, InfluxTarget, InfluxV1, quote_ident
from bridge.rollups import HOUR_US, Aggregate, Rollups, Series, combine_minutes
from bridge.settings import load_settings
from common.reading import now_us
from common.settings import SettingsError, state_folder

DAY_US = 24 * HOUR_US
WRITE_LINES = 5000
AGAIN_MAX = 5  # a day redone this often while points keep arriving in it: left for the next run
SINCE = re.compile(r"(?P<n>[0-9]{1,5})d|(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})")


class RebuildError(ValueError):
    """A bad argument or state: one line for the user."""


def parse_since(text: str, now: int) -> int:
    """`30d` (days before today) or `2026-01-01`: the first UTC day to rebuild (µs)."""
    match = SINCE.fullmatch(text)
    if match is None:
        raise RebuildError(f"--since {text!r}: a number of days (30d) or a date (2026-01-01)")
    if match["n"] is not None:
        start = now - int(match["n"]) * DAY_US
    else:
        try:
            start = int(datetime.strptime(match["date"], "%Y-%m-%d").replace(tzinfo=UTC).timestamp()) * 1_000_000
        except ValueError:
            raise RebuildError(f"--since {text!r} is not a date") from None
    if start > now:
        raise RebuildError(f"--since {text!r} is in the future")
    return start - start % DAY_US


class Rebuild:
    def __init__(self, influx: InfluxV1, measurement: str, state: Path, out: Any = sys.stderr) -> None:
        self._influx = influx
        self._measurement = measurement
        self._state = state
        self._out = out
        self._lines = Rollups(influx, measurement, exclusive=False)

    def run(self, since_us: int | None, restart: bool) -> int:
        """Rebuild from `since_us` (default: the oldest point, or where the last run stopped);
        returns the days done."""
        now = now_us()
        done_until = None if restart or since_us is not None else self._resume()
        start = since_us if since_us is not None else done_until or self._oldest()
        if start is None:
            self._say("no readings stored: nothing to rebuild")
            return 0
        days = list(range(start - start % DAY_US, now, DAY_US))
        if done_until is not None:
            self._say(f"going on from {_day(start)} (the last run stopped there; --restart to begin again)")
        for number, day in enumerate(days, start=1):
            points = self._day(day)
            self._say(f"[{number}/{len(days)}] {_day(day)}: {points} readings")
            self._state.parent.mkdir(parents=True, exist_ok=True)
            self._state.write_text(json.dumps({"done_until_us": day + DAY_US}))
        self._say(f"rollups rebuilt for {len(days)} days")
        return len(days)

    def _day(self, day: int) -> int:
        """Rebuild one day; again while its raw points change meanwhile. Returns their count."""
        counted = self._count(day)
        for _ in range(AGAIN_MAX):
            for hour in range(day, day + DAY_US, HOUR_US):  # an hour at a time: bounded answers
                self._write(self._minutes(hour))
            again = self._count(day)
            if again == counted:
                return counted
            counted = again
        self._say(f"{_day(day)}: readings keep arriving; the bridge rolls those up itself")
        return counted

    def _count(self, day: int) -> int:
        answer = self._influx.query(
            f"SELECT count(*) FROM {quote_ident(self._measurement)} WHERE {_span(day, DAY_US)}", epoch="u"
        )
        return sum(int(v) for serie in answer for v in serie["values"][0][1:] if isinstance(v, int))

    def _minutes(self, hour: int) -> dict[tuple[Series, int], dict[str, Aggregate]]:
        """The hour's 1-minute aggregates per series, from InfluxDB's own count, sum, min, max."""
        answer = self._influx.query(
            f"SELECT count(*), sum(*), min(*), max(*) FROM {quote_ident(self._measurement)} "
            f"WHERE {_span(hour, HOUR_US)} GROUP BY time(1m), * fill(none)",
            epoch="u",
        )
        found: dict[tuple[Series, int], dict[str, Aggregate]] = {}
        for serie in answer:
            series: Series = tuple(sorted((k, v) for k, v in serie.get("tags", {}).items() if v))
            columns = serie["columns"]
            for row in serie["values"]:
                values = dict(zip(columns, row, strict=True))
                aggregates = {}
                for name, count in values.items():
                    metric = name.removeprefix("count_")
                    if not name.startswith("count_") or metric == "seq" or not isinstance(count, int) or count < 1:
                        continue
                    total, low, high = (values.get(f"{part}_{metric}") for part in ("sum", "min", "max"))
                    if all(isinstance(v, int | float) for v in (total, low, high)):
                        aggregates[metric] = Aggregate(count, float(total), float(low), float(high))  # type: ignore[arg-type]
                if aggregates:
                    found[(series, int(row[0]))] = aggregates
        return found

    def _write(self, minutes: dict[tuple[Series, int], dict[str, Aggregate]]) -> None:
        hours: dict[tuple[Series, int], list[dict[str, Aggregate]]] = {}
        for (series, minute), aggregates in minutes.items():
            hours.setdefault((series, minute - minute % HOUR_US), []).append(aggregates)
        lines = [self._lines.line("1m", series, minute, a) for (series, minute), a in minutes.items()]
        for (series, hour), parts in hours.items():
            lines.append(self._lines.line("1h", series, hour, combine_minutes(parts)))
        for first in range(0, len(lines), WRITE_LINES):
            self._influx.write(lines[first : first + WRITE_LINES], rp=ROLLUP_RP)

    def _oldest(self) -> int | None:
        first = f"SELECT * FROM {quote_ident(self._measurement)} ORDER BY time ASC LIMIT 1"
        answer = self._influx.query(first, epoch="u")
        return int(answer[0]["values"][0][0]) if answer else None

    def _resume(self) -> int | None:
        try:
            return int(json.loads(self._state.read_text())["done_until_us"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _say(self, text: str) -> None:
        print(f"rollups rebuild: {text}", file=self._out, flush=True)


def _span(start: int, length: int) -> str:
    return f"time >= {start * 1000} AND time < {(start + length) * 1000}"


def _day(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d")


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge rollups rebuild",
        description="Compute the rollups of the readings stored before the bridge kept them.",
        epilog="Other flags and SENSORPIPE_* variables are the bridge's (which InfluxDB, database, measurement).",
    )
    parser.add_argument("--since", help="the first day: 30d (days ago) or 2026-01-01; default: the oldest reading")
    parser.add_argument("--restart", action="store_true", help="begin again, not where the last run stopped")
    own, rest = parser.parse_known_args(argv)
    try:
        settings = load_settings(rest, environ)
        since = parse_since(own.since, now_us()) if own.since else None
    except (SettingsError, RebuildError) as exc:
        print(f"rollups rebuild: {exc}", file=sys.stderr)
        return 2
    influx = InfluxV1(InfluxTarget(settings.influx_url, settings.influx_db, settings.influx_token.reveal()))
    state = state_folder(environ) / f"rollups-rebuild-{settings.influx_db}-{settings.influx_measurement}.json"
    started = time.monotonic()
    try:
        Rebuild(influx, settings.influx_measurement, state).run(since, own.restart)
    except InfluxError as exc:
        print(f"rollups rebuild: InfluxDB: {exc} (run it again: it goes on where it stopped)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rollups rebuild: stopped (run it again: it goes on where it stopped)", file=sys.stderr)
        return 130
    print(f"rollups rebuild: done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0
