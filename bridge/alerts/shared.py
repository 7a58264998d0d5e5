"""Alerts with several bridges: one judges, every one shows the same, one notifies.

With SENSORPIPE_REDIS_URL each replica receives only its share of the readings (a shared
MQTT subscription), so no replica alone can judge a device. Each replica adds what it
accepts (readings, statuses) and what its users ask (acknowledgements, rule changes) to one
Redis stream, the feed. The replica holding a lease in Redis leads: it alone reads the feed
in order, judges, writes the alert state, history and outbox (RedisJournal), publishes the
retained `<prefix>/_alerts/...` topics, tells the browsers (through Socket.IO's Redis queue,
so every replica's browsers hear it) and sends the notifications. The others read the same
state from Redis for their pages and API. A leader that stops hands the lease on at once; one
that dies loses it after LEASE_S, and the next leader goes on from the last feed entry the
old one wrote a change for.

Fencing: every write of the leader carries the epoch it took the lease with, checked in the
same Lua call that writes. A leader paused past its lease and replaced finds its writes
refused (Deposed) and steps down: there are never two writers of the alert state.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bridge.alerts.engine import Alert, AlertEngine, Change
from bridge.alerts.journal import Pending, history_entry, rule_body
from bridge.alerts.notify import Notifier
from bridge.alerts.rules import Rule, rule_from_json
from bridge.alerts.service import SAVE_SEEN_EVERY_S, TICK_S, AlertService
from bridge.shared import as_text, as_texts
from common.reading import Reading, now_us
from common.topics import Topics

log = logging.getLogger(__name__)

LEASE_S = 5.0  # a leader that stopped answering is replaced after this long
RENEW_EVERY_S = 1.0
FEED_MAX = 20_000  # feed entries kept while no one leads (each is one chunk of readings)
HISTORY_MAX = 100_000  # alert changes kept (the newest)
QUIET_S = 0.1  # entries are judged once the feed was quiet this long...
HOLD_MAX_S = 0.5  # ...or the oldest waited this long: readings of one device that two replicas
# added out of order within that time are judged in their own order
HOLD_MAX_ENTRIES = 5_000  # a backlog is judged in parts, the lease renewed between them
ACK_WAIT_S = 5.0
# A request to Redis costs redis-py about 0.2 ms of CPU, more than the readings in it: each
# bridge sends what gathered in FEED_GATHER_S as one entry, and the leader reads at most every
# READ_EVERY_S (measured: at 500 readings/s this is the difference between 25 % of the bridges'
# CPU and about 3 %).
FEED_GATHER_S = 0.05
READ_EVERY_S = 0.05

# Apply the commands in ARGV[3..] (each: its length, then the command) if the epoch in KEYS[1]
# is ARGV[1]. Returns 1, or 0 when another replica took the lease since.
FENCED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
"""

# KEYS: lease, epoch. ARGV: holder, lease ms. Returns the new epoch, or 0 when taken.
ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return redis.call('INCR', KEYS[2]) end
return 0
"""
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# An outbox row's delivery failed: count it, unless it was delivered meanwhile.
FAILED = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""


class Deposed(RuntimeError):
    """Another replica leads the alerts now (or this one never did)."""


class Keys:
    def __init__(self, namespace: str) -> None:
        base = f"{namespace}:alerts:"
        self.lease, self.epoch, self.feed, self.position = (base + k for k in ("lease", "epoch", "feed", "position"))
        self.state, self.history, self.counter = (base + k for k in ("state", "history", "counter"))
        self.outbox, self.retries, self.seen, self.rules = (base + k for k in ("outbox", "retries", "seen", "rules"))


class RedisJournal:
    """bridge.alerts.journal.AlertJournal in Redis: what every replica reads, what the leader
    writes (fenced by the epoch of its lease)."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self._redis = client
        self.keys = Keys(namespace)
        self._fenced = client.register_script(FENCED)
        self._failed = client.register_script(FAILED)
        self.epoch: str | None = None  # set while this replica leads
        self.position: str | None = None  # the feed entry judged last: written with each change

    def close(self) -> None:
        pass  # the Redis client is the bridge's

    def _write(self, commands: list[list[str]]) -> None:
        if self.epoch is None:
            raise Deposed("this bridge does not lead the alerts")
        args: list[str] = [self.epoch]
        for command in commands:
            args += [str(len(command)), *command]
        if not self._fenced(keys=[self.keys.epoch], args=args):
            raise Deposed("another bridge took the lead of the alerts")

    # --- changes and their notifications ---------------------------------------------------

    def record(self, changes: list[Change], targets: int) -> None:
        if not changes:
            return
        rows = len(changes) + targets * sum(1 for c in changes if c.notify)
        n = int(self._redis.incrby(self.keys.counter, rows)) - rows  # numbers for history and outbox
        commands: list[list[str]] = []
        for change in changes:
            alert = change.alert
            event = json.dumps(history_entry(change))
            commands.append(["HSET", self.keys.state, alert.id, json.dumps(alert.stored())])
            n += 1  # a member of the sorted set: unique, and in order among equal times
            commands.append(["ZADD", self.keys.history, str(change.found_us), f"{n:016d} {event}"])
            if change.notify:
                for target in range(targets):
                    n += 1
                    row = json.dumps({"target": target, "found_us": change.found_us, "body": history_entry(change)})
                    commands.append(["HSET", self.keys.outbox, str(n), row])
        commands.append(["ZREMRANGEBYRANK", self.keys.history, "0", str(-HISTORY_MAX - 1)])
        if self.position is not None:
            commands.append(["SET", self.keys.position, self.position])
        self._write(commands)

    def save_position(self) -> None:
        """The feed is judged up to `position` (and what came before it can go)."""
        if self.position is not None:
            self._write([["SET", self.keys.position, self.position], ["XTRIM", self.keys.feed, "MINID", self.position]])

    def saved_position(self) -> str:
        return str(self._redis.get(self.keys.position) or "0-0")

    def forget(self, alert_ids: list[str]) -> None:
        if alert_ids:
            self._write([["HDEL", self.keys.state, *alert_ids]])

    def alerts(self) -> list[Alert]:
        return [Alert.from_json(json.loads(body)) for body in self._redis.hvals(self.keys.state)]

    def alert(self, alert_id: str) -> Alert | None:
        body = self._redis.hget(self.keys.state, alert_id)
        return Alert.from_json(json.loads(body)) if body else None

    def history(self, since_us: int, device: str | None = None, limit: int = 10_000) -> list[dict[str, object]]:
        found: list[dict[str, object]] = []
        start, page = 0, 1000
        while len(found) < limit:
            members: list[Any] = self._redis.zrevrangebyscore(
                self.keys.history, "+inf", since_us, start=start, num=page
            )
            for member in members:
                event = json.loads(as_text(member).split(" ", 1)[1])
                if device is None or event.get("device") == device:
                    found.append(event)
            if len(members) < page:
                break
            start += page
        return found[:limit]

    # --- the outbox ---------------------------------------------------------------------------

    def undelivered(self) -> list[Pending]:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.outbox)
            pipe.hgetall(self.keys.retries)
            rows, retries = pipe.execute()
        pending = []
        for n, text in rows.items():
            row = json.loads(text)
            attempts, due_us, error = 0, int(row["found_us"]), None
            if n in retries:
                attempts_text, due_text, error = retries[n].split(" ", 2)
                attempts, due_us = int(attempts_text), int(due_text)
            pending.append(Pending(int(n), int(row["target"]), row["body"], attempts, due_us, error))
        return sorted(pending, key=lambda p: p.n)

    def due(self, now_us: int, limit: int = 100) -> list[Pending]:
        return [p for p in self.undelivered() if p.due_us <= now_us][:limit]

    def delivered(self, n: int) -> None:
        # Not fenced: a replica that sent it must take it out, whoever leads now.
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.outbox, str(n))
            pipe.hdel(self.keys.retries, str(n))
            pipe.execute()

    def failed(self, n: int, error: str, retry_at_us: int) -> None:
        attempts = self._redis.hget(self.keys.retries, str(n))
        count = int(as_text(attempts).split(" ", 1)[0]) + 1 if attempts else 1
        self._failed(keys=[self.keys.outbox, self.keys.retries], args=[str(n), f"{count} {retry_at_us} {error}"])

    # --- devices last heard, rules made on the dashboard ------------------------------------

    def save_seen(self, last_seen: dict[str, int]) -> None:
        if last_seen:
            self._write([["HSET", self.keys.seen, *(x for d, ts in last_seen.items() for x in (d, str(ts)))]])

    def seen(self) -> dict[str, int]:
        return {device: int(ts) for device, ts in as_texts(self._redis.hgetall(self.keys.seen)).items()}

    def rules(self) -> list[Rule]:
        bodies = self._redis.hgetall(self.keys.rules)
        return [rule_from_json(json.loads(bodies[rule_id])) for rule_id in sorted(bodies)]

    def save_rule(self, rule: Rule) -> None:
        self._redis.hset(self.keys.rules, rule.id, rule_body(rule))

    def delete_rule(self, rule_id: str) -> None:
        self._redis.hdel(self.keys.rules, rule_id)


class Lease:
    """Who leads the alerts: a Redis key with a time to live, and an epoch counting leaders."""

    def __init__(self, client: redis.Redis, keys: Keys, holder: str) -> None:
        self._keys = keys
        self.holder = holder
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)
        self._ms = str(int(LEASE_S * 1000))

    def acquire(self) -> str | None:
        """The epoch of this replica's lead, or None when another holds the lease."""
        epoch = self._acquire(keys=[self._keys.lease, self._keys.epoch], args=[self.holder, self._ms])
        return str(epoch) if epoch else None

    def renew(self) -> bool:
        return bool(self._renew(keys=[self._keys.lease], args=[self.holder, self._ms]))

    def release(self) -> None:
        self._release(keys=[self._keys.lease], args=[self.holder])


@dataclass(frozen=True)
class _Entry:
    read_at: float
    id: str
    fields: dict[str, str]


class SharedAlertService(AlertService):
    """AlertService for one of several replicas (see the module's text). Every replica feeds;
    the one holding the lease judges, writes, publishes and notifies."""

    def __init__(
        self,
        client: redis.Redis,
        journal: RedisJournal,
        notifier: Notifier,
        topics: Topics,
        rules_file: Path | None,
        replica: str,
        max_devices: int = 10_000,
        stuck_after_s: float = 60.0,
    ) -> None:
        super().__init__(journal, notifier, topics, rules_file, max_devices, stuck_after_s)
        self._redis = client
        self._shared = journal
        self.lease = Lease(client, journal.keys, f"{replica}/{uuid.uuid4().hex[:8]}")
        # To the feed: a queue and a thread of their own, so ingest never waits for Redis.
        self._outgoing: deque[tuple[str, object]] = deque()  # (kind, body), JSON-encoded when sent
        self._outgoing_max = FEED_MAX
        self._outgoing_ready = threading.Event()
        self._outgoing_lock = threading.Lock()
        self.feed_lost = 0  # entries dropped while Redis was unreachable and the queue full
        self._feed_failing_since: float | None = None
        self._feeder = threading.Thread(target=self._feed_loop, name="alert-feed", daemon=True)
        self._leader = threading.Thread(target=self._lead_loop, name="alert-leader", daemon=True)
        self._cursor = "0-0"  # the newest feed entry read
        self._held: list[_Entry] = []
        self._renewed_at = self._ticked_at = self._positioned_at = 0.0
        self._logged_at = float("-inf")
        self._read_at = 0.0

    _not_failures = (Deposed,)  # changes the next leader makes again: not lost

    def _initial_engine(self) -> AlertEngine:
        return AlertEngine(self._file_rules, now_us(), self._max_devices)  # Redis is read on taking the lead

    @property
    def leading(self) -> bool:
        return self._shared.epoch is not None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._feeder.start()
        self._leader.start()

    def stop(self) -> None:
        self._stop.set()
        self._outgoing_ready.set()
        for thread in (self._leader, self._feeder):
            if thread.ident is not None:
                thread.join(10)
        if self.leading:
            try:
                with self._lock:
                    self._journal.save_seen(self._engine.last_seen())
                    self._shared.save_position()
                self.lease.release()  # the next replica leads at once, not after LEASE_S
            except (redis.RedisError, Deposed) as exc:
                log.warning("alerts: could not hand the lead on cleanly: %s", exc)
        self._step_down()

    def _rules_changed(self, rules: list[Rule]) -> None:
        self._add("rules", "")  # the leader merges them again (bridge/alerts/service.py _merge)

    # --- feeding (every replica) -----------------------------------------------------------

    def accepted(self, readings: Sequence[Reading]) -> None:
        self._add("r", [[r.device, r.ts_us, r.metrics] for r in readings])

    def status(self, device: str, online: bool | None) -> None:
        self._add("s", [device, online])

    def _add(self, kind: str, body: object) -> None:
        with self._outgoing_lock:
            if len(self._outgoing) >= self._outgoing_max:
                self._outgoing.popleft()
                self.feed_lost += 1
            self._outgoing.append((kind, body))
        self._outgoing_ready.set()

    def _feed_loop(self) -> None:
        while True:
            self._outgoing_ready.wait(1.0)
            # A moment for more to come: chunks that arrive together go as one entry (a
            # request to Redis costs more than the readings in it).
            self._stop.wait(FEED_GATHER_S)
            self._outgoing_ready.clear()
            with self._outgoing_lock:
                batch = list(self._outgoing)
            if batch:
                try:
                    with self._redis.pipeline(transaction=False) as pipe:
                        for fields in _entries(batch):
                            pipe.xadd(self._shared.keys.feed, fields, maxlen=FEED_MAX, approximate=True)  # type: ignore[arg-type]
                        pipe.execute()
                except redis.RedisError as exc:
                    if self._feed_failing_since is None:
                        self._feed_failing_since = time.monotonic()
                        log.error("alerts: cannot add to the feed in Redis (%s); retrying", exc)
                    self._stop.wait(1.0)
                    continue
                with self._outgoing_lock:
                    for _ in range(min(len(batch), len(self._outgoing))):
                        self._outgoing.popleft()
                self._feed_failing_since = None
            if self._stop.is_set() and not self._outgoing:
                return

    # --- leading (the replica holding the lease) -------------------------------------------

    def _lead_loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.leading:
                    self._lead_once()
                elif not self._try_lead():
                    self._stop.wait(RENEW_EVERY_S)
            except Deposed as exc:
                log.warning("alerts: %s; this bridge stops leading them", exc)
                self._step_down()
            except redis.RedisError as exc:
                if time.monotonic() - self._logged_at > 60:  # once a minute while Redis is away
                    self._logged_at = time.monotonic()
                    log.error("alerts: Redis: %s; retrying", exc)
                self._stop.wait(RENEW_EVERY_S)
            except Exception:  # the loop must outlive a bug
                log.exception("alerts: the leader's loop failed; going on")
                self._stop.wait(RENEW_EVERY_S)

    def _try_lead(self) -> bool:
        epoch = self.lease.acquire()
        if epoch is None:
            return False
        with self._lock:
            self._shared.epoch = epoch
            self._cursor = self._shared.position = self._shared.saved_position()
            self._held = []
            self._engine = self._load_engine()
            for alert in self._engine.alerts():
                self._tell_mqtt(alert)  # a broker may have lost them
        first: Any = self._redis.xrange(self._shared.keys.feed, "-", "+", count=1)
        if first and self._cursor != "0-0" and _older(self._cursor, as_text(first[0][0])):
            log.error("alerts: the feed lost entries before %s while no bridge led (over %d)", first[0][0], FEED_MAX)
        self._renewed_at = time.monotonic()
        self.notifier.start()
        log.info("alerts: %s leads them now, epoch %s, feed from %s", self.lease.holder, epoch, self._cursor)
        return True

    def _step_down(self) -> None:
        self._shared.epoch = None
        self.notifier.stop()

    def _lead_once(self) -> None:
        now = time.monotonic()
        if now - self._renewed_at >= RENEW_EVERY_S:
            if not self.lease.renew():
                raise Deposed("the lease ran out")
            self._renewed_at = now
        wait_s = READ_EVERY_S - (now - self._read_at)
        if wait_s > 0 and self._stop.wait(wait_s):
            return
        block_ms = int(READ_EVERY_S * 1000)
        answer: Any = self._redis.xread({self._shared.keys.feed: self._cursor}, count=1000, block=block_ms)
        read_at = self._read_at = time.monotonic()
        for _stream, entries in answer or ():
            for entry_id, fields in entries:
                self._held.append(_Entry(read_at, entry_id, fields))
                self._cursor = entry_id
        if self._held and (
            read_at - self._held[-1].read_at >= QUIET_S
            or read_at - self._held[0].read_at >= HOLD_MAX_S
            or len(self._held) >= HOLD_MAX_ENTRIES
        ):
            held, self._held = self._held, []
            self._judge_entries(held)
        if read_at - self._ticked_at >= TICK_S:
            self._ticked_at = read_at
            self._tick()
        if read_at - self._positioned_at >= SAVE_SEEN_EVERY_S / 10:
            self._positioned_at = read_at
            self._shared.save_position()

    def _judge_entries(self, entries: list[_Entry]) -> None:
        """Runs of readings in the order of their own time; statuses and requests between."""
        run: list[Reading] = []
        for entry in entries:
            fields = entry.fields
            if "r" in fields:
                run += [Reading(device, int(ts), metrics) for device, ts, metrics in json.loads(fields["r"])]
                self._shared.position = entry.id
                continue
            self._judge_run(run)
            run = []
            self._shared.position = entry.id
            if "s" in fields:
                device, online = json.loads(fields["s"])
                with self._lock:
                    self._engine.status(device, online, now_us())
            elif "ack" in fields:
                self._acknowledge_now(*json.loads(fields["ack"]))
            elif "rules" in fields:
                with self._lock:
                    self._use(self._merge(self._file_rules, self._journal.rules()))
        self._judge_run(run)

    def _judge_run(self, run: list[Reading]) -> None:
        if run:
            run.sort(key=lambda r: r.ts_us)
            self._judge(run)

    def _acknowledge_now(self, alert_id: str, by: str, comment: str) -> None:
        try:
            super().acknowledge(alert_id, by, comment)
        except (KeyError, ValueError) as exc:  # resolved or acknowledged since it was asked
            log.info("alerts: acknowledgement of %s by %s not applied: %s", alert_id, by, exc)

    # --- what the web app reads and does (any replica) -------------------------------------

    def _current(self) -> list[Alert]:
        return self._shared.alerts()

    def rules(self) -> list[Rule]:
        return self._merge(self._file_rules, self._journal.rules())

    def acknowledge(self, alert_id: str, by: str, comment: str) -> dict[str, object]:
        """Asks the leader, and waits for it to have done it. Raises KeyError (unknown),
        ValueError (not firing) or TimeoutError (no bridge leads: the request stays queued)."""
        alert = self._shared.alert(alert_id)
        if alert is None:
            raise KeyError(alert_id)
        if alert.state != "firing":
            raise ValueError(f"alert {alert_id} is {alert.state}, not firing")
        self._add("ack", [alert_id, by, comment])
        deadline = time.monotonic() + ACK_WAIT_S
        while time.monotonic() < deadline:
            now = self._shared.alert(alert_id)
            if now is None or now.state != "firing":
                return (now or alert).to_json()
            self._stop.wait(0.05)
        raise TimeoutError("no bridge applied it in time (none leads the alerts?); it stays queued for the next leader")

    def problems(self) -> list[str]:
        try:
            reasons = [r for r in super().problems() if "ticker" not in r]
        except redis.RedisError:  # /healthz names Redis already (bridge/health.py)
            reasons = []
        if self._feed_failing_since is not None and time.monotonic() - self._feed_failing_since > 1:
            reasons.append(f"alerts: readings wait to reach the alert feed in Redis ({len(self._outgoing)} chunks)")
        if self.feed_lost:
            reasons.append(f"alerts: {self.feed_lost} chunks of readings were never judged (Redis was away too long)")
        if not self._leader.is_alive() and self._leader.ident is not None and not self._stop.is_set():
            reasons.append("alerts: this bridge's alert loop has stopped")
        return reasons


def _entries(batch: list[tuple[str, object]]) -> list[dict[str, str]]:
    """Feed entries for what waits to be sent, in order: runs of readings joined into one."""
    entries: list[dict[str, str]] = []
    readings: list[object] = []
    for kind, body in batch:
        if kind == "r" and isinstance(body, list):
            readings += body
            continue
        if readings:
            entries.append({"r": json.dumps(readings)})
            readings = []
        entries.append({kind: json.dumps(body)})
    if readings:
        entries.append({"r": json.dumps(readings)})
    return entries


def _older(a: str, b: str) -> bool:
    """Stream id `a` comes before `b`."""
    ms_a, _, n_a = a.partition("-")
    ms_b, _, n_b = b.partition("-")
    return (int(ms_a), int(n_a or 0)) < (int(ms_b), int(n_b or 0))
