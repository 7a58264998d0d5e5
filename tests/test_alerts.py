"""Alerts: rules, the state machine, and real bridges telling a real webhook server.

The end-to-end tests run Mosquitto, InfluxDB, the bridge (and a publisher where a device
must fall silent) as processes, and a local HTTP server as the notification target that
Apprise's `json://` posts to.
"""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import redis
import requests
from paho.mqtt.enums import CallbackAPIVersion

from bridge.alerts.engine import LATE_AFTER_US, Alert, AlertEngine, Change
from bridge.alerts.journal import AlertJournal, Journal
from bridge.alerts.rules import Rule, RuleError, load_rules_file, parse_duration, rule_from_json
from bridge.alerts.shared import Deposed, Lease, RedisJournal
from common.reading import Reading, format_ts, now_us
from tests.conftest import ROOT, BridgeProcess, Mqtt, Program, points, replicas
from tests.mailbox import Mailbox
from tests.waiting import wait_until

S = 1_000_000

# --- rules -------------------------------------------------------------------------------


def test_durations() -> None:
    assert [parse_duration(t) for t in ("0s", "90s", "10m", "1.5h", "2d")] == [0, 90, 600, 5400, 172800]
    for bad in ("10", "10 min", "-1m", "1y", "", 600, "366.1d"):
        with pytest.raises(RuleError):
            parse_duration(bad)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"id": "Warm", "metric": "t", "above": 1}, "rule id 'Warm'"),
        ({"id": "w", "metric": "t"}, "exactly one of above, below, no_data"),
        ({"id": "w", "metric": "t", "above": 1, "below": 0}, "exactly one of"),
        ({"id": "w", "metric": "t", "above": 1, "treshold": 2}, "unknown key 'treshold'"),
        ({"id": "w", "metric": "Temp", "above": 1}, "metric must be"),
        ({"id": "w", "above": 1}, "metric must be"),
        ({"id": "w", "metric": "t", "above": "8"}, "above must be a finite number"),
        ({"id": "w", "metric": "t", "above": True}, "above must be a finite number"),
        ({"id": "w", "metric": "t", "above": 8, "clear": 9}, "clear 9 must be at or below the threshold 8"),
        ({"id": "w", "metric": "t", "below": 2, "clear": 1}, "clear 1 must be at or above the threshold 2"),
        ({"id": "w", "metric": "t", "above": 8, "for": "ten minutes"}, "for must be a number and s, m, h or d"),
        ({"id": "w", "metric": "t", "above": 8, "repeat": "10s"}, "repeat must be at least 1m"),
        ({"id": "w", "metric": "t", "above": 8, "devices": ["a/b"]}, "neither a device id nor a glob"),
        ({"id": "w", "metric": "t", "above": 8, "devices": ["_x"]}, "is not a device id"),
        ({"id": "w", "metric": "t", "above": 8, "devices": []}, "devices must be"),
        ({"id": "w", "metric": "t", "above": 8, "severity": "page"}, "severity must be warning or critical"),
        ({"id": "s", "no_data": "5m", "metric": "t"}, "metric has no meaning for a no_data rule"),
        ({"id": "s", "no_data": "0s"}, "no_data must be at least 1s"),
    ],
)
def test_a_bad_rule_is_refused_naming_it_and_the_key(body: dict[str, object], says: str) -> None:
    with pytest.raises(RuleError) as caught:
        rule_from_json(body)
    assert says in str(caught.value)


def test_rules_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[rule]]\nid = "coldroom-warm"\ndevices = ["sim-*", "coldroom"]\nmetric = "temperature"\n'
        'above = 8.0\nfor = "10m"\nclear = 7.5\nrepeat = "30m"\nseverity = "critical"\n\n'
        '[[rule]]\nid = "silent"\nno_data = "5m"\n'
    )
    warm, silent = load_rules_file(path)
    assert (warm.kind, warm.threshold, warm.for_s, warm.clear, warm.repeat_s) == ("above", 8.0, 600, 7.5, 1800)
    assert warm.provisioned and warm.watches("sim-1") and warm.watches("coldroom") and not warm.watches("lab")
    assert (silent.kind, silent.threshold, silent.devices) == ("no_data", 300, ("*",))
    assert rule_from_json(warm.to_json(), provisioned=True) == warm  # the JSON form reads back the same rule
    path.write_text('[[rule]]\nid = "a"\nno_data = "1m"\n[[rule]]\nid = "a"\nno_data = "2m"\n')
    with pytest.raises(RuleError, match="rule 'a' is defined twice"):
        load_rules_file(path)
    path.write_text('[rule]\nid = "a"\n')
    with pytest.raises(RuleError, match=r"\[\[rule\]\] tables"):
        load_rules_file(path)
    path.write_text("[[rule]\n")
    with pytest.raises(RuleError, match="not TOML"):
        load_rules_file(path)


# --- the state machine -------------------------------------------------------------------


def warm(**extra: Any) -> Rule:
    return rule_from_json({"id": "warm", "metric": "temperature", "above": 8.0, "clear": 7.5, **extra})


def feed(
    engine: AlertEngine, values: Sequence[float], start_us: int, every_s: float = 1, now_us: int | None = None
) -> list[Change]:
    changes = []
    for i, value in enumerate(values):
        ts = start_us + int(i * every_s * S)
        changes += engine.readings([Reading("cold", ts, {"temperature": value})], now_us or ts)
    return changes


def states(changes: list[Change]) -> list[str]:
    return [c.alert.state for c in changes]


def test_oscillating_around_the_threshold_gives_one_alert() -> None:
    engine = AlertEngine([warm()], started_us=0)
    t0 = 1_800_000_000 * S
    wobble = [7.9, 8.1, 7.9, 8.2, 7.8, 8.05] * 10  # a minute around 8, never down to 7.5
    changes = feed(engine, wobble, t0)
    assert states(changes) == ["firing"]
    assert changes[0].at_us == t0 + S and changes[0].notify
    changes = feed(engine, [7.4], t0 + 60 * S)
    assert states(changes) == ["ok"] and changes[0].alert.peak == 8.2


def test_for_holds_it_pending_then_fires_from_the_start_of_the_excursion() -> None:
    engine = AlertEngine([warm(**{"for": "10s"})], started_us=0)
    t0 = 1_800_000_000 * S
    changes = feed(engine, [9, 9, 9, 7, 9] + [9] * 11, t0)
    # Pending at 0 s, back to ok at 3 s (no notification), pending again at 4 s, firing at 14 s.
    assert states(changes) == ["pending", "ok", "pending", "firing"]
    assert [c.notify for c in changes] == [False, False, False, True]
    assert changes[-1].at_us == t0 + 4 * S and changes[-1].alert.since_us == t0 + 4 * S


def test_readings_judged_at_their_own_time_and_late_ones_marked() -> None:
    engine = AlertEngine([warm(**{"for": "10m"})], started_us=0)
    outage = 1_800_000_000 * S  # 02:10 say; the readings arrive 55 minutes later
    delivered_at = outage + 55 * 60 * S
    values = [9.0] * 30 + [7.0]  # above 8 from 02:10 for 30 minutes, then back
    changes = feed(engine, values, outage, every_s=60, now_us=delivered_at)
    assert states(changes) == ["pending", "firing", "ok"]
    firing, resolved = changes[1], changes[2]
    assert firing.at_us == outage and firing.alert.late and resolved.alert.late
    assert resolved.at_us == outage + 30 * 60 * S
    assert delivered_at - resolved.at_us > LATE_AFTER_US


def test_a_redelivered_reading_changes_nothing() -> None:
    engine = AlertEngine([warm()], started_us=0)
    t0 = 1_800_000_000 * S
    assert states(feed(engine, [9.0, 7.0], t0)) == ["firing", "ok"]
    assert feed(engine, [9.0, 7.0], t0) == []  # the same readings again, as after a restart


def test_silence_from_the_last_reading_and_offline_status() -> None:
    silent = rule_from_json({"id": "silent", "no_data": "5m", "devices": ["cold*"]})
    started = 1_800_000_000 * S
    engine = AlertEngine([silent], started_us=started)
    engine.readings([Reading("cold", started + S, {"t": 1.0}), Reading("lab", started + S, {"t": 1.0})], started + S)
    assert engine.tick(started + 300 * S) == []
    changes = engine.tick(started + 302 * S)
    assert [(c.alert.device, c.alert.state, c.at_us) for c in changes] == [("cold", "firing", started + S)]
    assert engine.tick(started + 303 * S) == []  # fired once
    back = engine.readings([Reading("cold", started + 310 * S, {"t": 1.0})], started + 310 * S)
    assert states(back) == ["ok"]
    engine.status("cold", False, started + 320 * S)
    assert engine.tick(started + 400 * S) == []
    assert states(engine.tick(started + 621 * S)) == ["firing"]


def test_silence_counts_from_the_bridges_start_not_from_before() -> None:
    """What a bridge missed while it was down may still wait at the broker: a device last
    heard an hour ago is not silent the moment the bridge starts."""
    silent = rule_from_json({"id": "silent", "no_data": "5m"})
    started = 1_800_000_000 * S
    engine = AlertEngine([silent], started_us=started)
    engine.restore([], {"cold": started - 3600 * S})
    assert engine.tick(started + S) == []
    assert [c.at_us for c in engine.tick(started + 301 * S)] == [started - 3600 * S]


def test_acknowledge_and_repeat() -> None:
    engine = AlertEngine([warm(repeat="1m")], started_us=0)
    t0 = 1_800_000_000 * S
    feed(engine, [9.0], t0)
    assert engine.tick(t0 + 30 * S) == []
    repeat = engine.tick(t0 + 61 * S)
    assert [c.repeat for c in repeat] == [True]
    change = engine.acknowledge("warm:cold", "ana", "door was open", t0 + 70 * S)
    assert change.alert.state == "acknowledged" and change.by == "ana" and change.notify
    assert engine.tick(t0 + 200 * S) == []  # acknowledged: no more repeats
    with pytest.raises(ValueError, match="acknowledged, not firing"):
        engine.acknowledge("warm:cold", "ana", "", t0 + 71 * S)
    with pytest.raises(KeyError):
        engine.acknowledge("warm:nobody", "ana", "", t0)
    assert states(feed(engine, [7.0], t0 + 300 * S)) == ["ok"]


# --- what the journals keep: SQLite for one bridge, Redis for several -----------------------


@pytest.fixture(params=["sqlite", "redis"])
def journal(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Iterator[AlertJournal]:
    """Each journal, empty; the Redis one leading (it holds the lease and its epoch)."""
    if request.param == "sqlite":
        kept: AlertJournal = Journal(tmp_path / "alerts.sqlite")
    else:
        server = request.getfixturevalue("redis_server")
        shared = RedisJournal(redis.Redis(port=server.port, decode_responses=True), f"sensorpipe:{prefix}")
        shared.epoch = Lease(shared._redis, shared.keys, "test").acquire()
        kept = shared
    yield kept
    kept.close()


def test_both_journals_keep_state_history_and_outbox_alike(journal: AlertJournal) -> None:
    engine = AlertEngine([warm(), rule_from_json({"id": "silent", "no_data": "1m"})], started_us=0)
    t0 = 1_800_000_000 * S
    changes = feed(engine, [9.0, 7.0], t0, every_s=60)
    changes += engine.readings([Reading("lab", t0 + 90 * S, {"temperature": 8.5})], t0 + 90 * S)
    journal.record(changes, targets=2)  # firing and ok for cold, firing for lab: 3 changes, 6 rows
    assert sorted((a.id, a.state) for a in journal.alerts()) == [("warm:cold", "ok"), ("warm:lab", "firing")]
    history = journal.history(0)
    assert [(h["device"], h["state"]) for h in history] == [("lab", "firing"), ("cold", "ok"), ("cold", "firing")]
    assert [h["state"] for h in journal.history(0, device="cold")] == ["ok", "firing"]
    assert journal.history(t0 + 61 * S) == history[:1]
    assert journal.history(0, limit=2) == history[:2]

    outbox = journal.undelivered()
    assert [(p.target, p.body["device"], p.body["state"]) for p in outbox] == [
        (0, "cold", "firing"), (1, "cold", "firing"), (0, "cold", "ok"), (1, "cold", "ok"),
        (0, "lab", "firing"), (1, "lab", "firing"),
    ]  # fmt: skip
    assert journal.due(t0) == outbox[:2]  # each due when its change was found
    journal.delivered(outbox[0].n)
    journal.failed(outbox[1].n, "HTTP 500", retry_at_us=t0 + 3600 * S)
    journal.failed(outbox[1].n, "HTTP 502", retry_at_us=t0 + 7200 * S)
    journal.failed(outbox[0].n, "too late", retry_at_us=t0)  # delivered already: nothing to count
    retried = journal.undelivered()[0]
    assert (retried.n, retried.attempts, retried.due_us, retried.error) == (outbox[1].n, 2, t0 + 7200 * S, "HTTP 502")
    assert [p.n for p in journal.due(t0 + 100 * S)] == [p.n for p in outbox[2:]]

    journal.forget(["warm:cold"])
    assert [a.id for a in journal.alerts()] == ["warm:lab"]
    journal.save_seen({"cold": t0, "lab": t0 + 90 * S})
    journal.save_seen({"cold": t0 + 120 * S})
    assert journal.seen() == {"cold": t0 + 120 * S, "lab": t0 + 90 * S}
    journal.save_rule(warm(**{"for": "5m"}))
    journal.save_rule(warm(id="b-warm"))
    assert [(r.id, r.for_s) for r in journal.rules()] == [("b-warm", 0), ("warm", 300)]
    journal.delete_rule("warm")
    assert [r.id for r in journal.rules()] == ["b-warm"]


def test_a_replaced_leader_cannot_write_the_alert_state(redis_server: Any, prefix: str) -> None:
    """The fence: a leader paused past its lease, when another took the lead, writes nothing."""
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    old, new = (RedisJournal(client, f"sensorpipe:{prefix}") for _ in range(2))
    first, second = (Lease(client, old.keys, name) for name in ("first", "second"))
    old.epoch = first.acquire()
    assert old.epoch is not None and second.acquire() is None  # taken
    client.delete(old.keys.lease)  # its time ran out while it was paused
    new.epoch = second.acquire()
    assert new.epoch is not None and new.epoch != old.epoch and not first.renew()
    change = Change(Alert("warm", "cold", state="firing"), "ok", 1, 2, notify=True)
    with pytest.raises(Deposed):
        old.record([change], targets=1)
    assert old.alerts() == [] and old.undelivered() == []
    new.record([change], targets=1)
    assert [a.state for a in old.alerts()] == ["firing"]  # every replica reads it


# --- real bridges and a real webhook -------------------------------------------------------


class Webhook:
    """A local HTTP server taking Apprise's `json://` posts; answers `failing` with 500."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        self.failing = False
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if hook.failing:
                    hook.refused += 1
                    self.send_response(500)
                else:
                    hook.received.append(body)
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_port}/hook"

    def titles(self) -> list[str]:
        return [str(m["title"]) for m in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


RULES = """
[[rule]]
id = "warm"
metric = "temperature"
above = 8.0
clear = 7.5
"""


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return path


def warm_for(folder: Path, duration: str) -> Path:
    """The warm rule, holding `duration` before it fires."""
    path = folder / "rules.toml"
    path.write_text(RULES + f'for = "{duration}"\n')
    return path


@pytest.fixture
def alerting(
    start_bridge: Callable[..., BridgeProcess], rules_file: Path, webhook: Webhook
) -> Callable[..., BridgeProcess]:
    """Start a bridge with `rules` (default: the warm rule) telling the webhook, plus `settings`."""

    def start(rules: Path = rules_file, **settings: str) -> BridgeProcess:
        return start_bridge(SENSORPIPE_ALERT_RULES=str(rules), SENSORPIPE_ALERT_NOTIFY=webhook.url, **settings)

    return start


def publish(client: Mqtt, prefix: str, device: str, values: list[float], start_us: int, every_s: float = 1) -> None:
    for i, value in enumerate(values):
        ts = format_ts(start_us + int(i * every_s * S))
        client.publish(f"{prefix}/{device}/reading", {"ts": ts, "seq": i, "temperature": value})


def firing(bridge: BridgeProcess, client: Mqtt, prefix: str) -> BridgeProcess:
    """`bridge` once the warm rule fires for device `cold` (a reading of 9 a second ago)."""
    publish(client, prefix, "cold", [9.0], now_us() - S)
    wait_until(lambda: bridge.get("/api/alerts")["alerts"], what="the alert")
    return bridge


def cross_the_warm_rule(client: Mqtt, prefix: str, webhook: Webhook) -> int:
    """Readings of `cold` two minutes ago wobbling around 8 (never down to 7.5), once the
    firing notification came; returns the first reading's time (µs)."""
    start = now_us() - 120 * S
    publish(client, prefix, "cold", [7.0, 8.5, 7.9, 8.3, 7.8, 8.1], start)
    wait_until(lambda: webhook.received, what="the firing notification")
    return start


def assert_warm_fires_from(bridge: BridgeProcess, start: int) -> None:
    """The one alert: warm on cold, firing since the first reading above 8 (the second)."""
    firing = bridge.get("/api/alerts")["alerts"]
    assert [(a["id"], a["state"], a["since"]) for a in firing] == [("warm:cold", "firing", (start + S) / 1000)]


def test_a_crossing_fires_once_resolves_once_and_is_told_everywhere(
    alerting: Callable[..., BridgeProcess],
    mqtt_client: Mqtt,
    prefix: str,
    webhook: Webhook,
) -> None:
    bridge = alerting()
    mqtt_client.subscribe(f"{prefix}/_alerts/#")
    start = cross_the_warm_rule(mqtt_client, prefix, webhook)
    assert_warm_fires_from(bridge, start)
    publish(mqtt_client, prefix, "cold", [7.4], start + 10 * S)
    wait_until(lambda: len(webhook.received) >= 2, what="the resolved notification")
    assert webhook.titles() == ["FIRING: warm on cold", "RESOLVED: warm on cold"]
    message = webhook.received[0]["message"]
    assert "temperature 8.5, threshold 8" in message and f"{bridge.url}/device/cold" in message
    assert bridge.get("/api/alerts")["alerts"] == []
    history = bridge.get("/api/alerts/history")["history"]
    assert [h["state"] for h in history] == ["ok", "firing"]  # newest first
    retained = [m for m in mqtt_client.received if m.topic == f"{prefix}/_alerts/cold/warm"]
    assert [json.loads(m.payload)["state"] for m in retained] == ["firing", "ok"]


def test_acknowledge_through_the_api(
    alerting: Callable[..., BridgeProcess],
    mqtt_client: Mqtt,
    prefix: str,
    webhook: Webhook,
) -> None:
    bridge = firing(alerting(), mqtt_client, prefix)
    url = bridge.url + "/api/alerts/warm:cold/ack"
    assert requests.post(url, json={"comment": "x"}, timeout=10).status_code == 400  # who?
    assert requests.post(url, data="by=ana", timeout=10).status_code == 400  # not JSON
    assert requests.post(url, json={"by": "ana\nroot"}, timeout=10).status_code == 400  # one line
    assert requests.post(bridge.url + "/api/alerts/warm:nobody/ack", json={"by": "ana"}, timeout=10).status_code == 404
    answer = requests.post(url, json={"by": "ana", "comment": "door was open"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["state"] == "acknowledged"
    assert requests.post(url, json={"by": "ana"}, timeout=10).status_code == 409  # not firing now
    wait_until(lambda: len(webhook.received) >= 2, what="the acknowledged notification")
    assert webhook.titles() == ["FIRING: warm on cold", "ACKNOWLEDGED: warm on cold"]
    assert "by ana: door was open" in webhook.received[1]["message"]
    history = bridge.get("/api/alerts/history")["history"]
    assert (history[0]["state"], history[0]["by"], history[0]["comment"]) == ("acknowledged", "ana", "door was open")


def test_an_excursion_delivered_late_is_reported_with_its_own_times(
    alerting: Callable[..., BridgeProcess],
    mqtt_client: Mqtt,
    prefix: str,
    tmp_path: Path,
    webhook: Webhook,
) -> None:
    """What an outbox delivers after an outage: readings of an hour ago, 30 minutes above."""
    bridge = alerting(warm_for(tmp_path, "10m"))
    outage = now_us() - 3600 * S
    publish(mqtt_client, prefix, "cold", [7.0] + [9.0] * 30 + [7.0], outage, every_s=60)
    wait_until(lambda: len(webhook.received) >= 2, what="both notifications")
    history = bridge.get("/api/alerts/history")["history"]
    assert [(h["state"], h["at"], h["late"]) for h in history] == [
        ("ok", (outage + 31 * 60 * S) / 1000, True),
        ("firing", (outage + 60 * S) / 1000, True),
        ("pending", (outage + 60 * S) / 1000, True),
    ]
    assert "reported late" in webhook.received[0]["message"]


def test_a_failing_webhook_is_retried_and_ingest_goes_on(
    alerting: Callable[..., BridgeProcess],
    mqtt_client: Mqtt,
    prefix: str,
    webhook: Webhook,
    influx: Any,
) -> None:
    webhook.failing = True
    bridge = alerting(SENSORPIPE_STALL_AFTER_S="2")
    publish(mqtt_client, prefix, "cold", [9.0], now_us() - 10 * S)
    wait_until(lambda: webhook.refused >= 2, what="two refused deliveries")

    def health() -> tuple[int, list[str]]:
        answer = requests.get(bridge.url + "/healthz", timeout=10)
        return answer.status_code, answer.json()["reasons"]

    _, reasons = wait_until(lambda: (h := health())[0] == 503 and h, what="/healthz 503")
    assert any(r.startswith("alerts: a notification has waited") and "JSON" in r for r in reasons), reasons
    deliveries = bridge.get("/api/alerts")["deliveries"]
    assert deliveries["undelivered"] == 1 and list(deliveries["errors"]) == [webhook.url]
    # Meanwhile readings are stored as ever.
    publish(mqtt_client, prefix, "lab", [5.0, 5.1, 5.2], now_us() - 5 * S)
    wait_until(lambda: len(points(influx, "WHERE device = 'lab'")) == 3, what="lab's readings stored")
    webhook.failing = False
    wait_until(lambda: webhook.received, 90, "the notification, once the webhook answers")
    assert webhook.titles() == ["FIRING: warm on cold"]
    wait_until(lambda: bridge.get("/api/alerts")["deliveries"]["undelivered"] == 0, what="the outbox empty")
    assert health() == (200, [])


def test_kill_9_while_firing_loses_no_change_and_sends_none_twice(
    alerting: Callable[..., BridgeProcess],
    mqtt_client: Mqtt,
    prefix: str,
    webhook: Webhook,
) -> None:
    bridge = alerting()
    start = now_us() - 60 * S
    publish(mqtt_client, prefix, "cold", [9.0, 9.1], start)
    wait_until(lambda: webhook.received, what="the firing notification")
    bridge.stop(signal.SIGKILL)
    publish(mqtt_client, prefix, "cold", [9.2, 7.0], start + 2 * S)  # queued for the bridge's session
    again = alerting()
    wait_until(lambda: len(webhook.received) >= 2, what="the resolved notification after the restart")
    assert webhook.titles() == ["FIRING: warm on cold", "RESOLVED: warm on cold"]
    assert [h["state"] for h in again.get("/api/alerts/history")["history"]] == ["ok", "firing"]


def test_kill_9_while_pending_keeps_the_excursions_start(
    alerting: Callable[..., BridgeProcess],
    mqtt_client: Mqtt,
    prefix: str,
    tmp_path: Path,
    webhook: Webhook,
) -> None:
    rules = warm_for(tmp_path, "10s")
    bridge = alerting(rules)
    start = now_us() - 60 * S
    publish(mqtt_client, prefix, "cold", [9.0, 9.0], start, every_s=5)
    wait_until(lambda: [a["state"] for a in bridge.get("/api/alerts")["alerts"]] == ["pending"], what="pending")
    bridge.stop(signal.SIGKILL)
    again = alerting(rules)
    publish(mqtt_client, prefix, "cold", [9.0], start + 11 * S)  # 11 s after the excursion began
    wait_until(lambda: webhook.received, what="the firing notification")
    assert webhook.titles() == ["FIRING: warm on cold"]
    (alert,) = again.get("/api/alerts")["alerts"]
    assert (alert["state"], alert["since"]) == ("firing", start / 1000)


def test_no_data_when_a_publisher_is_killed(
    alerting: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    tmp_path: Path,
    webhook: Webhook,
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nid = "silent"\nno_data = "4s"\n')
    bridge = alerting(rules)
    publisher = run_publisher("shed", SENSORPIPE_INTERVAL="0.5")
    wait_until(lambda: any(d["device"] == "shed" for d in bridge.get("/api/devices")), what="the device")
    assert bridge.get("/api/alerts")["alerts"] == []
    publisher.stop(signal.SIGKILL)
    wait_until(lambda: webhook.received, 30, "the no-data notification")
    assert webhook.titles() == ["FIRING: silent on shed"]
    assert "no reading for 4 s" in webhook.received[0]["message"]


def test_a_bad_rules_file_or_apprise_url_stops_the_bridge_with_one_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nid = "warm"\nmetric = "temperature"\nabove = 8\nclear = 9\n')
    env = {"SENSORPIPE_ALERT_RULES": str(rules), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "bridge"], check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"bridge: bad setting: SENSORPIPE_ALERT_RULES (--alert-rules) = '{rules}': rule 'warm': clear 9 must be "
        "at or below the threshold 8 "
        "(it is where the alert resolves)"
    ]
    env = {"SENSORPIPE_ALERT_NOTIFY": "json://127.0.0.1/x nope://s3cr3t-token", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "bridge"], check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "s3cr3t" not in done.stderr + done.stdout
    assert "SENSORPIPE_ALERT_NOTIFY" in done.stderr and "URL number 2 (nope://...)" in done.stderr
    env = {"SENSORPIPE_ALERT_DB": str(tmp_path), "PATH": "/usr/bin:/bin"}  # a folder, not a file
    done = subprocess.run(
        [sys.executable, "-m", "bridge"], check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"bridge: alerts ({tmp_path}): unable to open database file"]


def test_retained_alert_state_reaches_a_late_subscriber(
    alerting: Callable[..., BridgeProcess],
    mqtt_client: Mqtt,
    prefix: str,
    webhook: Webhook,
    broker: Any,
) -> None:
    """Home Assistant or Node-RED connecting later still sees what fires (retained)."""
    firing(alerting(), mqtt_client, prefix)
    got: list[mqtt.MQTTMessage] = []
    late = mqtt.Client(CallbackAPIVersion.VERSION2)
    late.on_message = lambda client, userdata, message: got.append(message)
    late.connect("127.0.0.1", broker.port)
    late.subscribe(f"{prefix}/_alerts/#", 1)
    late.loop_start()
    try:
        wait_until(lambda: got, what="the retained alert")
        body = json.loads(got[0].payload)
        assert got[0].retain and (body["rule"], body["device"], body["state"], body["threshold"]) == (
            "warm",
            "cold",
            "firing",
            8.0,
        )
    finally:
        late.disconnect()
        late.loop_stop()


def test_acknowledge_on_the_page_and_another_browser_sees_it_at_once(
    alerting: Callable[..., BridgeProcess],
    mqtt_client: Mqtt,
    prefix: str,
    webhook: Webhook,
    page: Any,
    browser: Any,
) -> None:
    """Headless Chromium: the overview's banner and card mark, the alerts page's form, and a
    second browser that changes without a reload (the Socket.IO `alert` event)."""
    bridge = alerting()
    mqtt_client.publish(f"{prefix}/cold/reading", {"temperature": 5.0})
    other_context = browser.new_context()
    other = other_context.new_page()
    try:
        other.goto(bridge.url + "/")
        other.wait_for_selector('#connection[data-state="connected"]')
        other.wait_for_selector('article[data-device="cold"]')
        assert other.is_hidden("#alert-banner")
        mqtt_client.publish(f"{prefix}/cold/reading", {"temperature": 9.5})
        other.wait_for_selector('article[data-device="cold"][data-alert="firing"]')
        assert "1 alert firing: cold" in other.inner_text("#alert-banner")

        page.goto(bridge.url + "/alerts")
        page.wait_for_selector('#active tr[data-id="warm:cold"][data-state="firing"]')
        row = page.locator('#active tr[data-id="warm:cold"]')
        assert "temperature above 8" in row.inner_text()
        row.locator('input[name="by"]').fill("ana <b>")  # shown as text, not markup
        row.locator('input[name="comment"]').fill("door was open")
        row.locator('button[type="submit"]').click()
        page.wait_for_selector('#active tr[data-id="warm:cold"][data-state="acknowledged"]')
        assert "by ana <b>: door was open" in page.inner_text('#active tr[data-id="warm:cold"]')
        page.wait_for_selector('#history tr[data-state="acknowledged"]')
        assert "9.5 °C" in page.inner_text('#active tr[data-id="warm:cold"]')
        # The viewer's °F, chosen on the overview, reaches this page too (values and levels).
        page.evaluate("() => localStorage.setItem('sensorpipe.temperature-unit', 'F')")
        page.reload()
        page.wait_for_selector('#active tr[data-id="warm:cold"]')
        text = page.inner_text('#active tr[data-id="warm:cold"]')
        assert "49.1 °F" in text and "temperature above 46.4 °F" in text

        # The overview in the other browser follows without a reload.
        other.wait_for_selector('article[data-device="cold"][data-alert="acknowledged"]')
        wait_until(lambda: other.is_hidden("#alert-banner"), what="the banner gone (nothing fires)")
        assert bridge.get("/api/alerts")["alerts"][0]["acknowledged_by"] == "ana <b>"
    finally:
        other_context.close()


def test_sighup_reads_the_rules_again_and_a_bad_file_keeps_the_old_ones(
    alerting: Callable[..., BridgeProcess],
    rules_file: Path,
    webhook: Webhook,
) -> None:
    bridge = alerting()
    rules_file.write_text(RULES + '\n[[rule]]\nid = "silent"\nno_data = "10m"\n')
    bridge.process.send_signal(signal.SIGHUP)
    wait_until(lambda: [r["id"] for r in bridge.get("/api/rules")["rules"]] == ["warm", "silent"], what="both rules")
    rules_file.write_text('[[rule]]\nid = "warm"\nmetric = "temperature"\nabove = "eight"\n')
    bridge.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "rules not reloaded" in bridge.log(), what="the refusal in the log")
    assert "rule 'warm': above must be a finite number" in bridge.log()
    assert [r["id"] for r in bridge.get("/api/rules")["rules"]] == ["warm", "silent"]
    assert bridge.process.poll() is None


def test_rules_through_the_api_persist_and_provisioned_ones_are_read_only(
    alerting: Callable[..., BridgeProcess],
    mqtt_client: Mqtt,
    prefix: str,
    webhook: Webhook,
) -> None:
    bridge = alerting()
    api = bridge.url + "/api/rules"
    frost = {"id": "frost", "devices": ["green*"], "metric": "temperature", "below": 2.0, "clear": 3.0}
    assert requests.post(api, json=frost, timeout=10).status_code == 201
    assert requests.post(api, json=frost, timeout=10).status_code == 409  # the id is taken
    assert requests.post(api, json={**frost, "id": "x", "below": "2"}, timeout=10).status_code == 400
    assert requests.put(api + "/warm", json={"metric": "temperature", "above": 9}, timeout=10).status_code == 409
    assert requests.delete(api + "/warm", timeout=10).status_code == 409
    assert requests.delete(api + "/nothing", timeout=10).status_code == 404
    typo = {"id": "typo", "devices": ["greenhuose"], "no_data": "5m"}  # watches nothing
    assert requests.post(api, json=typo, timeout=10).status_code == 201
    mqtt_client.publish(f"{prefix}/greenhouse/reading", {"temperature": 1.0})
    wait_until(lambda: [a["id"] for a in bridge.get("/api/alerts")["alerts"]] == ["frost:greenhouse"], what="frost")
    bridge.stop()
    again = alerting()
    rules = {r["id"]: r for r in again.get("/api/rules")["rules"]}
    assert rules["frost"]["provisioned"] is False and rules["warm"]["provisioned"] is True
    # Which known devices each rule applies to: none for the typo, which the log names too.
    assert (rules["frost"]["watching"], rules["warm"]["watching"], rules["typo"]["watching"]) == (1, 1, 0)
    assert "alert rule 'typo' watches greenhuose: no device known matches" in again.log()
    # A rule as GET gives it can be sent back as it is.
    assert requests.put(f"{again.url}/api/rules/frost", json=rules["frost"], timeout=10).status_code == 200
    assert [a["id"] for a in again.get("/api/alerts")["alerts"]] == ["frost:greenhouse"]
    mqtt_client.subscribe(f"{prefix}/_alerts/greenhouse/frost")
    assert requests.delete(api.replace(bridge.url, again.url) + "/frost", timeout=10).status_code == 200
    wait_until(
        lambda: any(m.topic.endswith("/greenhouse/frost") and m.payload == b"" for m in mqtt_client.received),
        what="the retained alert cleared",
    )
    assert again.get("/api/alerts")["alerts"] == []


def test_e_mail_and_a_webhook_each_get_it_once_while_the_other_is_down(
    start_bridge: Callable[..., BridgeProcess], mqtt_client: Mqtt, prefix: str, rules_file: Path, webhook: Webhook
) -> None:
    mailbox = Mailbox()
    try:
        webhook.failing = True
        bridge = start_bridge(
            SENSORPIPE_ALERT_RULES=str(rules_file), SENSORPIPE_ALERT_NOTIFY=f"{mailbox.url} {webhook.url}"
        )
        publish(mqtt_client, prefix, "cold", [9.0], now_us() - S)
        wait_until(lambda: mailbox.messages, what="the e-mail")
        wait_until(lambda: webhook.refused >= 2, what="the webhook refusing twice")
        sender, recipients, content = mailbox.messages[0]
        assert (sender, recipients) == ("bridge@lab.example", ["coldroom@lab.example"])
        assert "FIRING: warm on cold" in content and f"{bridge.url}/device/cold" in content
        webhook.failing = False
        wait_until(lambda: webhook.received, 90, "the webhook's copy once it answers")
        wait_until(lambda: bridge.get("/api/alerts")["deliveries"]["undelivered"] == 0, what="nothing waiting")
        assert len(mailbox.messages) == 1 and webhook.titles() == ["FIRING: warm on cold"]
    finally:
        mailbox.controller.stop()


def test_a_rule_made_edited_and_deleted_on_the_page(
    alerting: Callable[..., BridgeProcess],
    mqtt_client: Mqtt,
    prefix: str,
    webhook: Webhook,
    page: Any,
) -> None:
    """Headless Chromium: the alerts page's rule form; a bad value gets the server's words;
    a rule of the rules file offers no edit."""
    bridge = alerting()
    page.goto(bridge.url + "/alerts")
    page.wait_for_selector('#rules tr[data-id="warm"]')
    assert "from the rules file" in page.inner_text('#rules tr[data-id="warm"]')
    page.fill('#rule-form input[name="id"]', "frost")
    page.fill('#rule-form input[name="devices"]', "green*")
    page.select_option('#rule-form select[name="kind"]', "below")
    page.fill('#rule-form input[name="metric"]', "temperature")
    page.fill('#rule-form input[name="threshold"]', "two")
    page.click('#rule-form button[type="submit"]')
    wait_until(lambda: "below must be a finite number" in page.inner_text("#rule-form .error"), what="the refusal")
    page.fill('#rule-form input[name="threshold"]', "2")
    page.fill('#rule-form input[name="clear"]', "3")
    page.click('#rule-form button[type="submit"]')
    page.wait_for_selector('#rules tr[data-id="frost"]')
    assert "temperature below 2, clear 3" in page.inner_text('#rules tr[data-id="frost"]')
    page.click('#rules tr[data-id="frost"] >> text=Edit')
    page.fill('#rule-form input[name="threshold"]', "1.5")
    page.click('#rule-form button[type="submit"]')
    wait_until(lambda: "below 1.5" in page.inner_text('#rules tr[data-id="frost"]'), what="the edited rule")
    mqtt_client.publish(f"{prefix}/greenhouse/reading", {"temperature": 1.0})
    page.wait_for_selector('#active tr[data-id="frost:greenhouse"][data-state="firing"]')
    page.click('#rules tr[data-id="frost"] >> text=Delete')
    wait_until(lambda: page.locator('#rules tr[data-id="frost"]').count() == 0, what="the rule gone")
    wait_until(lambda: page.locator('#active tr[data-id="frost:greenhouse"]').count() == 0, what="its alert gone")
    assert [r["id"] for r in bridge.get("/api/rules")["rules"]] == ["warm"]


def test_the_device_chart_draws_the_threshold_and_shades_the_excursion(
    alerting: Callable[..., BridgeProcess],
    mqtt_client: Mqtt,
    prefix: str,
    webhook: Webhook,
    page: Any,
    artifacts: Path,
) -> None:
    """Headless Chromium: the device page's temperature chart knows the warm rule's threshold
    (drawn dashed, the y range widened to show it) and the span the alert fired (shaded),
    and a new excursion appears without a reload."""
    bridge = alerting()
    start = now_us() - 600 * S
    publish(mqtt_client, prefix, "cold", [5.0, 9.0, 9.5, 7.0, 5.0], start, every_s=60)
    wait_until(lambda: len(webhook.received) >= 2, what="fired and resolved")
    page.goto(bridge.url + "/device/cold?range=1h")
    chart = 'section.chart[data-metric="temperature"]'
    page.wait_for_selector(f'{chart}[data-thresholds="8"][data-excursions="1"]')
    assert bridge.get("/api/rules?device=cold")["rules"][0]["id"] == "warm"
    assert bridge.get("/api/rules?device=cold")["rules"] == bridge.get("/api/rules")["rules"]
    assert len(bridge.get("/api/alerts/history?device=cold")["history"]) == 2
    assert bridge.get("/api/alerts/history?device=other")["history"] == []
    mqtt_client.publish(f"{prefix}/cold/reading", {"temperature": 9.9})
    page.wait_for_selector(f'{chart}[data-excursions="2"]')
    page.screenshot(path=artifacts / "device-alert.png", full_page=True)


def test_a_silence_rule_added_later_counts_from_the_last_reading_heard_without_rules() -> None:
    started = 1_800_000_000 * S
    engine = AlertEngine([], started_us=started)
    assert engine.readings([Reading("cold", started + 10 * S, {"t": 1.0})], started + 10 * S) == []
    engine.set_rules([rule_from_json({"id": "silent", "no_data": "5m"})])
    assert engine.tick(started + 309 * S) == []
    assert [c.at_us for c in engine.tick(started + 311 * S)] == [started + 10 * S]


# --- several bridges ---------------------------------------------------------------------


def active(bridge: BridgeProcess) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = bridge.get("/api/alerts")["alerts"]
    return alerts


def test_two_replicas_show_the_same_alerts_and_notify_each_change_once(
    start_bridge: Callable[..., BridgeProcess],
    redis_server: Any,
    rules_file: Path,
    webhook: Webhook,
    mqtt_client: Mqtt,
    prefix: str,
) -> None:
    """Two bridges in one share group with Redis: each receives half of a device's readings,
    one leads the alerts. Then the leader is killed with -9 and the other takes over."""
    replica = replicas(
        start_bridge, redis_server, prefix, SENSORPIPE_ALERT_RULES=str(rules_file), SENSORPIPE_ALERT_NOTIFY=webhook.url
    )
    a, b = replica("a"), replica("b")
    start = cross_the_warm_rule(mqtt_client, prefix, webhook)
    for bridge in (a, b):  # every replica shows it, whoever judged it
        wait_until(functools.partial(active, bridge), what="the alert on each replica")
        assert_warm_fires_from(bridge, start)
    leader, other = (a, b) if "leads them now" in a.log() else (b, a)
    assert "leads them now" not in other.log()

    # Acknowledged on the replica that does not lead: it answers once the leader has done it.
    answer = requests.post(other.url + "/api/alerts/warm:cold/ack", json={"by": "ana", "comment": "door"}, timeout=10)
    assert answer.status_code == 200 and answer.json()["state"] == "acknowledged", answer.text
    assert leader.get("/api/alerts")["alerts"][0]["acknowledged_by"] == "ana"
    publish(mqtt_client, prefix, "cold", [7.4, 7.3], start + 10 * S)
    wait_until(lambda: len(webhook.received) >= 3, what="the resolved notification")
    assert webhook.titles() == ["FIRING: warm on cold", "ACKNOWLEDGED: warm on cold", "RESOLVED: warm on cold"]
    wait_until(lambda: a.get("/api/alerts/history") == b.get("/api/alerts/history"), what="the same history")
    assert [h["state"] for h in a.get("/api/alerts/history")["history"]] == ["ok", "acknowledged", "firing"]

    # The leader dies; the other takes the lead when its lease runs out, and goes on. (Half of
    # shed's readings may wait in the dead replica's session: the other half tells the story.)
    leader.stop(signal.SIGKILL)
    wait_until(lambda: "leads them now" in other.log(), 30, "the other replica leading")
    publish(mqtt_client, prefix, "shed", [9.0, 9.0, 7.0, 7.0], now_us() - 10 * S)
    wait_until(lambda: len(webhook.received) >= 5, what="shed's notifications from the new leader")
    assert webhook.titles()[3:] == ["FIRING: warm on shed", "RESOLVED: warm on shed"]
    assert [h["state"] for h in other.get("/api/alerts/history?device=shed")["history"]] == ["ok", "firing"]


@pytest.mark.slow
def test_an_excursion_inside_a_broker_outage_is_told_late_once_the_outbox_drains(
    start_bridge: Callable[..., BridgeProcess],
    run_publisher: Callable[..., Program],
    private_broker: Any,
    tmp_path: Path,
    webhook: Webhook,
) -> None:
    """A real outage on the publisher's side: the broker is down for 65 s while a publisher
    reads once a second, each reading past the rule's threshold, so the whole excursion lies
    inside the outage. When the broker is back the outbox drains, and the alert is told with
    the readings' own times, marked late."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nid = "any"\ndevices = ["shed"]\nmetric = "temperature"\nabove = -100.0\n')
    bridge = start_bridge(on=private_broker, SENSORPIPE_ALERT_RULES=str(rules), SENSORPIPE_ALERT_NOTIFY=webhook.url)
    private_broker.stop(signal.SIGTERM)
    began = now_us()
    publisher = run_publisher("shed", on=private_broker, SENSORPIPE_INTERVAL="1")
    time.sleep(65)  # the outage itself (longer than the minute after which a change is late)
    assert publisher.process.poll() is None, publisher.log()
    assert webhook.received == []  # nothing reached the bridge meanwhile
    private_broker.start()
    wait_until(lambda: webhook.received, 60, "the firing notification, once the outbox drained")
    assert webhook.titles() == ["FIRING: any on shed"]
    assert "reported late" in webhook.received[0]["message"]
    (alert,) = bridge.get("/api/alerts")["alerts"]
    assert alert["late"] is True
    assert began / 1000 <= alert["since"] <= began / 1000 + 10_000  # the first reading, in the outage
