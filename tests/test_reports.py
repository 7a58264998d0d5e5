"""Reports (bridge/reports.py, webui/reports.py) on a real InfluxDB with a week of known data.

The week, a reading a minute, as a cold room's publisher would have sent it: an excursion
above 8 °C on the third day, a 3-hour outage whose outbox was replayed afterwards (complete:
no gap), a 20-minute stretch whose seq numbers never arrived, and a day of failed sensor
reads (no readings, seq continuous). Every number of the report is checked against a
reference computed here from the raw points.
"""

from __future__ import annotations

import csv
import email
import io
import itertools
import math
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from bridge.influx import InfluxV1
from bridge.lineprotocol import to_line
from bridge.rebuild import Rebuild
from bridge.report_schedule import parse_daily, parse_weekly
from bridge.reports import ReportReader, Threshold
from common.reading import Reading
from common.version import VERSION
from tests.conftest import BridgeProcess, Mqtt
from tests.mailbox import Mailbox
from tests.waiting import wait_until

ZONE = ZoneInfo("Europe/Berlin")
FIRST_DAY = date(2026, 11, 2)
DAYS = 7
INTERVAL_S = 60
LIMIT = Threshold("cold-room-warm", "temperature", "above", 8.0)


@dataclass(frozen=True)
class Point:
    ts_us: int
    seq: int
    temperature: float
    humidity: float


def local_midnight_us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=ZONE).timestamp() * 1_000_000)


def the_week() -> tuple[list[Point], dict[str, Any]]:
    """The points as stored, and where the planted events are."""
    rng = random.Random(7)
    start = local_midnight_us(FIRST_DAY)
    excursion = (local_midnight_us(FIRST_DAY + timedelta(days=2)) + 10 * 3600 * 10**6, 45)  # 10:00, 45 min
    lost = (local_midnight_us(FIRST_DAY + timedelta(days=3)) + 14 * 3600 * 10**6, 20)  # 14:00, 20 readings
    failed_day = FIRST_DAY + timedelta(days=5)
    points, seq = [], 0
    for minute in range(DAYS * 1440):
        ts_us = start + minute * INTERVAL_S * 10**6
        local_day = datetime.fromtimestamp(ts_us / 1e6, ZONE).date()
        if local_day == failed_day:
            continue  # the sensor failed every read: nothing taken, nothing numbered
        if lost[0] <= ts_us < lost[0] + lost[1] * INTERVAL_S * 10**6:
            seq += 1  # taken and numbered, never stored
            continue
        temperature = 4.0 + 0.6 * math.sin(minute / 300) + rng.gauss(0, 0.05)
        into = (ts_us - excursion[0]) / (INTERVAL_S * 10**6)
        if 0 <= into < excursion[1]:
            temperature = 4.0 + 5.0 * math.sin(math.pi * into / excursion[1])  # up to 9 °C and back
        points.append(Point(ts_us, seq, round(temperature, 2), round(60 + rng.gauss(0, 2), 1)))
        seq += 1
    return points, {"lost_at": lost[0], "failed_day": failed_day}


def store(influx: InfluxV1, points: list[Point]) -> None:
    # The 3-hour outage: its readings arrive after the rest (the outbox replayed), stored as taken.
    outage = range(2 * 1440 + 20 * 60, 2 * 1440 + 23 * 60)
    order = [p for i, p in enumerate(points) if i not in outage] + [points[i] for i in outage]
    lines = [
        to_line(
            Reading("cold-room", p.ts_us, {"temperature": p.temperature, "humidity": p.humidity}, p.seq, "dht22"),
            "environment",
        )
        for p in order
    ]
    for index in range(0, len(lines), 5000):
        influx.write(lines[index : index + 5000])


def reference_days(points: list[Point]) -> list[dict[str, Any]]:
    days = []
    for offset in range(DAYS):
        a = local_midnight_us(FIRST_DAY + timedelta(days=offset))
        b = local_midnight_us(FIRST_DAY + timedelta(days=offset + 1))
        inside = [p for p in points if a <= p.ts_us < b]
        metrics = {}
        for metric in ("humidity", "temperature"):
            values = [(getattr(p, metric), p.ts_us) for p in inside]
            if values:
                low = min(values, key=lambda v: (v[0], v[1]))  # the first time of the lowest
                high = min(values, key=lambda v: (-v[0], v[1]))
                metrics[metric] = {
                    "count": len(values),
                    "mean": sum(v for v, _ in values) / len(values),
                    "min": low[0],
                    "min_at_ms": low[1] / 1000,
                    "max": high[0],
                    "max_at_ms": high[1] / 1000,
                }
        outside = sum(1 for p in inside if p.temperature > LIMIT.level)
        days.append({"start_ms": a / 1000, "end_ms": b / 1000, "metrics": metrics, "outside": {LIMIT.rule: outside}})
    return days


def reference_gaps(points: list[Point]) -> list[tuple[float, float, str, int | None]]:
    gaps: list[tuple[float, float, str, int | None]] = []
    for before, after in itertools.pairwise(points):
        step, gap_s = after.seq - before.seq, (after.ts_us - before.ts_us) / 1e6
        if step > 1:
            gaps.append((before.ts_us / 1000, after.ts_us / 1000, "seq_missing", step - 1))
        elif gap_s > 3 * INTERVAL_S:
            gaps.append((before.ts_us / 1000, after.ts_us / 1000, "not_taken", round(gap_s / INTERVAL_S) - 1))
    return gaps


@pytest.fixture
def week(influx: InfluxV1) -> tuple[list[Point], dict[str, Any]]:
    points, planted = the_week()
    store(influx, points)
    return points, planted


@pytest.mark.parametrize("rollups", [False, True], ids=["raw", "rollups"])
def test_a_weeks_report_equals_the_reference_from_the_raw_points(
    influx: InfluxV1, week: tuple[list[Point], dict[str, Any]], rollups: bool, tmp_path: Path
) -> None:
    """From the raw points alone, and from the rollups with the raw points read only where
    they must be: the same numbers."""
    points, _ = week
    if rollups:  # the rollups a bridge keeps as it stores, made here from what was written raw
        with (tmp_path / "rebuild.log").open("w") as out:
            Rebuild(influx, "environment", tmp_path / "rebuild.json", out).run(None, restart=True)
    starts = [local_midnight_us(FIRST_DAY + timedelta(days=d)) for d in range(DAYS)]
    end = local_midnight_us(FIRST_DAY + timedelta(days=DAYS))
    report = ReportReader(influx, "environment", rollups).device("cold-room", starts, end, INTERVAL_S, [LIMIT])

    assert report.stored == len(points)
    assert report.expected == DAYS * 1440
    assert report.missing_seq == 20
    for got, want in zip(report.days, reference_days(points), strict=True):
        assert (got.start_ms, got.end_ms, got.outside) == (want["start_ms"], want["end_ms"], want["outside"])
        assert set(got.metrics) == set(want["metrics"])
        for metric, expected in want["metrics"].items():
            stats = got.metrics[metric]
            assert stats.mean == pytest.approx(expected["mean"], abs=1e-9)
            assert (stats.count, stats.min, stats.min_at_ms, stats.max, stats.max_at_ms) == (
                expected["count"],
                expected["min"],
                expected["min_at_ms"],
                expected["max"],
                expected["max_at_ms"],
            )
    assert report.days[2].outside[LIMIT.rule] > 0 and report.days[2].metrics["temperature"].max == 9.0
    assert not report.days[5].metrics  # the day of failed reads
    gaps = [(g.start_ms, g.end_ms, g.cause, g.missing) for g in report.gaps]
    assert gaps == reference_gaps(points)
    lost = next(g for g in report.gaps if g.cause == "seq_missing")
    assert lost.missing == 20 and lost.seq_to is not None and lost.seq_from == lost.seq_to - 19
    assert next(g for g in report.gaps if g.cause == "not_taken").missing == 1440
    # The replayed outage left no gap: its readings are stored, late, with their own times.
    assert [g.cause for g in report.gaps] == ["seq_missing", "not_taken"]


@pytest.mark.parametrize("rollups", [False, True], ids=["raw", "rollups"])
def test_no_readings_at_all_is_one_gap_not_a_clean_record(influx: InfluxV1, rollups: bool) -> None:
    start = local_midnight_us(FIRST_DAY)
    report = ReportReader(influx, "environment", rollups).device("nobody", [start], start + 86_400_000_000, 60.0)
    assert report.stored == 0 and report.days[0].metrics == {}
    assert [(g.cause, g.missing) for g in report.gaps] == [("none_stored", 1440)]


@pytest.mark.parametrize("rollups", [False, True], ids=["raw", "rollups"])
def test_readings_that_start_late_and_stop_early_leave_gaps_at_both_ends(
    influx: InfluxV1, rollups: bool, tmp_path: Path
) -> None:
    start = local_midnight_us(FIRST_DAY)
    noon = start + 12 * 3600 * 10**6
    influx.write(
        [to_line(Reading("late", noon + i * 60 * 10**6, {"temperature": 5.0}, i), "environment") for i in range(10)]
    )
    if rollups:
        with (tmp_path / "rebuild.log").open("w") as out:
            Rebuild(influx, "environment", tmp_path / "rebuild.json", out).run(None, restart=True)
    report = ReportReader(influx, "environment", rollups).device("late", [start], start + 86_400_000_000, 60.0)
    assert [(g.cause, g.start_ms, g.end_ms) for g in report.gaps] == [
        ("none_stored", start / 1000, noon / 1000),
        ("none_stored", (noon + 9 * 60 * 10**6) / 1000, (start + 86_400_000_000) / 1000),
    ]


@dataclass(frozen=True)
class Reporting:
    bridge: BridgeProcess
    query: str
    points: list[Point]


CALIBRATION = {"temperature": {"gain": 1.0, "offset": -0.3, "since": "2026-10-01T08:00:00Z"}}


@pytest.fixture
def reporting(
    start_bridge: Callable[..., BridgeProcess],
    mqtt_client: Mqtt,
    prefix: str,
    week: tuple[list[Point], dict[str, Any]],
    tmp_path: Path,
) -> Reporting:
    """A bridge on the week's database with a rule on it and the device's health (its interval
    and calibration), as a publisher would have left it retained."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nid = "cold-room-warm"\ndevices = ["cold-room"]\nmetric = "temperature"\nabove = 8.0\n')
    bridge = start_bridge(
        SENSORPIPE_ALERT_RULES=str(rules), SENSORPIPE_TIMEZONE="Europe/Berlin", SENSORPIPE_SITE_NAME="Lab 3 cold room"
    )
    health = {"reads_ok": 1, "reads_failed": 0, "last_error": None, "outbox_depth": 0, "uptime_s": 1,
              "interval_s": 60.0, "sensor": "dht22", "calibration": CALIBRATION}  # fmt: skip
    mqtt_client.publish(f"{prefix}/cold-room/health", health, retain=True)
    # Known from its stored readings at the bridge's start already: wait for its health.
    wait_until(lambda: any(d["health"] for d in bridge.get("/api/devices?device=cold-room")), 20, "the device's health")
    query = f"device=cold-room&from={FIRST_DAY}&to={FIRST_DAY + timedelta(days=DAYS - 1)}"
    return Reporting(bridge, query, week[0])


def test_the_report_as_json_and_csv_through_a_real_bridge(reporting: Reporting) -> None:
    bridge, query, points = reporting.bridge, reporting.query, reporting.points
    report = requests.get(f"{bridge.url}/api/report?{query}", timeout=30).json()
    assert (report["site"], report["zone"], report["from"]) == ("Lab 3 cold room", "Europe/Berlin", str(FIRST_DAY))
    [device] = report["devices"]
    assert device["calibration"] == CALIBRATION and device["stored"] == len(points) and device["missing_seq"] == 20
    reference = reference_days(points)
    for got, want in zip(device["days"], reference, strict=True):
        assert got["metrics"].keys() == want["metrics"].keys()
        for metric, expected in want["metrics"].items():
            assert got["metrics"][metric] == {**expected, "mean": pytest.approx(expected["mean"], abs=1e-9)}
        readings = want["outside"][LIMIT.rule]
        assert got["outside"][LIMIT.rule] == {"readings": readings, "minutes": float(readings)}  # one a minute
    assert [(g["start_ms"], g["end_ms"], g["cause"], g["missing"]) for g in device["gaps"]] == reference_gaps(points)

    answer = requests.get(f"{bridge.url}/api/report.csv?{query}", timeout=30)
    assert answer.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    day_rows = {(row["day"], row["metric"]): row for row in rows if row["record"] == "day"}
    for want in reference:
        label = datetime.fromtimestamp(want["start_ms"] / 1000, ZONE).date().isoformat()
        for metric, expected in want["metrics"].items():
            row = day_rows.pop((label, metric))
            assert (int(row["count"]), float(row["min"]), float(row["max"])) == (
                expected["count"],
                expected["min"],
                expected["max"],
            )
            assert float(row["mean"]) == pytest.approx(expected["mean"], abs=1e-9)
            assert datetime.fromisoformat(row["max_at"]).timestamp() * 1000 == expected["max_at_ms"]
            assert datetime.fromisoformat(row["min_at"]).timestamp() * 1000 == expected["min_at_ms"]
    assert not day_rows
    gap_rows = [row for row in rows if row["record"] == "gap"]
    assert [(row["cause"], int(row["missing"])) for row in gap_rows] == [
        (cause, missing) for _, _, cause, missing in reference_gaps(points)
    ]


def test_the_report_page_in_chromium(reporting: Reporting, page: Any, artifacts: Path) -> None:
    page.goto(f"{reporting.bridge.url}/report?{reporting.query}")
    page.wait_for_selector("#report")
    assert "Lab 3 cold room" in page.text_content("#report-title")
    third = (FIRST_DAY + timedelta(days=2)).isoformat()
    assert page.text_content(f'tr[data-day="{third}"][data-metric="temperature"] td:nth-child(3)') == "9.00 at 10:22:00"
    failed = (FIRST_DAY + timedelta(days=5)).isoformat()
    assert "no readings stored" in page.text_content(f'tr[data-day="{failed}"].empty')
    causes = page.evaluate("() => [...document.querySelectorAll('.gaps li')].map((li) => li.dataset.cause)")
    assert causes == ["seq_missing", "not_taken"]
    assert "temperature × 1.0 − 0.3 since 2026-10-01T08:00:00Z" in page.text_content(".calibration")
    page.screenshot(path=str(artifacts / "report.png"), full_page=True)
    page.click("#shortcuts >> text=yesterday")  # the same device, another range
    page.wait_for_selector("#report")
    yesterday = (datetime.now(ZONE).date() - timedelta(days=1)).isoformat()
    assert f"{yesterday} to {yesterday}" in page.text_content("#report-title")
    assert page.locator('.report-device[data-device="cold-room"]').count() == 1


def test_the_report_as_pdf_holds_the_same_numbers(reporting: Reporting, artifacts: Path) -> None:
    answer = requests.get(f"{reporting.bridge.url}/api/report.pdf?{reporting.query}", timeout=60)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/pdf"
    (artifacts / "report.pdf").write_bytes(answer.content)
    text = subprocess.run(
        ["pdftotext", "-layout", "-", "-"], input=answer.content, capture_output=True, check=True
    ).stdout.decode()
    lines = {" ".join(line.split()) for line in text.splitlines()}
    flat = " ".join(text.split())
    for needed in ("Lab 3 cold room", f"{FIRST_DAY} to {FIRST_DAY + timedelta(days=DAYS - 1)}", "Europe/Berlin"):
        assert needed in flat
    assert f"sensorpipe {VERSION}" in flat and "temperature × 1.0 − 0.3 since 2026-10-01T08:00:00Z" in flat
    assert "Checked by" in flat and "CSV" not in flat  # the links are for the screen only
    for want in reference_days(reporting.points):
        label = datetime.fromtimestamp(want["start_ms"] / 1000, ZONE).date().isoformat()
        for metric, e in want["metrics"].items():
            at = [datetime.fromtimestamp(e[k] / 1000, ZONE).strftime("%H:%M:%S") for k in ("min_at_ms", "max_at_ms")]
            line = f"{label} {e['min']:.2f} at {at[0]} {e['max']:.2f} at {at[1]} {e['mean']:.2f} {e['count']}"
            # In its metric's table: after that table's heading, before the next one's.
            table = flat.split(f"{metric} min, at max, at mean readings", 1)[1].split(" min, at max, at mean", 1)[0]
            assert line in lines and line in table, line
    assert "readings taken but never stored (their seq numbers never arrived), 20 readings" in flat


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("device=cold-room&from=2099-01-01", 400, "the range starts in the future"),
        ("device=nobody-here&from=2026-11-02", 404, "no such device: nobody-here"),
        ("location=Attic&from=2026-11-02", 404, "no devices at location 'Attic'"),
        ("device=cold-room&from=2026-11-09&to=2026-11-02", 400, "from is after to"),
        ("device=cold-room&from=2026-11-02&tz=Mars/Olympus", 400, "is no time zone"),
        ("device=cold-room&from=2-11-2026", 400, "a date as YYYY-MM-DD"),
        ("from=2026-11-02", 400, "say which devices"),
        ("device=cold-room&from=2024-01-01&to=2026-11-02", 400, "at most 366 days"),
    ],
)
def test_reports_that_cannot_be_made_say_why_and_never_look_clean(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str, query: str, status: int, message: str
) -> None:
    bridge = start_bridge()
    mqtt_client.publish(f"{prefix}/cold-room/reading", {"temperature": 4.0})
    wait_until(lambda: bridge.get("/api/devices?device=cold-room"), 20, "the device known to the bridge")
    for path in ("/api/report", "/api/report.csv"):
        answer = requests.get(f"{bridge.url}{path}?{query}", timeout=30)
        assert answer.status_code == status and message in answer.json()["error"], answer.text
    page = requests.get(f"{bridge.url}/report?{query}", timeout=30)
    assert page.status_code == status and message.replace("'", "&#39;") in page.text


def test_the_daily_report_arrives_by_e_mail_with_its_pdf_and_only_once(
    start_bridge: Callable[..., BridgeProcess], influx: InfluxV1, mqtt_client: Mqtt, prefix: str
) -> None:
    """A real SMTP server (aiosmtpd): yesterday's report, due at 00:00, is sent when the bridge
    starts; a restart sends it no second time."""
    today = datetime.now(ZONE).date()
    yesterday = today - timedelta(days=1)
    start = local_midnight_us(yesterday)
    minutes = (local_midnight_us(today) - start) // (60 * 10**6)
    rng = random.Random(3)
    points = [
        Point(start + i * 60 * 10**6, i, round(4 + rng.gauss(0, 0.3), 2), 60.0) for i in range(minutes) if i != 100
    ]
    influx.write(
        [to_line(Reading("freezer", p.ts_us, {"temperature": p.temperature}, p.seq), "environment") for p in points]
    )
    mailbox = Mailbox()
    settings = {
        "SENSORPIPE_TIMEZONE": "Europe/Berlin",
        "SENSORPIPE_SITE_NAME": "Vaccine fridge",
        "SENSORPIPE_REPORT_DAILY": "00:00",
        "SENSORPIPE_REPORT_NOTIFY": mailbox.url,
    }
    try:
        bridge = start_bridge(**settings)
        wait_until(lambda: mailbox.messages, 60, "the daily report's e-mail")
        _, recipients, content = mailbox.messages[0]
        assert recipients == ["coldroom@lab.example"]
        mail = email.message_from_string(content)
        assert mail["Subject"] == f"Vaccine fridge: report {yesterday.isoformat()}"
        [pdf] = [part.get_payload(decode=True) for part in mail.walk() if part.get_content_type() == "application/pdf"]
        assert isinstance(pdf, bytes) and pdf.startswith(b"%PDF")
        text = " ".join(
            subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True, check=True)
            .stdout.decode()
            .split()
        )
        values = [p.temperature for p in points]
        low, high = min(values), max(values)
        mean = sum(values) / len(values)
        assert f"{yesterday.isoformat()} {low:.2f} at " in text and f"{high:.2f} at " in text
        assert f"{mean:.2f} {len(points)}" in text
        assert "readings taken but never stored (their seq numbers never arrived), 1 reading" in text
        body = next(p for p in mail.walk() if p.get_content_type() == "text/plain").get_payload(decode=True)
        assert isinstance(body, bytes)
        assert (
            f"freezer: {len(points)} readings stored, 1 never stored, 1 gaps, 0 readings past an alert level"
            in body.decode()
        )

        bridge.stop()
        again = start_bridge(**settings)
        wait_until(lambda: "was sent already" in again.log(), 30, "the second bridge finding it sent")
        assert len(mailbox.messages) == 1
    finally:
        mailbox.controller.stop()


@pytest.mark.parametrize(
    ("setting", "now", "period"),
    [
        ("07:00", datetime(2026, 12, 2, 6, 59), ("2026-11-30", "2026-11-30")),
        ("07:00", datetime(2026, 12, 2, 7, 0), ("2026-12-01", "2026-12-01")),
        ("mon 07:00", datetime(2026, 12, 2, 10, 0), ("2026-11-23", "2026-11-29")),
        ("mon 07:00", datetime(2026, 11, 30, 6, 0), ("2026-11-16", "2026-11-22")),
        ("mon 07:00", datetime(2026, 11, 30, 7, 0), ("2026-11-23", "2026-11-29")),
        ("sun 23:30", datetime(2026, 11, 29, 23, 45), ("2026-11-16", "2026-11-22")),
        ("sun 23:30", datetime(2026, 11, 30, 0, 15), ("2026-11-16", "2026-11-22")),
    ],
)
def test_which_report_is_due(setting: str, now: datetime, period: tuple[str, str]) -> None:
    schedule = parse_weekly(setting) if " " in setting else parse_daily(setting)
    assert schedule is not None
    first, last = schedule.due(now)
    assert (first.isoformat(), last.isoformat()) == period
    assert first.weekday() == 0 or schedule.kind == "daily"


def test_without_an_interval_the_rollups_still_find_every_gap(
    influx: InfluxV1, week: tuple[list[Point], dict[str, Any]], tmp_path: Path
) -> None:
    """No health heard, so no interval: the hours' usual count stands in for it."""
    points, _ = week
    with (tmp_path / "rebuild.log").open("w") as out:
        Rebuild(influx, "environment", tmp_path / "rebuild.json", out).run(None, restart=True)
    starts = [local_midnight_us(FIRST_DAY + timedelta(days=d)) for d in range(DAYS)]
    end = local_midnight_us(FIRST_DAY + timedelta(days=DAYS))
    report = ReportReader(influx, "environment", True).device("cold-room", starts, end, None)
    assert report.expected is None and report.missing_seq == 20
    assert [(g.start_ms, g.end_ms, g.cause) for g in report.gaps] == [
        (start, end, cause) for start, end, cause, _ in reference_gaps(points)
    ]


def test_gaps_say_what_the_device_said_then(
    start_bridge: Callable[..., BridgeProcess], run_publisher: Callable[..., Any], influx: InfluxV1
) -> None:
    """Real publishers and bridge: a publisher that stops and starts again leaves a gap with
    its status going offline and online in it (nothing lost: seq goes on); one whose sensor
    fails most reads leaves gaps with the failed reads its health counted."""
    bridge = start_bridge()
    first = run_publisher("shed", SENSORPIPE_INTERVAL="0.2", SENSORPIPE_COUNT="10", SENSORPIPE_HEALTH_INTERVAL="0.5")
    assert first.process.wait(60) == 0, first.log()
    wait_until(lambda: bridge.get("/api/devices?device=shed")[0]["online"] is False, 20, "the status offline")
    # Down for longer than three intervals: a gap, whatever the machine's speed.
    last_seen = bridge.get("/api/devices?device=shed")[0]["last_seen"]
    wait_until(lambda: time.time() * 1000 - last_seen > 2000, 10, "two seconds since its last reading")
    again = run_publisher(
        "shed",
        SENSORPIPE_INTERVAL="0.2",
        SENSORPIPE_COUNT="10",
        SENSORPIPE_HEALTH_INTERVAL="0.5",
        SENSORPIPE_SIM_FAIL_RATE="0.7",
    )
    assert again.process.wait(120) == 0, again.log()

    def report() -> dict[str, Any]:
        [device] = requests.get(f"{bridge.url}/api/report?device=shed&tz=UTC", timeout=30).json()["devices"]
        assert isinstance(device, dict)
        return device

    def between_readings(gaps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Not the range's ends (none_stored): the end, from the last reading to now, may hold
        # the failed reads the publisher's last health counted after its last reading.
        return [gap for gap in gaps if gap["cause"] != "none_stored"]

    def explained() -> bool:
        whats = [{event["what"] for event in gap["events"]} for gap in between_readings(report()["gaps"])]
        return any(what >= {"offline", "online"} for what in whats) and any("read_failures" in w for w in whats)

    wait_until(explained, 30, "the gaps explained by the device's status and health")
    gaps = between_readings(report()["gaps"])
    restart = next(gap for gap in gaps if {e["what"] for e in gap["events"]} >= {"offline", "online"})
    assert restart["cause"] == "not_taken"
    failing = [gap for gap in gaps if any(e["what"] == "read_failures" for e in gap["events"])]
    assert all(gap["cause"] == "not_taken" for gap in failing), gaps
    assert all(e["count"] > 0 for gap in failing for e in gap["events"] if e["what"] == "read_failures")
    page = requests.get(f"{bridge.url}/report?device=shed&tz=UTC", timeout=30).text
    assert "went offline" in page and "failed reads" in page
