"""InfluxDB 1.x with authentication on: `SENSORPIPE_INFLUX_TOKEN=user:password`, for real
(a private InfluxDB 1.6.7 with `auth-enabled`, its admin made as the first user)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from bridge.influx import InfluxTarget, InfluxV1
from devstack.servers import Server, influxdb, wait_influx_ready
from tests.conftest import BridgeProcess, Mqtt
from tests.waiting import wait_until

USER, PASSWORD = "sensorpipe", "s3cret-influx-pass"


@pytest.fixture
def secured_influx(tmp_path: Path) -> Iterator[Server]:
    with influxdb(tmp_path / "influxdb", auth=True).serving() as server:
        wait_influx_ready(server.port)
        url = f"http://127.0.0.1:{server.port}"
        # With no user yet, InfluxDB takes exactly this statement without credentials.
        created = requests.post(
            url + "/query", data={"q": f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES"}, timeout=10
        )
        assert created.status_code == 200 and "error" not in created.text, created.text
        assert requests.get(url + "/query", params={"q": "SHOW DATABASES"}, timeout=10).status_code == 401
        yield server


def test_user_and_password_reach_influxdb_1x_and_a_wrong_one_is_said(
    start_bridge: Callable[..., BridgeProcess], secured_influx: Server, mqtt_client: Mqtt, prefix: str
) -> None:
    url = f"http://127.0.0.1:{secured_influx.port}"
    wrong = start_bridge(
        wait=False,
        SENSORPIPE_INFLUX_URL=url,
        SENSORPIPE_INFLUX_DB="sensors",
        SENSORPIPE_INFLUX_TOKEN=f"{USER}:not-it",
        SENSORPIPE_MQTT_CLIENT_ID=f"wrong-{prefix}",
    )

    def health() -> tuple[int, str] | None:
        try:
            answer = requests.get(wrong.url + "/healthz", timeout=5)
        except requests.ConnectionError:
            return None
        return answer.status_code, answer.text

    wait_until(health, 30, "the bridge with the wrong password up")
    # It says so at start (reading the known devices is refused), and /healthz once a write is.
    wait_until(lambda: "authorization failed" in wrong.log(), 30, "the refusal in its log")
    mqtt_client.publish(f"{prefix}/vault/reading", {"temperature": -18.0})
    _, text = wait_until(lambda: (h := health()) and h[0] == 503 and h, 30, "/healthz to say 503")
    assert "InfluxDB" in text and "authorization failed" in text
    assert "not-it" not in wrong.log()
    wrong.stop()

    bridge = start_bridge(
        SENSORPIPE_INFLUX_URL=url, SENSORPIPE_INFLUX_DB="sensors", SENSORPIPE_INFLUX_TOKEN=f"{USER}:{PASSWORD}"
    )
    mqtt_client.publish(f"{prefix}/vault/reading", {"temperature": -18.5})
    mqtt_client.publish(f"{prefix}/vault/reading", {"temperature": -18.25})
    reader = InfluxV1(InfluxTarget(url, "sensors", f"{USER}:{PASSWORD}"))
    try:
        wait_until(
            lambda: (
                [row[1] for s in reader.query("SELECT temperature FROM environment") for row in s["values"]]
                == [-18.5, -18.25]
            ),
            30,
            "both readings stored with the account",
        )
    finally:
        reader.close()
    assert bridge.get("/api/history?device=vault&metric=temperature&since=1h")["points"][-1][1] == -18.25
    assert PASSWORD not in bridge.log()
