"""The publisher's heartbeat: a small file beside its outbox, rewritten while it samples, and
the check that reads it (`python -m publisher.check`, for Docker's and systemd's health
checks, which cannot see inside the process).

The time in it is CLOCK_MONOTONIC, the same for every process of a machine (or container)
and untouched when NTP sets the wall clock at boot: a Pi without a real-time clock would
otherwise look hours stale, or fresh for ever.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

EVERY_S = 1.0  # at most this often (a 10 ms interval must not mean 100 file writes a second)
STALE_AFTER_MIN_S = 10.0  # a heartbeat older than 3 intervals, and than this, is a stalled publisher


def heartbeat_path(outbox: Path) -> Path:
    return outbox.with_name(f"{outbox.stem}.alive")


@dataclass
class Heartbeat:
    path: Path
    interval_s: float
    _last: float = float("-inf")

    def beat(self, connected: bool, outbox_depth: Callable[[], int]) -> None:
        """After a sampling slot: write it (atomically) unless one was written within EVERY_S."""
        now = time.monotonic()
        if now - self._last < EVERY_S:
            return
        self._last = now
        body = {"monotonic": now, "interval_s": self.interval_s, "connected": connected, "outbox_depth": outbox_depth()}
        partial = self.path.with_name(self.path.name + ".new")
        partial.write_text(json.dumps(body))
        os.replace(partial, self.path)


def verdict(path: Path) -> tuple[bool, str]:
    """(alive, one line saying so or why not) from the heartbeat file."""
    try:
        body = json.loads(path.read_text())
        age = time.monotonic() - float(body["monotonic"])
        interval = float(body["interval_s"])
    except FileNotFoundError:
        return False, f"no heartbeat yet ({path}): the publisher has not sampled"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"unreadable heartbeat {path}: {exc}"
    limit = max(3 * interval, STALE_AFTER_MIN_S)
    if age > limit:
        return False, f"no heartbeat for {age:.0f} s (more than {limit:.0f} s): the publisher is stalled or gone"
    broker = "connected to the broker" if body.get("connected") else "not connected to the broker (readings wait)"
    return True, f"alive: sampled {age:.1f} s ago, {broker}, {body.get('outbox_depth')} in the outbox"
