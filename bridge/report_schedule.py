"""Scheduled reports: yesterday's every day, last week's every week, sent with the PDF attached.

`SENSORPIPE_REPORT_DAILY=07:00` sends the report of the day before at 07:00 local time
(`SENSORPIPE_TIMEZONE`), `SENSORPIPE_REPORT_WEEKLY=mon 07:00` the report of the week before
(Monday to Sunday), for all devices, through Apprise to `SENSORPIPE_REPORT_NOTIFY` (default:
the alert targets); e-mail carries the PDF as an attachment. What was sent is kept in a file
beside the alerts' database, so a restart sends nothing twice, and a bridge that was off at
the time sends the latest report it missed when it starts (older ones it says in the log: the
dashboard makes any report again). A failed delivery is tried again every minute.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bridge.alerts.notify import Target

log = logging.getLogger(__name__)

CHECK_S = 30.0  # how often the clock is looked at
RETRY_S = 60.0
DAILY = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Schedule:
    """When: `at` local time, every day, or on `weekday` (0 Monday) for a weekly one."""

    kind: str  # daily, weekly
    at: time
    weekday: int | None = None

    def due(self, now: datetime) -> tuple[date, date]:
        """The period whose report is due latest at `now` (local): (first day, last day)."""
        today = now.date()
        if self.kind == "daily":
            sent_today = now.time() >= self.at
            last = today - timedelta(days=1 if sent_today else 2)
            return last, last
        assert self.weekday is not None
        days_since = (today.weekday() - self.weekday) % 7
        send_day = today - timedelta(days=days_since)
        if days_since == 0 and now.time() < self.at:
            send_day -= timedelta(days=7)
        # The week before the send day, Monday to Sunday.
        last = send_day - timedelta(days=send_day.weekday() + 1)
        return last - timedelta(days=6), last


def parse_daily(raw: str) -> Schedule | None:
    """`HH:MM`, or empty for none; ValueError otherwise."""
    if raw == "":
        return None
    match = DAILY.fullmatch(raw.strip())
    if not match:
        raise ValueError("a local time as HH:MM, e.g. 07:00")
    return Schedule("daily", time(int(match[1]), int(match[2])))


def parse_weekly(raw: str) -> Schedule | None:
    """`mon 07:00` (a weekday's three letters and a time), or empty for none."""
    if raw == "":
        return None
    day, _, clock = raw.strip().lower().partition(" ")
    match = DAILY.fullmatch(clock.strip())
    if day not in WEEKDAYS or not match:
        raise ValueError("a weekday and a local time, e.g. mon 07:00")
    return Schedule("weekly", time(int(match[1]), int(match[2])), WEEKDAYS.index(day))


# (first day, last day) -> (title, body, PDF bytes); raises when the report cannot be made.
Render = Callable[[date, date], tuple[str, str, bytes]]


class ReportSchedule:
    """Sends each schedule's due report once, on a thread of its own."""

    def __init__(
        self,
        schedules: list[Schedule],
        zone: ZoneInfo,
        targets: list[Target],
        render: Render,
        state_path: Path,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._schedules = schedules
        self._zone = zone
        self._targets = targets
        self._render = render
        self._state_path = state_path
        self._clock = clock or (lambda: datetime.now(zone))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="report-schedule", daemon=True)
        self.last_error: str | None = None
        self._said: tuple[str, str] | None = None  # the last "sent already" logged

    def start(self) -> None:
        if self._schedules and self._targets:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(30)

    def _sent(self) -> dict[str, str]:
        try:
            body = json.loads(self._state_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s (%s): scheduled reports may be sent again", self._state_path, exc)
            return {}
        return {k: v for k, v in body.items() if isinstance(k, str) and isinstance(v, str)}

    def _record(self, kind: str, period: str) -> None:
        sent = self._sent() | {kind: period}
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self._state_path.parent, delete=False) as file:
            json.dump(sent, file)
        os.replace(file.name, self._state_path)

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = CHECK_S
            try:
                for schedule in self._schedules:
                    if not self._send_due(schedule):
                        wait = RETRY_S
            except Exception:  # the schedule must outlive a bug, a full disk, InfluxDB away
                log.exception("scheduled report failed; trying again in %.0f s", RETRY_S)
                wait = RETRY_S
            self._stop.wait(wait)

    def _send_due(self, schedule: Schedule) -> bool:
        """Send the schedule's due report to each target that has not had it; False when one
        could not be reached (tried again later, the others not sent to twice)."""
        first, last = schedule.due(self._clock())
        period = f"{first.isoformat()}..{last.isoformat()}"
        sent = self._sent()
        waiting = [n for n in range(len(self._targets)) if sent.get(f"{schedule.kind}:{n}") != period]
        if not waiting:
            if self._said != (schedule.kind, period):
                log.info("the %s report %s was sent already", schedule.kind, period)
                self._said = (schedule.kind, period)
            return True
        try:
            title, body, pdf = self._render(first, last)
        except Exception as exc:  # InfluxDB away, no devices yet: said in the log, tried again
            self.last_error = f"{schedule.kind} report {period}: {exc}"
            log.error("cannot make the %s report %s: %s", schedule.kind, period, exc)
            return False
        ok = True
        with tempfile.TemporaryDirectory() as folder:
            attachment = Path(folder) / f"report-{first.isoformat()}-{last.isoformat()}.pdf"
            attachment.write_bytes(pdf)
            for n in waiting:
                target = self._targets[n]
                problems: list[str] = []

                def said(entry: Any, plugin: Any, problems: list[str] = problems) -> None:
                    problems.append(entry.message)

                if target.service.notify(
                    body=body, title=title, attach=str(attachment), log_callback=said, log_level=logging.WARNING
                ):
                    self._record(f"{schedule.kind}:{n}", period)
                    log.info("sent the %s report %s to %s", schedule.kind, period, target.name)
                else:
                    ok = False
                    self.last_error = f"{schedule.kind} report {period} to {target.name}: {'; '.join(problems)[:300]}"
                    log.error("%s; trying again in %.0f s", self.last_error, RETRY_S)
        if ok:
            self.last_error = None
        return ok
