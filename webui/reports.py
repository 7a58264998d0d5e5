"""Reports: one device, a location's devices or all, over days of a time zone (docs/contract.md).

`/report` is the page (a form, then the report, printable), `/api/report` its numbers as JSON
and `/api/report.csv` the same as CSV. The numbers come from the bridge (bridge/reports.py);
here the request is checked, the days are cut in the time zone, and each device's report is
joined with what the dashboard knows of it: its health (interval, sensor, the calibration in
force), the alert rules watching it and the alert history of the period.

A report never looks clean when it is not: a range in the future, a device nobody heard of,
a location without devices are refused with the reason, and a device without readings gets
a report that says so (one gap over the whole range), not an empty table.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from werkzeug.datastructures import MultiDict

from common.reading import now_us
from common.settings import time_zone
from common.topics import DEVICE_ID
from common.version import VERSION
from webui.context import HistoryFailed, HistoryUnavailable, WebContext
from webui.pdf import PdfUnavailable, render_pdf

reports = Blueprint("reports", __name__)

MAX_DAYS = 366
# No reading is older (a reading's ts is refused before 1970), and InfluxDB cannot take a time
# before 1677 in a query.
EARLIEST = date(1970, 1, 1)
MAX_DEVICES = 50
CAUSES = {
    "seq_missing": "readings taken but never stored (their seq numbers never arrived)",
    "not_taken": "no readings taken (the sensor failed or the publisher was stopped; nothing was lost)",
    "seq_restarted": "the publisher's numbering started again (a new installation)",
    "none_stored": "no readings stored",
}


class BadReport(ValueError):
    """A report that cannot be made as asked: `status` (400 or 404) and the reason."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Period:
    first: date
    last: date
    zone: ZoneInfo
    day_starts_us: list[int]
    end_us: int  # the end of the last day, or now when that is sooner


def _midnight_us(day: date, zone: ZoneInfo) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp() * 1_000_000)


def _date(args: MultiDict[str, str], key: str, default: date) -> date:
    raw = args.get(key, "")
    if not raw:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise BadReport(f"{key}: a date as YYYY-MM-DD, e.g. {key}={default.isoformat()}") from None


def period(args: MultiDict[str, str], default_zone: str, now: int) -> Period:
    """The days asked for (`from`, `to`: dates; `tz`: a zone), checked; BadReport otherwise."""
    name = args.get("tz", "") or default_zone
    zone = time_zone(name)
    if zone is None:
        raise BadReport(f"tz: {name[:60]!r} is no time zone (an IANA name such as Europe/Berlin)")
    today = datetime.fromtimestamp(now / 1e6, zone).date()
    last = _date(args, "to", today)
    first = _date(args, "from", last)
    if first > today:
        raise BadReport(
            f"the range starts in the future (today is {today.isoformat()} in {zone.key}): nothing to report yet"
        )
    if first > last:
        raise BadReport("from is after to")
    if first < EARLIEST:
        raise BadReport(f"the range starts before {EARLIEST.isoformat()}: no reading is that old")
    if (last - first).days + 1 > MAX_DAYS:
        raise BadReport(f"at most {MAX_DAYS} days in one report")
    days = [first + timedelta(days=n) for n in range((min(last, today) - first).days + 1)]
    starts = [_midnight_us(day, zone) for day in days]
    end = min(_midnight_us(last + timedelta(days=1), zone), now)
    return Period(first, last, zone, starts, end)


def chosen_devices(args: MultiDict[str, str], known: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The devices asked for: `device` (repeatable), `location`, or `all=1`; BadReport otherwise."""
    asked = args.getlist("device")
    location = args.get("location", "")
    every = args.get("all", "") == "1"
    if sum(map(bool, (asked, location, every))) != 1:
        raise BadReport("say which devices: device=D (repeatable), location=L, or all=1")
    if asked:
        for device in asked:
            if not DEVICE_ID.fullmatch(device):
                raise BadReport(f"device: {device[:70]!r} is no device id")
        by_id = {info["device"]: info for info in known}
        unknown = [device for device in asked if device not in by_id]
        if unknown:
            raise BadReport(f"no such device: {', '.join(unknown)} (the bridge has not heard of it)", 404)
        chosen = [by_id[device] for device in dict.fromkeys(asked)]
    elif location:
        chosen = [info for info in known if info.get("location") == location]
        if not chosen:
            raise BadReport(f"no devices at location {location[:70]!r}", 404)
    else:
        chosen = list(known)
        if not chosen:
            raise BadReport("no devices yet: nothing to report", 404)
    if len(chosen) > MAX_DEVICES:
        raise BadReport(f"at most {MAX_DEVICES} devices in one report")
    return chosen


def thresholds(context: WebContext, device: str) -> list[dict[str, Any]]:
    """The above/below rules watching `device`, as the report counts them."""
    if context.alerts is None:
        return []
    found = []
    for rule in context.alerts.rules(device):
        for kind in ("above", "below"):
            if kind in rule and rule.get("metric"):
                found.append({"rule": rule["id"], "metric": rule["metric"], "kind": kind, "level": rule[kind]})
    return found


def build(context: WebContext, args: MultiDict[str, str]) -> dict[str, Any]:
    """The whole report as JSON-ready data; BadReport, HistoryUnavailable or HistoryFailed."""
    if context.reports is None:
        raise BadReport("reports need the bridge's InfluxDB", 503)
    now = now_us()
    span = period(args, context.zone, now)
    devices = []
    for info in chosen_devices(args, context.devices.snapshot()):
        device = info["device"]
        health = info.get("health") or {}
        interval = health.get("interval_s")
        rules = thresholds(context, device)
        numbers = context.reports.device(device, span.day_starts_us, span.end_us, interval, rules)
        for day in numbers["days"]:
            day["outside"] = {
                rule: {"readings": count, "minutes": None if not interval else round(count * interval / 60, 1)}
                for rule, count in day["outside"].items()
            }
        for gap in numbers["gaps"]:
            gap["explained"] = CAUSES[gap["cause"]]
        history = context.alerts.history(span.day_starts_us[0], device) if context.alerts else []
        changes = [entry for entry in reversed(history) if entry["at"] < span.end_us / 1000]
        devices.append(
            {
                **numbers,
                "location": info.get("location"),
                "sensor": info.get("sensor"),
                "calibration": health.get("calibration") or {},
                "rules": rules,
                "alerts": changes,
                "excursions": excursions(changes),
                "metric_names": sorted({metric for day in numbers["days"] for metric in day["metrics"]}),
            }
        )
    audit = None
    if context.audit is not None:
        verdict = context.audit.verify()
        audit = {
            "entries": [vars(e) for e in context.audit.entries(_utc(span.day_starts_us[0]), _utc(span.end_us))],
            "chain": {"entries": verdict.entries, "head": verdict.head, "broken_at": verdict.broken_at,
                      "reason": verdict.reason},
        }  # fmt: skip
    return {
        "audit": audit,
        "site": context.site,
        "zone": span.zone.key,
        "from": span.first.isoformat(),
        "to": span.last.isoformat(),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "version": VERSION,
        "devices": devices,
    }


def excursions(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alerts' changes (oldest first) joined into excursions: from firing to resolved
    (`end_ms` None: still firing at the period's end), the peak the alert saw, who
    acknowledged it and their comment."""
    open_: dict[str, dict[str, Any]] = {}
    done: list[dict[str, Any]] = []
    for change in changes:
        alert, state = change["id"], change["state"]
        if state in ("firing", "acknowledged"):
            current = open_.setdefault(
                alert,
                {
                    "rule": change["rule"],
                    "metric": change.get("metric"),
                    "threshold": change.get("threshold"),
                    "start_ms": change.get("since") or change["at"],
                    "end_ms": None,
                    "peak": change.get("peak"),
                    "acknowledged_by": None,
                    "comment": None,
                },
            )
            if change.get("peak") is not None:
                current["peak"] = change["peak"]
            if state == "acknowledged":
                current["acknowledged_by"], current["comment"] = change.get("by"), change.get("comment")
        elif state == "ok" and alert in open_:
            finished = open_.pop(alert)
            finished["end_ms"] = change["at"]
            if change.get("peak") is not None:
                finished["peak"] = change["peak"]
            done.append(finished)
    return sorted([*done, *open_.values()], key=lambda e: e["start_ms"])


def _utc(us: int) -> str:
    """As the audit log writes its times: RFC 3339 UTC to the millisecond."""
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _context() -> WebContext:
    context: WebContext = current_app.extensions["sensorpipe"]
    return context


def _answer(args: MultiDict[str, str]) -> dict[str, Any] | tuple[str, int]:
    try:
        return build(_context(), args)
    except BadReport as exc:
        return str(exc), exc.status
    except HistoryUnavailable as exc:
        return str(exc), 503
    except HistoryFailed as exc:
        return str(exc), 500


@reports.get("/api/report")
def report_json() -> Response | tuple[Response, int]:
    answer = _answer(request.args)
    if isinstance(answer, tuple):
        return jsonify(error=answer[0]), answer[1]
    return jsonify(answer)


def local_time(ms: float | None, zone: ZoneInfo) -> str:
    """An epoch-ms time as the report shows it: local, with its offset, to the second."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="seconds")


CSV_COLUMNS = (
    "record", "device", "day", "metric", "count", "mean", "min", "min_at", "max", "max_at",
    "rule", "readings_outside", "minutes_outside", "start", "end", "cause", "missing", "peak", "acknowledged_by",
    "comment",
)  # fmt: skip


def to_csv(report: dict[str, Any]) -> str:
    """One row per device summary, per day and metric, per day and rule, per gap (`record`)."""
    zone = ZoneInfo(report["zone"])
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for device in report["devices"]:
        name = device["device"]
        writer.writerow(
            {
                "record": "summary",
                "device": name,
                "count": device["stored"],
                "missing": device["missing_seq"],
                "start": local_time(device["start_ms"], zone),
                "end": local_time(device["end_ms"], zone),
            }
        )
        for day in device["days"]:
            label = local_time(day["start_ms"], zone)[:10]
            for metric, stats in day["metrics"].items():
                writer.writerow(
                    {
                        "record": "day",
                        "device": name,
                        "day": label,
                        "metric": metric,
                        "count": stats["count"],
                        "mean": repr(stats["mean"]),
                        "min": repr(stats["min"]),
                        "min_at": local_time(stats["min_at_ms"], zone),
                        "max": repr(stats["max"]),
                        "max_at": local_time(stats["max_at_ms"], zone),
                    }
                )
            for rule, outside in day["outside"].items():
                writer.writerow(
                    {
                        "record": "outside",
                        "device": name,
                        "day": label,
                        "rule": rule,
                        "readings_outside": outside["readings"],
                        "minutes_outside": "" if outside["minutes"] is None else outside["minutes"],
                    }
                )
        for excursion in device["excursions"]:
            writer.writerow(
                {
                    "record": "excursion",
                    "device": name,
                    "rule": excursion["rule"],
                    "metric": excursion["metric"],
                    "start": local_time(excursion["start_ms"], zone),
                    "end": local_time(excursion["end_ms"], zone),
                    "peak": "" if excursion["peak"] is None else excursion["peak"],
                    "acknowledged_by": excursion["acknowledged_by"] or "",
                    "comment": excursion["comment"] or "",
                }
            )
        for gap in device["gaps"]:
            writer.writerow(
                {
                    "record": "gap",
                    "device": name,
                    "start": local_time(gap["start_ms"], zone),
                    "end": local_time(gap["end_ms"], zone),
                    "cause": gap["cause"],
                    "missing": "" if gap["missing"] is None else gap["missing"],
                }
            )
    return out.getvalue()


def _filename(report: dict[str, Any], extension: str) -> str:
    names = "-".join(device["device"] for device in report["devices"][:3])
    return f"report-{names}-{report['from']}-{report['to']}.{extension}"


@reports.get("/api/report.csv")
def report_csv() -> Response | tuple[Response, int]:
    answer = _answer(request.args)
    if isinstance(answer, tuple):
        return jsonify(error=answer[0]), answer[1]
    return Response(
        to_csv(answer),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{_filename(answer, "csv")}"'},
    )


@reports.get("/api/report.pdf")
def report_pdf() -> Response | tuple[Response, int]:
    """The report as the page prints it, rendered here; an error is JSON, never a PDF."""
    answer = _answer(request.args)
    if isinstance(answer, tuple):
        return jsonify(error=answer[0]), answer[1]
    html = _render(answer, request.query_string.decode(), pdf=True)
    try:
        pdf = render_pdf(html)
    except PdfUnavailable as exc:
        return jsonify(error=str(exc)), 503
    return Response(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{_filename(answer, "pdf")}"'},
    )


def quick_ranges(today: date) -> list[tuple[str, date, date]]:
    """The form's shortcuts: (label, from, to)."""
    first_of_month = today.replace(day=1)
    last_month_end = first_of_month - timedelta(days=1)
    return [
        ("today", today, today),
        ("yesterday", today - timedelta(days=1), today - timedelta(days=1)),
        ("last 7 days", today - timedelta(days=6), today),
        ("last month", last_month_end.replace(day=1), last_month_end),
    ]


def _page_context() -> dict[str, Any]:
    context = _context()
    snapshot = context.devices.snapshot()
    zone = time_zone(request.args.get("tz", "") or context.zone) or ZoneInfo(context.zone)
    which = {k: v for k, v in request.args.items(multi=True) if k in ("device", "location", "all", "tz")}
    shortcuts = [
        (label, urlencode([*which.items(), ("from", first.isoformat()), ("to", last.isoformat())]))
        for label, first, last in quick_ranges(datetime.now(zone).date())
    ]
    return {
        "shortcuts": shortcuts if which else [],
        "known": sorted(info["device"] for info in snapshot),
        "locations": sorted({info["location"] for info in snapshot if info.get("location")}),
        "args": request.args,
        "zone_default": context.zone,
        "signed_in": current_app.extensions["sensorpipe.access"].enabled,
    }


def _render(report: dict[str, Any], query: str, pdf: bool = False) -> str:
    """The report page; `pdf`: as the PDF lays it out (the day tables as fixed-width text)."""
    zone = ZoneInfo(report["zone"])
    return render_template(
        "report.html",
        report=report,
        error=None,
        pdf=pdf,
        when=lambda ms: local_time(ms, zone).replace("T", " "),
        csv_query=query,
        **_page_context(),
    )


@reports.get("/report")
def report_page() -> str | tuple[str, int]:
    if not request.args:
        return render_template("report.html", report=None, error=None, **_page_context())
    answer = _answer(request.args)
    if isinstance(answer, tuple):
        return render_template("report.html", report=None, error=answer[0], **_page_context()), answer[1]
    return _render(answer, request.query_string.decode())


def scheduled_report(app: Flask, first: date, last: date) -> tuple[str, str, bytes]:
    """All devices' report from `first` to `last` for sending: (title, body, PDF). Raises
    BadReport (no devices yet), HistoryUnavailable or HistoryFailed, PdfUnavailable."""
    query = f"all=1&from={first.isoformat()}&to={last.isoformat()}"
    with app.test_request_context(f"/api/report.pdf?{query}"):
        context = _context()
        report = build(context, request.args)
        pdf = render_pdf(_render(report, query, pdf=True))
    period = first.isoformat() if first == last else f"{first.isoformat()} to {last.isoformat()}"
    lines = [f"{report['site']}: the report of {period} ({report['zone']}) is attached.", ""]
    for device in report["devices"]:
        outside = sum(o["readings"] for day in device["days"] for o in day["outside"].values())
        expected = f" of {device['expected']}" if device["expected"] is not None else ""
        lines.append(
            f"{device['device']}: {device['stored']}{expected} readings stored, {device['missing_seq']} never stored, "
            f"{len(device['gaps'])} gaps, {outside} readings past an alert level"
        )
    return f"{report['site']}: report {period}", "\n".join(lines), pdf
