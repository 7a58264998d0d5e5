"""Rollups on a real InfluxDB 1.6.7: they always equal what a query of the raw points gives.

The store (bridge/store.py) with its Rollups (bridge/rollups.py) is driven in-process against
the private InfluxDB; the kill -9 test runs the real bridge.
"""

from __future__ import annotations

import itertools
import math
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from bridge.history import HistoryReader
from bridge.influx import InfluxTarget, InfluxV1, quote_ident
from bridge.lineprotocol import to_line
from bridge.rebuild import DAY_US
from bridge.rollups import HOUR_US, MINUTE_US, Rollups, rollup_measurement
from bridge.store import InfluxStore, StoreMetrics
from common.reading import Reading, format_ts, now_us
from devstack.servers import influxdb, wait_influx_ready
from tests.conftest import ROOT, BridgeProcess, Mqtt
from tests.test_dashboard_pages import chart_points
from tests.waiting import wait_until

T0 = 1_800_000_000 * 1_000_000 // HOUR_US * HOUR_US  # on the hour, in 2027
counter = itertools.count()


def store_with_rollups(influx: InfluxV1, measurement: str, exclusive: bool = True) -> InfluxStore[int]:
    rollups = Rollups(influx, measurement, exclusive)
    return InfluxStore(influx, StoreMetrics(CollectorRegistry()), rollups=rollups)


def write(store: InfluxStore[int], measurement: str, readings: list[Reading]) -> None:
    for n, reading in enumerate(readings):
        store.add(to_line(reading, measurement).encode(), reading, n)
    done = store.flush(threading.Event())
    assert not done.refused


def rows(influx: InfluxV1, query: str) -> dict[tuple[str, ...], dict[int, tuple[Any, ...]]]:
    """(tags as sorted pairs) -> bucket time -> the row's values, for comparing two queries."""
    found: dict[tuple[str, ...], dict[int, tuple[Any, ...]]] = {}
    for serie in influx.query(query, epoch="u"):
        tags = tuple(f"{k}={v}" for k, v in sorted(serie.get("tags", {}).items()) if v)
        for row in serie["values"]:
            if row[1] is not None:
                found.setdefault(tags, {})[row[0]] = tuple(row[1:])
    return found


def assert_rollups_equal_raw(influx: InfluxV1, measurement: str, metrics: list[str], around_us: int = T0) -> None:
    """Each rollup as InfluxDB computes the same aggregate of the raw points (within two days
    of `around_us`)."""
    raw = quote_ident(measurement)
    for source, bucket in (("1m", "1m"), ("1h", "1h")):
        rolled = rollup_measurement(measurement, source)
        for metric in metrics:
            m = quote_ident(metric)
            expected = rows(
                influx,
                f"SELECT count({m}), sum({m}), min({m}), max({m}) FROM {raw} "
                f"WHERE time >= {around_us - 48 * HOUR_US}000 AND time < {around_us + 48 * HOUR_US}000 "
                f"GROUP BY time({bucket}), * fill(none)",
            )
            kept = rows(
                influx,
                f'SELECT "{metric}_count", "{metric}_sum", "{metric}_min", "{metric}_max", "{metric}_mean" '
                f"FROM {rolled} GROUP BY *",
            )
            assert set(kept) == set(expected), (source, metric)
            for tags, buckets in expected.items():
                assert set(kept[tags]) == set(buckets), (source, metric, tags)
                for at, (count, total, low, high) in buckets.items():
                    k_count, k_total, k_low, k_high, k_mean = kept[tags][at]
                    assert (k_count, k_low, k_high) == (count, low, high), (source, metric, tags, at)
                    assert math.isclose(k_total, total, rel_tol=1e-12, abs_tol=1e-9)
                    assert math.isclose(k_mean, total / count, rel_tol=1e-12, abs_tol=1e-9)


readings_strategy = st.lists(
    st.tuples(
        st.sampled_from([("cold", None, None), ("cold", "dht22", None), ("shed", None, "back room")]),
        # A second within three hours, often one of a few at the edges of minutes and hours,
        # so the same time comes again with another value (a replaced point).
        st.one_of(st.integers(0, 3 * HOUR_US // 1_000_000 - 1), st.sampled_from([0, 1, 59, 60, 61, 3599, 3600])),
        st.sampled_from(["temperature", "humidity"]),
        st.floats(-40, 80, allow_nan=False, width=32),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(readings_strategy, min_size=1, max_size=5),
    exclusive=st.booleans(),
)
def test_rollups_equal_a_recompute_from_raw(
    influx: InfluxV1, batches: list[list[tuple[tuple[str, str | None, str | None], int, str, float]]], exclusive: bool
) -> None:
    """Random batches in any order: late readings land in old buckets, the same time again
    overwrites a point (a redelivery), a second metric merges into a point."""
    measurement = f"m{next(counter)}"
    store = store_with_rollups(influx, measurement, exclusive)
    metrics = set()
    for batch in batches:
        readings = []
        for (device, sensor, location), second, metric, value in batch:
            readings.append(Reading(device, T0 + second * 1_000_000, {metric: float(value)}, None, sensor, location))
            metrics.add(metric)
        write(store, measurement, readings)
    assert_rollups_equal_raw(influx, measurement, sorted(metrics))


def test_a_remembered_bucket_and_a_bucket_read_back_give_the_same(influx: InfluxV1) -> None:
    """A bridge that restarted (nothing remembered) goes on in the middle of a minute."""
    readings = [Reading("cold", T0 + s * 1_000_000, {"temperature": 4.0 + s / 100}) for s in range(0, 150, 2)]
    write(store_with_rollups(influx, "a"), "a", readings[:20])
    write(store_with_rollups(influx, "a"), "a", readings[20:40])  # a new store: reads back
    store = store_with_rollups(influx, "a")
    write(store, "a", readings[40:60])
    write(store, "a", readings[60:])  # remembered
    assert_rollups_equal_raw(influx, "a", ["temperature"])
    count = influx.query('SELECT "temperature_count" FROM rollups.a_1h')[0]["values"][0][1]
    assert count == len(readings)


def test_a_refused_reading_is_not_in_the_rollups(influx: InfluxV1) -> None:
    """InfluxDB refuses a point whose field changes type (here: humidity written as an
    integer before): the batch is bisected, and the rollups count the readings it took only."""
    influx.write([f"r,device=cold humidity=40i {T0 + 1_000_000}"])
    store = store_with_rollups(influx, "r")
    good = Reading("cold", T0 + 2_000_000, {"temperature": 5.0})
    bad = Reading("cold", T0 + 3_000_000, {"humidity": 41.0})
    for n, reading in enumerate([good, bad]):
        store.add(to_line(reading, "r").encode(), reading, n)
    done = store.flush(threading.Event())
    assert [p.token for p in done.stored] == [0] and [p.token for p, _ in done.refused] == [1]
    (serie,) = influx.query("SELECT * FROM rollups.r_1m")
    row = dict(zip(serie["columns"], serie["values"][0], strict=True))
    # The integer humidity stored before counts (it is a raw point); the refused 41 does not.
    assert (row["temperature_count"], row["humidity_count"], row["humidity_max"]) == (1, 1, 40)


def test_rollups_survive_kill_9_of_the_bridge_mid_stream(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str, influx: InfluxV1
) -> None:
    """Killed while batches are being written: what it had not acknowledged comes again and
    its buckets are computed again; the rollups end equal to the raw points."""
    start = now_us() // MINUTE_US * MINUTE_US - 30 * MINUTE_US
    bridge = start_bridge(SENSORPIPE_WRITE_INTERVAL_MS="50")
    sent = 0
    for round_ in range(3):
        for i in range(400):
            n = round_ * 400 + i
            ts = format_ts(start + n * 1_500_000)
            mqtt_client.publish(f"{prefix}/cold/reading", {"ts": ts, "seq": n, "temperature": 3.0 + (n % 17) / 10})
            sent += 1
        bridge.stop(signal.SIGKILL)
        bridge = start_bridge(SENSORPIPE_WRITE_INTERVAL_MS="50")

    def stored() -> int:
        counted = influx.query('SELECT count("temperature") FROM environment')
        return int(counted[0]["values"][0][1]) if counted else 0

    wait_until(lambda: stored() == sent, 60, "every reading stored")
    # The last batch's rollups went in the same request as its readings.
    assert_rollups_equal_raw(influx, "environment", ["temperature"], around_us=start)


@pytest.mark.parametrize("exclusive", [True, False])
def test_a_late_reading_recomputes_its_old_bucket(influx: InfluxV1, exclusive: bool) -> None:
    store = store_with_rollups(influx, "late", exclusive)
    write(store, "late", [Reading("cold", T0 + s * 1_000_000, {"temperature": 5.0}) for s in range(0, 7200, 60)])
    write(store, "late", [Reading("cold", T0 + 30 * 1_000_000, {"temperature": 11.0})])  # hours late
    (serie,) = influx.query(f'SELECT "temperature_max", "temperature_count" FROM rollups.late_1m WHERE time = {T0}000')
    assert serie["values"][0][1:] == [11.0, 2]
    (serie,) = influx.query(f'SELECT "temperature_max", "temperature_count" FROM rollups.late_1h WHERE time = {T0}000')
    assert serie["values"][0][1:] == [11.0, 61]
    assert_rollups_equal_raw(influx, "late", ["temperature"])


@pytest.mark.parametrize(("minutes", "source"), [(48 * 60, "1h"), (12 * 60, "1m"), (10, "raw")])
def test_history_from_each_source_gives_what_the_raw_points_give(influx: InfluxV1, minutes: int, source: str) -> None:
    """Two days of readings every 50 s or so, with a gap of seven hours: a range asked for in
    20 points comes from the coarsest source that still gives 20, and each bucket's mean, min
    and max are what InfluxDB computes from the raw points."""
    store = store_with_rollups(influx, "environment")
    readings, ts = [], T0
    while ts < T0 + 48 * HOUR_US:
        if not T0 + 20 * HOUR_US <= ts < T0 + 27 * HOUR_US:
            value = 4.0 + math.sin(ts / 7e9) * 3 + (ts // 1_000_000 % 13) / 10
            readings.append(Reading("cold", ts, {"temperature": value}))
        ts += 50_000_000 + (ts // 1_000_000 % 7) * 1_000_000
    for start in range(0, len(readings), 500):
        write(store, "environment", readings[start : start + 500])
    reader = HistoryReader(influx, "environment", rollups=True)
    start_us, end_us = T0, T0 + minutes * MINUTE_US - 1
    got = reader.series("cold", "temperature", start_us, end_us, 20)
    assert got.source == source and len(got.points) <= 20
    if source == "raw":  # few enough to come as stored, as before the rollups
        assert [p[0] for p in got.points] == [r.ts_ms for r in readings if start_us <= r.ts_us <= end_us]
        return
    expected = influx.query(
        f'SELECT mean("temperature"), min("temperature"), max("temperature") FROM environment '
        f"WHERE \"device\" = 'cold' AND time >= {start_us}000 AND time <= {end_us}000 "
        f"GROUP BY time({got.interval_ms}ms) fill(null)"
    )[0]["values"]
    expected_rows = [[row[0] + got.interval_ms / 2, *row[1:]] for row in expected][-20:]
    assert [row[0] for row in got.points] == [row[0] for row in expected_rows]
    if source == "1h":
        assert any(row[1] is None for row in got.points)  # the gap stays a gap
    for mine, theirs in zip(got.points, expected_rows, strict=True):
        assert (mine[2], mine[3]) == (theirs[2], theirs[3])  # min and max exact
        assert (mine[1] is None) == (theirs[1] is None)
        if mine[1] is not None:
            assert math.isclose(mine[1], theirs[1], rel_tol=1e-12)


def test_a_long_range_of_few_readings_comes_as_stored_not_from_the_rollups(influx: InfluxV1) -> None:
    """A reading every 6 h for 10 days, asked for in 50 points: the 40 readings as stored
    (buckets of 4.8 h would come from the hourly rollups, and hide each reading's time)."""
    store = store_with_rollups(influx, "environment")
    readings = [Reading("hut", T0 + k * 6 * HOUR_US + 17, {"temperature": 3.0 + k}) for k in range(40)]
    write(store, "environment", readings)
    got = HistoryReader(influx, "environment", rollups=True).series("hut", "temperature", T0, T0 + 240 * HOUR_US, 50)
    assert (got.source, got.interval_ms) == ("raw", 0)
    assert got.points == [[r.ts_ms, r.metrics["temperature"]] for r in readings]


def test_the_device_page_draws_a_year_and_a_month_from_the_rollups_and_zooms_into_detail(
    start_bridge: Callable[..., BridgeProcess], influx: InfluxV1, page: Any
) -> None:
    """Headless Chromium: a device with a reading every 6 h for a year and every 20 minutes
    for the last 30 days (more readings than the chart's pixels in both ranges). A drag
    across a tenth of the year's chart shows that tenth's every reading (about 146), not the
    hundred year buckets it covered; a double-click goes back to the year."""
    store = store_with_rollups(influx, "environment")
    now = now_us()
    readings = [Reading("barn", now - k * 6 * HOUR_US, {"temperature": 10 + math.sin(k / 50) * 8}) for k in range(1460)]
    readings += [Reading("barn", now - k * 20 * 60_000_000 - 1, {"temperature": 12.5}) for k in range(3 * 24 * 30)]
    for first in range(0, len(readings), 500):
        write(store, "environment", readings[first : first + 500])
    bridge = start_bridge()
    temperature = '#charts .chart[data-metric="temperature"]'
    page.goto(bridge.url + "/device/barn?range=365d")
    wait_until(lambda: "hourly rollups" in (page.text_content("#range-note") or ""), 30, "the year, from 1 h rollups")
    assert 800 < chart_points(page, temperature) <= 1200  # about a point per pixel

    box = page.locator(f"{temperature} .u-over").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.45, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.55, y, steps=5)
    page.mouse.up()
    wait_until(lambda: (page.text_content("#range-note") or "") == "Every reading as stored.", 30, "the span, raw")
    start, end = (int(ms) for ms in (page.get_attribute(temperature, "data-window") or "0 0").split())
    assert 0.08 * 365 * 86_400_000 < end - start < 0.12 * 365 * 86_400_000
    shown = [r for r in readings if start * 1000 <= r.ts_us <= end * 1000]
    assert chart_points(page, temperature) == len(shown) and 100 < len(shown) < 200
    page.dblclick(f"{temperature} .u-over")
    wait_until(lambda: "hourly rollups" in (page.text_content("#range-note") or ""), 30, "back to the year")
    assert 800 < chart_points(page, temperature) <= 1200

    page.click('button[data-range="30d"]')
    wait_until(lambda: "minute rollups" in (page.text_content("#range-note") or ""), 30, "30 days, from 1 m rollups")
    assert 800 < chart_points(page, temperature) <= 1200


def test_the_newest_reading_of_every_device_read_through_the_rollups_is_the_same(influx: InfluxV1) -> None:
    """What the bridge learns at start: the same with rollups (one hour read per series) as
    over all time, also for a device whose points all predate the rollups."""
    influx.write([f"environment,device=old temperature=1.5,seq=7i {T0 - 30 * 24 * HOUR_US}"])  # no rollups
    store = store_with_rollups(influx, "environment")
    readings = [Reading("cold", T0 + s * 37_000_000, {"temperature": 4.0 + s % 5}, s) for s in range(600)]
    readings += [Reading("shed", T0 + 3 * HOUR_US, {"humidity": 71.0}, 3, "dht22", "back room")]
    readings += [Reading("two", T0 + HOUR_US, {"temperature": 9.0}, 1, "a")]
    readings += [Reading("two", T0 + 2 * HOUR_US + 5, {"temperature": 9.5}, 2, "b")]  # its newer series
    write(store, "environment", readings)

    def newest(rollups: bool) -> list[Reading]:
        return sorted(HistoryReader(influx, "environment", rollups).latest_per_device(), key=lambda r: r.device)

    assert newest(True) == newest(False)
    assert [(r.device, r.ts_us, r.seq, r.sensor) for r in newest(True)] == [
        ("cold", readings[599].ts_us, 599, None),
        ("old", T0 - 30 * 24 * HOUR_US, 7, None),
        ("shed", T0 + 3 * HOUR_US, 3, "dht22"),
        ("two", T0 + 2 * HOUR_US + 5, 2, "b"),
    ]


def test_the_rebuild_of_an_old_database_gives_what_live_ingest_gives(influx: InfluxV1, tmp_path: Path) -> None:
    """Three days stored by a bridge without rollups (raw lines only), then
    `python -m bridge rollups rebuild`: the same rollups as the store writes live."""
    base = now_us() // DAY_US * DAY_US - 2 * DAY_US
    readings = [
        Reading(
            device,
            base + s * 97_000_000 + n,
            {"temperature": 3.0 + (s * 7 % 23) / 10, "humidity": 50.0 + s % 9},
            s,
            sensor,
        )
        for s in range(2 * 24 * 37)
        for n, (device, sensor) in enumerate([("cold", None), ("shed", "dht22")])
    ]
    influx.write([to_line(r, "old") for r in readings])
    store = store_with_rollups(influx, "live")
    for first in range(0, len(readings), 700):
        write(store, "live", readings[first : first + 700])
    env = {
        "PATH": "/usr/bin:/bin",
        "SENSORPIPE_INFLUX_URL": influx.target.url,
        "SENSORPIPE_INFLUX_DB": influx.target.database,
        "SENSORPIPE_INFLUX_MEASUREMENT": "old",
        "STATE_DIRECTORY": str(tmp_path),
    }
    command = [sys.executable, "-m", "bridge", "rollups", "rebuild"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "[1/3] " in done.stderr and "[3/3] " in done.stderr
    for source in ("1m", "1h"):
        for metric in ("temperature", "humidity"):
            fields = ", ".join(f'"{metric}_{part}"' for part in ("count", "min", "max", "sum"))
            rebuilt = rows(influx, f"SELECT {fields} FROM rollups.old_{source} GROUP BY *")
            live = rows(influx, f"SELECT {fields} FROM rollups.live_{source} GROUP BY *")
            assert rebuilt.keys() == live.keys() and rebuilt, (source, metric)
            for tags, buckets in live.items():
                assert buckets.keys() == rebuilt[tags].keys()
                for at, (count, low, high, total) in buckets.items():
                    assert rebuilt[tags][at][:3] == (count, low, high)
                    assert math.isclose(rebuilt[tags][at][3], total, rel_tol=1e-12)
    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0 and "going on from" in again.stderr  # it remembers where it stopped
    bad = subprocess.run([*command, "--since", "1y"], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "rollups rebuild: --since '1y': a number of days (30d) or a date (2026-01-01)"


def test_raw_readings_past_their_retention_go_and_the_rollups_answer_for_them(tmp_path: Path) -> None:
    """A private InfluxDB that checks retention every second; raw readings kept one hour (the
    shortest InfluxDB allows), written 6 to 5 hours ago into hourly shards."""
    with influxdb(tmp_path / "influxdb", retention_check_s=1).serving() as server:
        wait_influx_ready(server.port)
        influx = InfluxV1(InfluxTarget(f"http://127.0.0.1:{server.port}", "sensors"))
        influx.ensure_database()
        influx.query('ALTER RETENTION POLICY "autogen" ON "sensors" SHARD DURATION 1h', write=True)
        start = now_us() // HOUR_US * HOUR_US - 6 * HOUR_US
        store = store_with_rollups(influx, "environment")
        write(store, "environment", [Reading("cold", start + s * 30_000_000, {"temperature": 4.0}) for s in range(120)])
        assert influx.keep_raw_for(3600) == "autogen"
        policies = {row[0]: row[1] for row in influx.query('SHOW RETENTION POLICIES ON "sensors"')[0]["values"]}
        assert (policies["autogen"], policies["rollups"]) == ("1h0m0s", "0s")  # 0s: for ever

        def raw() -> int:
            counted = influx.query('SELECT count("temperature") FROM environment')
            return int(counted[0]["values"][0][1]) if counted else 0

        wait_until(lambda: raw() == 0, 30, "the raw readings dropped")
        (serie,) = influx.query('SELECT "temperature_count" FROM rollups.environment_1h')
        assert [row[1] for row in serie["values"]] == [120]  # the rollups stay
        got = HistoryReader(influx, "environment", rollups=True).series(
            "cold", "temperature", start, start + HOUR_US, 1000
        )
        assert got.source == "1m" and len([p for p in got.points if p[1] is not None]) == 60
        # A reading older than the retention is refused by InfluxDB, with its reason.
        late = Reading("cold", now_us() - 3 * HOUR_US, {"temperature": 5.0})
        store.add(to_line(late, "environment").encode(), late, 0)
        (refused,) = store.flush(threading.Event()).refused
        assert "retention" in refused[1]


def test_the_bridge_sets_the_raw_retention_it_is_given(
    start_bridge: Callable[..., BridgeProcess], influx: InfluxV1
) -> None:
    bridge = start_bridge(SENSORPIPE_RAW_RETENTION="400d")
    shown = influx.query(f'SHOW RETENTION POLICIES ON "{influx.target.database}"')[0]["values"]
    policies = {row[0]: row[1:3] for row in shown}  # name: duration, shard duration
    assert policies["autogen"] == ["9600h0m0s", "168h0m0s"] and policies["rollups"][0] == "0s"
    assert "raw readings are kept 400 days (retention policy 'autogen'); the rollups for ever" in bridge.log()


def test_values_whose_sum_no_float_holds_keep_an_exact_count_min_and_max(influx: InfluxV1) -> None:
    """Readings near ±1.8e308 are valid (finite); their sum is not: the bucket's rollup then
    has no `_sum` and `_mean`, and is still written, counted and combined into its hour."""
    store = store_with_rollups(influx, "huge")
    big = [Reading("a", T0 + i * 1_000_000, {"p": v}) for i, v in enumerate([1.7e308, 1.7e308, -1.7e308])]
    write(store, "huge", big)
    write(store, "huge", [Reading("a", T0 + 61_000_000, {"p": 2.0})])  # the next minute, same hour
    rows = {}
    for source in ("1m", "1h"):
        (serie,) = influx.query(f"SELECT * FROM {rollup_measurement('huge', source)}")
        rows[source] = [dict(zip(serie["columns"], row, strict=True)) for row in serie["values"]]
    assert [(r["p_count"], r["p_min"], r["p_max"], r.get("p_sum")) for r in rows["1m"]] == [
        (3, -1.7e308, 1.7e308, None),
        (1, 2, 2, 2),
    ]
    ((hour),) = rows["1h"]
    assert (hour["p_count"], hour["p_min"], hour["p_max"], hour.get("p_mean")) == (4, -1.7e308, 1.7e308, None)
    assert store.state.rollups_refused == 0


def test_rollups_influxdb_refuses_show_in_healthz_and_metrics_and_the_readings_are_stored(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str, influx: InfluxV1
) -> None:
    """Someone wrote a text field where the rollups keep a count: InfluxDB refuses them."""
    minute = now_us() // MINUTE_US * MINUTE_US
    influx.write([f'environment_1m,device=cold temperature_count="x" {minute - MINUTE_US}'], rp="rollups")
    bridge = start_bridge()
    mqtt_client.publish(f"{prefix}/cold/reading", {"temperature": 4.5})
    wait_until(lambda: bridge.get("/api/pipeline")["stored"] == 1, what="the reading stored")
    answer = requests.get(bridge.url + "/healthz", timeout=10)
    assert answer.status_code == 503
    assert any(r.startswith("rollups: InfluxDB refused those of 1 batches") for r in answer.json()["reasons"])
    assert "sensorpipe_rollups_refused_total 1.0" in requests.get(bridge.url + "/metrics", timeout=10).text
