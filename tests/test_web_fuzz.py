"""Whatever a person or a program sends the web API, the answer is data or a JSON error with
the reason: never a 500, never a traceback in the bridge's log. Hypothesis writes the
queries and bodies, against a real bridge with a device that has readings, so the valid
paths (a report as JSON, CSV and PDF) are taken too.

Found by it, and kept below as examples: `tz=Europe` (a folder of zones) and a 400-digit
zone were a 500 (ZoneInfo raises OSError for them); a report of the year 700 was InfluxDB's
500 (times before 1677); a method an /api/ route does not take answered with an HTML page.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import BridgeProcess, Mqtt
from tests.waiting import wait_until

TODAY = date.today()
weird = st.text(max_size=30) | st.sampled_from(["", "0", "-1", "1e309", "nan", "9" * 400, "\x00", "Europe", "../x"])
QUERY_VALUES: dict[str, st.SearchStrategy[str]] = {
    "device": st.sampled_from(["cold-room", "ghost"]) | weird,
    "metric": st.sampled_from(["temperature", "humidity"]) | weird,
    "since": st.sampled_from(["1h", "7d", "365d", "0s", "99999999d", "-1h"]) | weird,
    "points": st.integers(-5, 100_000).map(str) | weird,
    "from": st.integers(-400, 3).map(lambda d: str(TODAY + timedelta(days=d))) | st.dates().map(str) | weird,
    "to": st.integers(-400, 3).map(lambda d: str(TODAY + timedelta(days=d))) | st.dates().map(str) | weird,
    "tz": st.sampled_from(["UTC", "Europe/Lisbon", "Pacific/Kiritimati", "America/St_Johns", "Factory"]) | weird,
    "location": st.just("Lab") | weird,
    "all": st.just("1") | weird,
}
queries = st.lists(
    st.sampled_from(sorted(QUERY_VALUES)).flatmap(lambda key: st.tuples(st.just(key), QUERY_VALUES[key])), max_size=5
)
READ_ROUTES = ["/api/history", "/api/report", "/api/report.csv", "/api/report.pdf", "/report", "/api/alerts/history"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["10m", "0s", "-1m", "9999999999d", "cold-*", "*", "temperature", "critical", "a" * 100])
)
rule_keys = st.sampled_from(
    ["id", "devices", "metric", "above", "below", "no_data", "for", "clear", "repeat", "severity", "by", "comment"]
)
bodies = st.dictionaries(rule_keys, scalars | st.lists(scalars, max_size=3), max_size=8) | st.lists(scalars) | scalars
WRITE_ROUTES = [
    "/api/rules",
    "/api/rules/x",
    "/api/rules/%ED%A0%80",
    "/api/alerts/warm:cold-room/ack",
    "/api/alerts/x/ack",
]


def _check(answer: requests.Response, what: str) -> None:
    assert answer.status_code < 500, f"{what}: {answer.status_code} {answer.text[:300]}"
    if answer.status_code >= 400 and urllib.parse.urlsplit(answer.url).path.startswith("/api/"):
        assert "error" in answer.json(), f"{what}: {answer.text[:300]}"
    if answer.status_code == 200 and answer.url.split("?")[0].endswith(".pdf"):
        assert answer.content.startswith(b"%PDF"), what


def test_any_query_is_answered_with_data_or_a_reason(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str
) -> None:
    bridge = start_bridge()
    for seq in range(5):
        mqtt_client.publish(f"{prefix}/cold-room/reading", {"temperature": 4.0 + seq, "seq": seq, "location": "Lab"})
    wait_until(lambda: bridge.get("/api/devices"), 20, "the device known")

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(route=st.sampled_from(READ_ROUTES), query=queries)
    @example(route="/api/report.csv", query=[("device", "cold-room"), ("tz", "Europe")])
    @example(route="/api/report", query=[("device", "cold-room"), ("tz", "9" * 400)])
    @example(route="/api/report.csv", query=[("location", "Lab"), ("to", "0700-11-20")])
    @example(route="/api/report.pdf", query=[("device", "cold-room"), ("tz", "Pacific/Kiritimati")])
    def read(route: str, query: list[tuple[str, str]]) -> None:
        encoded = urllib.parse.urlencode([(key, value.encode("utf-8", "surrogatepass")) for key, value in query])
        _check(requests.get(f"{bridge.url}{route}?{encoded}", timeout=120), f"GET {route}?{encoded}")

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(method=st.sampled_from(["POST", "PUT", "DELETE"]), route=st.sampled_from(WRITE_ROUTES), body=bodies)
    @example(method="PUT", route="/api/rules", body={})
    def write(method: str, route: str, body: Any) -> None:
        data = json.dumps(body).encode("utf-8", "surrogatepass")
        answer = requests.request(
            method, bridge.url + route, data=data, headers={"Content-Type": "application/json"}, timeout=60
        )
        _check(answer, f"{method} {route} {data[:200]!r}")

    read()
    write()
    assert "Traceback" not in bridge.log(), bridge.log()[-3000:]
