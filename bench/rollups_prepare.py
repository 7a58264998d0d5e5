"""The bridge's own cost of the rollups: `Rollups.prepare` alone, per reading.

    .venv/bin/python bench/rollups_prepare.py [--devices 100] [--batches 185] [--batch 540]

Batches as a backlog drain gives them (`bench/ingest.py`: every batch holds a few readings of
each device, all in the same minute and hour), prepared and committed as the store does for
a bridge that is the only writer (its buckets remembered, so no InfluxDB is needed: the read
back of a bucket it does not know answers empty). Prints the CPU time per reading (median
of 5 runs, `time.process_time`), the lines per batch, and the command to reproduce.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.rollups import HOUR_US, Rollups  # noqa: E402
from common.reading import Reading, now_us  # noqa: E402


class NothingStored:
    """Stands in for InfluxDB's read back: no bucket holds anything yet (the drain's start)."""

    def query_many(self, statements: list[str], epoch: str = "u") -> list[list[Any]]:
        return [[] for _ in statements]


def batches(devices: int, count: int, size: int) -> list[list[Reading]]:
    start = now_us() - now_us() % HOUR_US
    made, n = [], 0
    for _ in range(count):
        batch = []
        for _ in range(size):
            metrics = {"temperature": 21.5 + (n % 7) / 10, "humidity": 40.0 + n % 3}
            batch.append(Reading(f"dev-{n % devices:03d}", start + n * 1200, metrics, n))
            n += 1
        made.append(batch)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--batches", type=int, default=185)
    parser.add_argument("--batch", type=int, default=540)
    args = parser.parse_args()
    runs, lines = [], 0
    for _ in range(5):
        rollups = Rollups(NothingStored(), "environment", exclusive=True)  # type: ignore[arg-type]
        work = batches(args.devices, args.batches, args.batch)
        started = time.process_time()
        lines = 0
        for batch in work:
            prepared = rollups.prepare(batch)
            prepared.commit()
            lines += len(prepared.lines)
        runs.append((time.process_time() - started) / (args.batches * args.batch) * 1e6)
    print(
        f"Rollups.prepare: {statistics.median(runs):.2f} µs of CPU per reading, median of 5 "
        f"({min(runs):.2f}-{max(runs):.2f}); {lines / args.batches:.0f} rollup lines per batch of {args.batch}"
    )
    print(
        f"reproduce: .venv/bin/python bench/rollups_prepare.py --devices {args.devices} "
        f"--batches {args.batches} --batch {args.batch}"
    )


if __name__ == "__main__":
    main()
