"""State several bridge replicas share through Redis: devices, rejections, pipeline totals.

With one bridge all of this lives in its memory (DeviceRegistry, RejectionLog). With
SENSORPIPE_REDIS_URL set, every replica reads and writes the same Redis keys instead, so the
API answers the same from each: a replica ingests only its share of the readings (MQTT
shared subscription), but what it learns is everyone's. Keys start with
`sensorpipe:<topic prefix>:`, so several installations can share one Redis.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import redis

from bridge.devices import DEFAULT_MAX_DEVICES, DeviceRegistry, DeviceState, device_json
from bridge.rejections import Rejection, RejectionLog
from common.health import Health, encode_health, parse_health
from common.reading import Reading, RejectedMessage

log = logging.getLogger(__name__)

# Newest reading wins, atomically: last_seen, seq, tags and one field per metric (`m:<name>`,
# merged, as DeviceRegistry does). KEYS: device hash, device set. ARGV: device, the most
# devices tracked, ts_ms, seq, sensor, location, then metric name/value pairs. Returns 0 for
# an older reading, -1 for a device beyond the bound, 1 when recorded.
SAW_READING = """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 and redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[2]) then
  return -1
end
local current = redis.call('HGET', KEYS[1], 'last_seen')
if current and tonumber(current) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'last_seen', ARGV[3], 'seq', ARGV[4], 'sensor', ARGV[5], 'location', ARGV[6])
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], 'm:' .. ARGV[i], ARGV[i + 1]) end
if redis.call('HLEN', KEYS[1]) > 48 then
  -- more than 32 metric names over time: keep this reading's only (as DeviceRegistry does)
  local keep = {}
  for i = 7, #ARGV, 2 do keep['m:' .. ARGV[i]] = true end
  for _, key in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(key, 1, 2) == 'm:' and not keep[key] then redis.call('HDEL', KEYS[1], key) end
  end
end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# Set one field of a device (online, health; an empty value deletes it) and say whether it
# changed, atomically: of N replicas that all read the same status message, exactly one
# sees the change (and tells the browsers). KEYS: device hash, device set. ARGV: device, the
# most devices tracked, field, value. Returns -1 for a device beyond the bound.
SET_FIELD = """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
  if ARGV[4] == '' then return 0 end  -- clearing makes no new device
  if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[2]) then return -1 end
end
local before = redis.call('HGET', KEYS[1], ARGV[3]) or ''
if ARGV[4] == '' then redis.call('HDEL', KEYS[1], ARGV[3]) else redis.call('HSET', KEYS[1], ARGV[3], ARGV[4]) end
redis.call('SADD', KEYS[2], ARGV[1])
if before == ARGV[4] then return 0 end
return 1
"""


class _Quiet:
    """Redis writes that must not stop ingest: a failure is logged (once a minute) and
    dropped, the shared view is stale meanwhile and /healthz says why."""

    def __init__(self) -> None:
        self._last = float("-inf")

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> bool:
        if not isinstance(error, redis.RedisError):
            return False
        if time.monotonic() - self._last > 60:
            self._last = time.monotonic()
            log.warning("Redis: %s; the shared device state is stale until it is back", error)
        return True


def connect(url: str) -> redis.Redis:
    """A client for `url` (redis://[:password@]host:port/db); decodes to str."""
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5, health_check_interval=30)


class RedisDeviceRegistry(DeviceRegistry):
    """DeviceRegistry with the state in Redis, bounded the same way."""

    def __init__(self, client: redis.Redis, namespace: str, max_devices: int = DEFAULT_MAX_DEVICES) -> None:
        super().__init__(max_devices)
        self._redis = client
        self._set = f"{namespace}:devices"
        self._prefix = f"{namespace}:device:"
        self._saw = client.register_script(SAW_READING)
        self._field = client.register_script(SET_FIELD)
        self._quiet = _Quiet()

    def saw_readings(self, readings: list[Reading]) -> None:
        newest: dict[str, Reading] = {}
        for reading in readings:
            if reading.device not in newest or reading.ts_us >= newest[reading.device].ts_us:
                newest[reading.device] = reading
        with self._quiet, self._redis.pipeline(transaction=False) as pipe:
            for device, reading in newest.items():
                args: list[Any] = [device, self.max_devices, repr(reading.ts_ms), _opt(reading.seq)]
                args += [_opt(reading.sensor), _opt(reading.location)]
                for name, value in reading.metrics.items():
                    args += [name, repr(value)]
                self._saw(keys=[self._prefix + device, self._set], args=args, client=pipe)
            for device, outcome in zip(newest, pipe.execute(), strict=True):
                if outcome == -1:
                    self._beyond_bound(device)

    def _set_field(self, device: str, name: str, value: str) -> bool:
        with self._quiet:
            outcome = self._field(keys=[self._prefix + device, self._set], args=[device, self.max_devices, name, value])
            if outcome == -1:
                self._beyond_bound(device)
            return bool(outcome == 1)
        return False

    def set_online(self, device: str, online: bool | None) -> bool:
        return self._set_field(device, "online", "" if online is None else "1" if online else "0")

    def set_health(self, device: str, health: Health | None) -> None:
        self._set_field(device, "health", "" if health is None else encode_health(health).decode())

    def count(self) -> int:
        return int(self._redis.scard(self._set))

    def names(self) -> list[str]:
        return [as_text(device) for device in self._redis.smembers(self._set)]

    def snapshot(self, devices: list[str] | None = None) -> list[dict[str, Any]]:
        if devices is None:
            devices = sorted(as_text(device) for device in self._redis.smembers(self._set))
        else:
            asked = sorted(set(devices))
            devices = [d for d, known in zip(asked, self._redis.smismember(self._set, asked), strict=True) if known]
        with self._redis.pipeline(transaction=False) as pipe:
            for device in devices:
                pipe.hgetall(self._prefix + device)
            states = pipe.execute()
        pairs = zip(devices, states, strict=True)
        return [device_json(_device_state(device, as_texts(state))) for device, state in pairs]


def as_text(value: bytes | str) -> str:
    """redis-py's types allow bytes; with decode_responses=True it is always str."""
    return value.decode() if isinstance(value, bytes) else value


def as_texts(mapping: dict[Any, Any]) -> dict[str, str]:
    return {as_text(key): as_text(value) for key, value in mapping.items()}


def _opt(value: object) -> str:
    return "" if value is None else str(value)


def _device_state(device: str, state: dict[str, str]) -> DeviceState:
    """A device's Redis hash as the DeviceState the memory registry would hold."""
    online = state.get("online")
    health = None
    if state.get("health"):
        try:
            health = parse_health(state["health"].encode())
        except RejectedMessage:  # written by an older bridge in another form: not shown
            health = None
    return DeviceState(
        device=device,
        online=None if online is None else online == "1",
        last_seen_ms=float(state["last_seen"]) if "last_seen" in state else None,
        latest={key[2:]: float(value) for key, value in state.items() if key.startswith("m:")},
        seq=int(state["seq"]) if state.get("seq") else None,
        sensor=state.get("sensor") or None,
        location=state.get("location") or None,
        health=health,
    )


class RedisRejectionLog(RejectionLog):
    """RejectionLog with the counts and the latest rejections in Redis (logging stays local)."""

    def __init__(self, client: redis.Redis, namespace: str, keep: int = 100) -> None:
        super().__init__(keep)
        self._redis = client
        self._keep = keep
        self._counts_key = f"{namespace}:rejections:counts"
        self._latest_key = f"{namespace}:rejections:latest"
        self._quiet = _Quiet()

    def _store(self, rejection: Rejection) -> None:
        with self._quiet, self._redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(self._counts_key, rejection.reason, 1)
            pipe.lpush(self._latest_key, json.dumps(asdict(rejection)))
            pipe.ltrim(self._latest_key, 0, self._keep - 1)
            pipe.execute()

    def counts(self) -> dict[str, int]:
        return {reason: int(n) for reason, n in as_texts(self._redis.hgetall(self._counts_key)).items()}

    def latest(self) -> list[dict[str, object]]:
        return [json.loads(item) for item in self._redis.lrange(self._latest_key, 0, self._keep - 1)]


class RedisEndedSessions:
    """Signed-out sessions in Redis, each key expiring with the cookie it ends: every bridge
    refuses a signed-out cookie, also after a restart (webui.access.EndedSessions)."""

    def __init__(self, client: redis.Redis, namespace: str, lifetime_s: int) -> None:
        self._redis = client
        self._prefix = f"{namespace}:ended-session:"
        self._lifetime_s = lifetime_s

    def end(self, sid: str) -> None:
        self._redis.set(self._prefix + sid, "1", ex=self._lifetime_s)

    def ended(self, sid: str) -> bool:
        # Redis down: refuse rather than let an ended session in (/healthz says Redis is down).
        try:
            return bool(self._redis.exists(self._prefix + sid))
        except redis.RedisError:
            return True


class SharedTotals:
    """Every replica's pipeline totals in one Redis hash each; `totals()` adds them up."""

    def __init__(self, client: redis.Redis, namespace: str, replica: str, local: Callable[[], dict[str, int]]) -> None:
        self._redis = client
        self._pattern = f"{namespace}:pipeline:*"
        self._key = f"{namespace}:pipeline:{replica}"
        self._local = local
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish_loop, name="shared-totals", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def totals(self) -> dict[str, int]:
        self.publish()
        summed: dict[str, int] = {}
        for key in self._redis.scan_iter(self._pattern):
            for name, value in as_texts(self._redis.hgetall(key)).items():
                summed[name] = summed.get(name, 0) + int(value)
        return summed

    def publish(self) -> None:
        fields: dict[Any, Any] = dict(self._local())  # redis-py's Mapping type is invariant in its keys
        self._redis.hset(self._key, mapping=fields)

    def _publish_loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.publish()
            except redis.RedisError as exc:
                log.warning("could not share the pipeline totals: %s", exc)
