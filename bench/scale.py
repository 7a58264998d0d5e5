"""Draining a backlog with one bridge and with two sharing the work, on this machine.

    .venv/bin/python bench/scale.py [--readings 100000] [--devices 100]

Starts a private Mosquitto, InfluxDB 1.6.7 and Redis. For one and then two replicas: each
replica's persistent session joins the shared subscription `$share/<group>/...` and goes
away; the backlog is published (QoS 1) and Mosquitto deals it out between the sessions; then
the replicas (real `python -m bridge` processes with SENSORPIPE_SHARE_GROUP and
SENSORPIPE_REDIS_URL) start together and the clock runs from the first stored reading until
InfluxDB holds them all. Prints both rates and their ratio. On a 2-core machine that also
runs the broker, InfluxDB and Redis, a second replica has little room to add anything: the
figure says how much the split costs or gains here, not what more cores would give.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.loadgen import join_session, publish_backlog, start_bridge, stored_count  # noqa: E402
from devstack.servers import Server, private_stack  # noqa: E402


def drain(replicas: int, broker: Server, influx_url: str, redis_port: int, args: argparse.Namespace) -> float:
    """Readings per second `replicas` bridges store the backlog at."""
    prefix, database = f"scale{replicas}", f"scale{replicas}"
    group = f"group{replicas}"
    ids = [f"bench-{prefix}-{i}" for i in range(replicas)]
    for client_id in ids:
        join_session(broker.port, client_id, f"$share/{group}/{prefix}/+/reading")
    publish_backlog(broker.port, prefix, args.readings, args.devices)
    bridges = []
    with tempfile.TemporaryDirectory() as logs:
        for client_id in ids:
            settings = {
                "SENSORPIPE_MQTT_CLIENT_ID": client_id,
                "SENSORPIPE_SHARE_GROUP": group,
                "SENSORPIPE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "SENSORPIPE_INFLUX_DB": database,
            }
            bridges.append(start_bridge(broker.port, influx_url, prefix, Path(logs) / f"{client_id}.log", settings)[0])
        try:
            first: tuple[float, int] | None = None
            started = time.monotonic()
            while (count := stored_count(influx_url, database)) < args.readings:
                if time.monotonic() - started > 900:
                    raise RuntimeError(f"{replicas} replica(s) stored {count} of {args.readings} in 900 s")
                if first is None and count:
                    first = (time.monotonic(), count)
                time.sleep(0.1)
            assert first is not None
            total: int = args.readings
            elapsed: float = (time.monotonic() - first[0]) * total / (total - first[1])
        finally:
            for bridge in bridges:
                bridge.terminate()
                bridge.wait(30)
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, private_stack(Path(folder), with_redis=True) as stack:
        assert stack.redis is not None
        one = drain(1, stack.broker, stack.influx_url, stack.redis.port, args)
        print(f"one bridge:   {one:,.0f} readings/s ({args.readings:,} readings from {args.devices} devices)")
        two = drain(2, stack.broker, stack.influx_url, stack.redis.port, args)
        print(f"two bridges:  {two:,.0f} readings/s")
        print(f"ratio two/one: {two / one:.2f} (on {os.cpu_count()} cores shared with broker, InfluxDB and Redis)")
    print(f"reproduce: .venv/bin/python bench/scale.py --readings {args.readings} --devices {args.devices}")


if __name__ == "__main__":
    main()
