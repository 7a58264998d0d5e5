"""The audit log (webui/audit.py): who changed what, through a real bridge and the real
commands, and a tampered entry found by `python -m bridge audit verify` and on the report."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import requests

from tests.conftest import BridgeProcess, Mqtt, run_program
from tests.test_accounts import accounts, guarded, signed_in  # noqa: F401 (guarded: the fixture)
from tests.waiting import wait_until


def audit(db: Path, step: str) -> subprocess.CompletedProcess[str]:
    return run_program("bridge", "audit", "--db", str(db), step)


def test_changes_are_recorded_with_who_made_them_and_tampering_is_found(
    guarded: tuple[BridgeProcess, Path],  # noqa: F811
    mqtt_client: Mqtt,
    prefix: str,
) -> None:
    bridge, db = guarded
    ada = signed_in(bridge, "ada")
    rule = {"id": "frost", "devices": ["cold"], "metric": "temperature", "below": 0}
    assert ada.post(bridge.url + "/api/rules", json=rule, timeout=10).status_code == 201
    assert ada.put(bridge.url + "/api/rules/frost", json={**rule, "below": 1}, timeout=10).status_code == 200
    assert ada.delete(bridge.url + "/api/rules/frost", timeout=10).status_code == 200
    body = {"name": "newbie", "role": "viewer", "password": "a-long-password"}
    assert ada.post(bridge.url + "/api/accounts", json=body, timeout=10).status_code == 201
    assert accounts(db, "remove", "newbie").returncode == 0

    listed = audit(db, "list").stdout.splitlines()
    actions = [(line.split("\t")[2], line.split("\t")[3]) for line in listed]
    made_by_command = [who for who, action in actions[:3]]
    assert all(who.endswith("(command line)") for who in made_by_command)  # the fixture's three accounts
    assert actions[3:] == [
        ("ada", "rule.created"),
        ("ada", "rule.changed"),
        ("ada", "rule.deleted"),
        ("ada", "account.added"),
        (actions[-1][0], "account.removed"),
    ]
    verified = audit(db, "verify")
    assert verified.returncode == 0 and verified.stdout.startswith(f"{len(listed)} entries, newest hash ")
    assert "the chain holds" in verified.stdout

    mqtt_client.publish(f"{prefix}/cold/reading", {"temperature": 4.0})
    wait_until(lambda: ada.get(bridge.url + "/api/devices", timeout=10).json(), 20, "the device known")
    report = ada.get(bridge.url + "/api/report?device=cold", timeout=30).json()
    assert [e["action"] for e in report["audit"]["entries"]][-5:] == [a for _, a in actions[-5:]]
    assert report["audit"]["chain"]["broken_at"] is None

    with sqlite3.connect(db) as database:  # someone makes the rule's change look smaller
        database.execute("UPDATE audit SET detail = replace(detail, '1', '0') WHERE action = 'rule.changed'")
    broken = audit(db, "verify")
    changed = next(n for n, line in enumerate(listed, start=1) if "rule.changed" in line)
    assert broken.returncode == 1
    assert (
        broken.stderr.strip()
        == f"bridge audit: BROKEN at entry {changed}: entry {changed} was changed after it was written"
    )
    page = ada.get(bridge.url + "/report?device=cold", timeout=30).text
    assert f"BROKEN at entry {changed}" in page

    with sqlite3.connect(db) as database:
        database.execute("DELETE FROM audit WHERE n < ?", (changed,))
    gone = audit(db, "verify")
    assert gone.returncode == 1 and "entry 1 is missing" in gone.stderr
    assert requests.get(bridge.url + "/healthz", timeout=10).ok
