"""The InfluxDB 2.x/3.x path, through influxdb-client.

No InfluxDB 2.x or 3.x server can run on these machines, so these tests point the real
bridge at a local HTTP server that answers like one (`/ping` with a 2.x version, 204 to
writes) and records exactly what influxdb-client sends. The same line protocol is then
written to the real InfluxDB 1.6.7 and read back, so the body is known to be right. With
`forward_to`, the recorder passes writes (bucket as database) and the v1-compatible
`/query` (which 2.x answers for a bucket with a DBRP mapping) on to the real 1.6.7, so the
dashboard's reads on "2.x" answer what was written.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from bridge.influx import InfluxV1
from common.reading import format_ts, now_us
from tests.conftest import BridgeProcess, Mqtt, points
from tests.waiting import wait_until


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


class FakeInflux2(ThreadingHTTPServer):
    """Answers like InfluxDB 2.7: `/ping` 204 with its version, writes 204 (or `write_status`)."""

    def __init__(self, forward_to: str | None = None, database: str | None = None) -> None:
        """`forward_to`: a real InfluxDB 1.x that writes and queries go on to, into
        `database` (default: the bucket's name) whatever the bucket asked for."""
        self.requests: list[Recorded] = []
        self.write_status = 204
        self.forward_to = forward_to
        self.database = database
        super().__init__(("127.0.0.1", 0), FakeHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/api/v2/write" and r.body]


class FakeHandler(BaseHTTPRequestHandler):
    server: FakeInflux2
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def _answer(self) -> None:
        parts = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append(
            Recorded(self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()), body)
        )
        if parts.path == "/ping":
            self._send(204, b"", {"X-Influxdb-Version": "v2.7.10"})
        elif parts.path == "/api/v2/write":
            status = self.server.write_status
            if status == 204 and self.server.forward_to:
                params = parse_qs(parts.query)
                precision = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}[params.get("precision", ["ns"])[0]]
                forwarded = requests.post(
                    f"{self.server.forward_to}/write",
                    params={"db": self.server.database or params["bucket"][0], "precision": precision},
                    data=body,
                    timeout=30,
                )
                status = forwarded.status_code
            error = json.dumps({"code": "invalid", "message": "partial write: field type conflict"}).encode()
            self._send(status, b"" if status == 204 else error, {"Content-Type": "application/json"})
        elif parts.path == "/query" and self.server.forward_to:  # the v1 compatibility API
            query = {name: values[0] for name, values in parse_qs(parts.query).items()}
            if self.server.database:
                query["db"] = self.server.database
            url = f"{self.server.forward_to}/query"
            answer = requests.request(self.command, url, params=query, data=body, timeout=30)
            self._send(answer.status_code, answer.content, {"Content-Type": "application/json"})
        elif parts.path == "/query":  # nothing stored here
            self._send(200, b'{"results":[{"statement_id":0}]}', {"Content-Type": "application/json"})
        else:
            self._send(404, b"", {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer  # noqa: N815  # the names http.server calls


@pytest.fixture
def fake_influx2() -> Iterator[FakeInflux2]:
    server = FakeInflux2()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_2x_server_is_written_through_influxdb_client_and_the_lines_are_right(
    start_bridge: Callable[..., BridgeProcess],
    fake_influx2: FakeInflux2,
    mqtt_client: Mqtt,
    influx: InfluxV1,
    prefix: str,
) -> None:
    bridge = start_bridge(
        SENSORPIPE_INFLUX_URL=fake_influx2.url,
        SENSORPIPE_INFLUX_DB="sensors",
        SENSORPIPE_INFLUX_TOKEN="s3cret-token",
        SENSORPIPE_INFLUX_ORG="lab",
        SENSORPIPE_RAW_RETENTION="400d",  # 1.x only: said in the log, and no rollups written
    )
    readings = [
        {"ts": "2026-11-25T10:00:00.000001Z", "seq": 1, "location": "Cold room, shelf=2", "temperature": 4.5},
        {"ts": "2026-11-25T10:00:02.5Z", "seq": 2, "temperature": 4.25, "humidity": 81},
    ]
    for reading in readings:
        mqtt_client.publish(f"{prefix}/cold-1/reading", reading)
    wait_until(lambda: sum(len(w.body.splitlines()) for w in fake_influx2.writes()) == 2, what="two lines written")

    for write in fake_influx2.writes():
        assert write.method == "POST"
        assert write.params == {"org": ["lab"], "bucket": ["sensors"], "precision": ["us"]}
        assert write.headers["Authorization"] == "Token s3cret-token"
    body = b"\n".join(w.body for w in fake_influx2.writes()).decode()
    assert body.splitlines() == [
        "environment,device=cold-1,location=Cold\\ room\\,\\ shelf\\=2 temperature=4.5,seq=1i 1795600800000001",
        "environment,device=cold-1 humidity=81.0,temperature=4.25,seq=2i 1795600802500000",
    ]
    assert "writing with influxdb-client" in bridge.log()
    assert "SENSORPIPE_RAW_RETENTION is for InfluxDB 1.x" in bridge.log()
    assert "s3cret-token" not in bridge.log()

    # The very same bytes, written to the real InfluxDB 1.6.7, come back as published.
    influx.write(body.splitlines())
    stored = points(influx)
    assert [(p["time"], p["location"], p["temperature"], p["seq"]) for p in stored] == [
        (1795600800000, "Cold room, shelf=2", 4.5, 1),
        (1795600802500, None, 4.25, 2),
    ]


def test_a_write_the_2x_server_refuses_is_listed_and_a_5xx_is_retried(
    start_bridge: Callable[..., BridgeProcess], fake_influx2: FakeInflux2, mqtt_client: Mqtt, prefix: str
) -> None:
    bridge = start_bridge(SENSORPIPE_INFLUX_URL=fake_influx2.url, SENSORPIPE_INFLUX_API="v2")
    fake_influx2.write_status = 400
    mqtt_client.publish(f"{prefix}/desk/reading", {"temperature": 1.0})
    rejected = wait_until(lambda: bridge.get("/api/rejections")["latest"], what="the refused reading listed")
    assert rejected[0]["reason"] == "influx_refused" and "field type conflict" in rejected[0]["detail"]

    fake_influx2.write_status = 503
    mqtt_client.publish(f"{prefix}/desk/reading", {"temperature": 2.0})
    wait_until(lambda: len(fake_influx2.writes()) >= 3, what="the write tried again")
    assert len(bridge.get("/api/rejections")["latest"]) == 1  # a 503 is not a rejection
    fake_influx2.write_status = 204
    wait_until(lambda: bridge.get("/api/devices") and bridge.get("/api/devices")[0]["latest"], what="stored")
    assert bridge.get("/api/devices")[0]["latest"] == {"temperature": 2.0}


def test_history_on_2x_is_read_through_the_v1_compatible_query_with_the_token(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, influx: InfluxV1, prefix: str
) -> None:
    """The dashboard's reads on "2.x": InfluxQL through `/query` with the token, answered
    (through the recorder) by the real InfluxDB 1.6.7 the writes went to."""
    recorder = FakeInflux2(forward_to=influx.target.url)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    try:
        bridge = start_bridge(
            SENSORPIPE_INFLUX_URL=recorder.url,
            SENSORPIPE_INFLUX_API="v2",
            SENSORPIPE_INFLUX_DB=influx.target.database,
            SENSORPIPE_INFLUX_TOKEN="tok-2x",
            SENSORPIPE_INFLUX_ORG="lab",
        )
        start = now_us() - 60_000_000
        for k in range(3):
            mqtt_client.publish(
                f"{prefix}/cold-2/reading", {"ts": format_ts(start + k * 1_000_017), "temperature": 4.0 + k}
            )
        wait_until(lambda: len(points(influx)) == 3, what="three readings in the real InfluxDB, through the recorder")
        history = bridge.get("/api/history?device=cold-2&metric=temperature&since=1h")
        assert history["points"] == [[(start + k * 1_000_017) / 1000, 4.0 + k] for k in range(3)]
        assert history["source"] == "raw"  # no rollups on 2.x
        queries = [r for r in recorder.requests if r.path == "/query"]
        assert queries and all(r.headers.get("Authorization") == "Token tok-2x" for r in queries)
        assert not [r for r in recorder.requests if "rollups" in r.path + str(r.params)]
    finally:
        recorder.shutdown()
        recorder.server_close()
