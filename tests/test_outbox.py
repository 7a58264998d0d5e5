"""The publisher's outbox on a real SQLite file: order, seq across restarts, the size bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.reading import Reading
from publisher.outbox import Outbox, OutboxError


def reading(seq: int, temperature: float = 20.0) -> Reading:
    return Reading(device="desk", ts_us=1_800_000_000_000_000 + seq, metrics={"temperature": temperature}, seq=seq)


def fill(outbox: Outbox, n: int) -> list[Reading]:
    return [outbox.add(reading) for _ in range(n)]


def test_entries_come_out_in_seq_order_as_stored(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", "desk", 100)
    stored = fill(outbox, 5)
    entries = outbox.after(-1, 10)
    assert [e.seq for e in entries] == [0, 1, 2, 3, 4]
    assert [json.loads(e.payload)["seq"] for e in entries] == [r.seq for r in stored]
    assert [e.seq for e in outbox.after(2, 10)] == [3, 4]
    assert [e.seq for e in outbox.after(-1, 2)] == [0, 1]


def test_removed_entries_are_gone_and_depth_follows(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite", "desk", 100)
    fill(outbox, 5)
    outbox.remove([0, 1, 3])
    outbox.remove([3, 99])  # already gone or never there: no harm
    assert [e.seq for e in outbox.after(-1, 10)] == [2, 4]
    assert outbox.depth == 2


def test_seq_and_backlog_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    outbox = Outbox(path, "desk", 100)
    fill(outbox, 3)
    outbox.remove([0, 1, 2])  # all acknowledged: the outbox is empty, seq must still go on
    fill(outbox, 2)
    outbox.close()
    again = Outbox(path, "desk", 100)
    assert again.depth == 2
    assert [e.seq for e in again.after(-1, 10)] == [3, 4]
    assert again.add(reading).seq == 5


def test_a_full_outbox_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    outbox = Outbox(path, "desk", 3)
    fill(outbox, 5)
    assert [e.seq for e in outbox.after(-1, 10)] == [2, 3, 4]
    assert (outbox.depth, outbox.dropped) == (3, 2)
    outbox.close()
    assert Outbox(path, "desk", 3).dropped == 2  # the count is kept on disk, for health


def test_another_devices_outbox_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    Outbox(path, "desk", 10).close()
    with pytest.raises(OutboxError, match="'desk', not 'porch'"):
        Outbox(path, "porch", 10)


def test_an_unusable_path_fails_at_open(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OutboxError, match="cannot use"):
        Outbox(tmp_path / "file" / "o.sqlite", "desk", 10)
    (tmp_path / "garbage.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(OutboxError, match="cannot use"):
        Outbox(tmp_path / "garbage.sqlite", "desk", 10)
