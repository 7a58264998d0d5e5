"""Named accounts with roles (webui/accounts.py, webui/access.py): every guarded route tried
with each role through a real bridge, the accounts made with the real command
(`python -m bridge accounts`), an acknowledgement recorded under the account's name, a
removed account's session ended, the last admin kept, and the accounts page in Chromium."""

from __future__ import annotations

import csv
import io
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from common.reading import format_ts, now_us
from tests.conftest import BridgeProcess, Mqtt, run_program
from tests.waiting import wait_until

PASSWORDS = {"vera": "viewer-pass-1", "otto": "operator-pass-2", "ada": "admin-pass-3"}
ROLES = {"vera": "viewer", "otto": "operator", "ada": "admin"}
RULES = '[[rule]]\nid = "warm"\ndevices = ["cold"]\nmetric = "temperature"\nabove = 8.0\n'


def accounts(db: Path, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_program(
        "bridge", "accounts", "--db", str(db), *args, input=None if password is None else password + "\n"
    )


@pytest.fixture
def guarded(start_bridge: Callable[..., BridgeProcess], tmp_path: Path) -> tuple[BridgeProcess, Path]:
    db = tmp_path / "accounts.sqlite"
    for name, role in ROLES.items():
        made = accounts(db, "add", name, role, password=PASSWORDS[name])
        assert made.returncode == 0, made.stderr
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    return start_bridge(SENSORPIPE_ACCOUNTS_DB=str(db), SENSORPIPE_ALERT_RULES=str(rules)), db


def signed_in(bridge: BridgeProcess, name: str) -> requests.Session:
    session = requests.Session()
    answer = session.post(
        bridge.url + "/login", data={"name": name, "password": PASSWORDS[name], "next": "/"}, allow_redirects=False
    )
    assert answer.status_code == 302, answer.text
    return session


ROUTES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", "/", None, "viewer"),
    ("GET", "/device/cold", None, "viewer"),
    ("GET", "/alerts", None, "viewer"),
    ("GET", "/report?device=cold", None, "viewer"),
    ("GET", "/api/devices", None, "viewer"),
    ("GET", "/api/alerts", None, "viewer"),
    ("GET", "/api/rules", None, "viewer"),
    ("GET", "/api/report?device=cold", None, "viewer"),
    ("POST", "/api/alerts/nothing-here/ack", {"by": "x", "comment": ""}, "operator"),
    ("POST", "/api/rules", {"id": "frost", "devices": ["cold"], "metric": "temperature", "below": 0}, "admin"),
    ("PUT", "/api/rules/frost", {"id": "frost", "devices": ["cold"], "metric": "temperature", "below": 1}, "admin"),
    ("DELETE", "/api/rules/frost", None, "admin"),
    ("GET", "/accounts", None, "admin"),
    ("GET", "/api/accounts", None, "admin"),
    ("POST", "/api/accounts", {"name": "newbie", "role": "viewer", "password": "a-long-password"}, "admin"),
    ("PUT", "/api/accounts/newbie", {"role": "operator"}, "admin"),
    ("DELETE", "/api/accounts/newbie", None, "admin"),
]
ORDER = ("viewer", "operator", "admin")


def test_every_route_with_every_role(guarded: tuple[BridgeProcess, Path], mqtt_client: Mqtt, prefix: str) -> None:
    bridge, _ = guarded
    mqtt_client.publish(f"{prefix}/cold/reading", {"temperature": 4.0})
    wait_until(lambda: requests.get(bridge.url + "/healthz", timeout=10).ok, 20, "the bridge healthy")
    for name, role in ROLES.items():
        session = signed_in(bridge, name)
        for method, path, body, needed in ROUTES:
            answer = session.request(method, bridge.url + path, json=body, allow_redirects=False, timeout=30)
            if ORDER.index(role) < ORDER.index(needed):
                assert answer.status_code == 403, (name, method, path, answer.status_code)
                assert f"needs the {needed} role" in answer.json()["error"]
            else:
                assert answer.status_code not in (401, 403), (name, method, path, answer.status_code, answer.text)
    anonymous = requests.get(bridge.url + "/api/devices", timeout=10)
    assert anonymous.status_code == 401  # an account exists: sign-in is on, no password set


def test_an_acknowledgement_is_the_accounts_and_a_removed_account_is_signed_out(
    guarded: tuple[BridgeProcess, Path], mqtt_client: Mqtt, prefix: str
) -> None:
    bridge, db = guarded
    otto = signed_in(bridge, "otto")
    mqtt_client.publish(f"{prefix}/cold/reading", {"ts": format_ts(now_us() - 1_000_000), "temperature": 9.0})
    wait_until(lambda: otto.get(bridge.url + "/api/alerts", timeout=10).json()["alerts"], 20, "the alert firing")
    [alert] = otto.get(bridge.url + "/api/alerts", timeout=10).json()["alerts"]
    answer = otto.post(
        f"{bridge.url}/api/alerts/{alert['id']}/ack", json={"by": "someone else", "comment": "door shut"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    history = otto.get(bridge.url + "/api/alerts/history?since=1h", timeout=10).json()["history"]
    acknowledged = [entry for entry in history if entry["state"] == "acknowledged"]
    assert acknowledged and acknowledged[0]["by"] == "otto" and acknowledged[0]["comment"] == "door shut"

    removed = accounts(db, "remove", "otto")
    assert removed.returncode == 0, removed.stderr
    assert otto.get(bridge.url + "/api/devices", timeout=10).status_code == 401  # at once, same cookie
    demoted = accounts(db, "role", "vera", "admin")  # a role change applies to the next request
    assert demoted.returncode == 0
    assert signed_in(bridge, "vera").get(bridge.url + "/api/accounts", timeout=10).status_code == 200


def test_the_last_admin_stays_and_bad_accounts_are_refused(guarded: tuple[BridgeProcess, Path]) -> None:
    bridge, db = guarded
    ada = signed_in(bridge, "ada")
    answer = ada.delete(bridge.url + "/api/accounts/ada", timeout=10)
    assert answer.status_code == 400 and "the last admin stays" in answer.json()["error"]
    answer = ada.put(bridge.url + "/api/accounts/ada", json={"role": "viewer"}, timeout=10)
    assert answer.status_code == 400 and "the last admin stays" in answer.json()["error"]
    for body, message in (
        ({"name": "Bad Name", "role": "viewer", "password": "a-long-password"}, "a name is"),
        ({"name": "eve", "role": "root", "password": "a-long-password"}, "a role is one of"),
        ({"name": "eve", "role": "viewer", "password": "short"}, "at least 10 characters"),
        ({"name": "vera", "role": "viewer", "password": "a-long-password"}, "already"),
    ):
        answer = ada.post(bridge.url + "/api/accounts", json=body, timeout=10)
        assert answer.status_code == 400 and message in answer.json()["error"], body
    assert ada.delete(bridge.url + "/api/accounts/nobody", timeout=10).status_code == 404
    wrong = requests.post(bridge.url + "/login", data={"name": "ada", "password": "guess-guess"}, timeout=10)
    assert wrong.status_code == 401 and "Wrong name or password" in wrong.text
    cli = accounts(db, "add", "Eve", "viewer", password="a-long-password")
    assert cli.returncode == 2 and cli.stderr.strip().startswith("bridge accounts: a name is")
    assert "ada\tadmin" in accounts(db, "list").stdout


def test_an_admin_signs_in_by_name_and_adds_an_account_on_the_page(
    guarded: tuple[BridgeProcess, Path], page: Any
) -> None:
    bridge, db = guarded
    page.goto(bridge.url + "/accounts")
    page.wait_for_selector("form.login")
    page.fill("#name", "ada")
    page.fill("#password", PASSWORDS["ada"])
    page.click("button[type=submit]")
    page.wait_for_selector('#accounts tr[data-name="vera"]')
    page.fill('#account-form input[name="name"]', "carol")
    page.select_option('#account-form select[name="role"]', "operator")
    page.fill('#account-form input[name="password"]', "carol-password")
    page.click("#account-form button[type=submit]")
    page.wait_for_selector('#accounts tr[data-name="carol"]')
    assert "carol\toperator" in accounts(db, "list").stdout
    page.click('#accounts tr[data-name="carol"] button')
    page.wait_for_selector('#accounts tr[data-name="carol"]', state="detached")
    assert "carol" not in accounts(db, "list").stdout


def test_an_excursion_on_the_report_with_its_peak_and_who_acknowledged_it(
    guarded: tuple[BridgeProcess, Path], mqtt_client: Mqtt, prefix: str
) -> None:
    bridge, _ = guarded
    otto = signed_in(bridge, "otto")
    start = now_us() - 40_000_000

    def reading(offset_s: int, value: float) -> None:
        ts = format_ts(start + offset_s * 1_000_000)
        mqtt_client.publish(f"{prefix}/cold/reading", {"ts": ts, "seq": offset_s, "temperature": value})

    reading(0, 4.0)
    reading(10, 9.0)
    reading(20, 9.5)
    wait_until(lambda: otto.get(bridge.url + "/api/alerts", timeout=10).json()["alerts"], 20, "the alert firing")
    [alert] = otto.get(bridge.url + "/api/alerts", timeout=10).json()["alerts"]
    assert otto.post(f"{bridge.url}/api/alerts/{alert['id']}/ack", json={"comment": "door was open"}, timeout=10).ok
    reading(30, 4.0)
    wait_until(lambda: not otto.get(bridge.url + "/api/alerts", timeout=10).json()["alerts"], 20, "the alert resolved")
    report = otto.get(bridge.url + "/api/report?device=cold", timeout=30).json()
    [excursion] = report["devices"][0]["excursions"]
    assert excursion == {
        "rule": "warm",
        "metric": "temperature",
        "threshold": 8.0,
        "start_ms": (start + 10_000_000) / 1000,
        "end_ms": (start + 30_000_000) / 1000,
        "peak": 9.5,
        "acknowledged_by": "otto",
        "comment": "door was open",
    }
    text = otto.get(bridge.url + "/api/report.csv?device=cold", timeout=30).text
    [row] = [row for row in csv.DictReader(io.StringIO(text)) if row["record"] == "excursion"]
    assert (row["rule"], row["peak"], row["acknowledged_by"], row["comment"]) == (
        "warm",
        "9.5",
        "otto",
        "door was open",
    )


@pytest.mark.parametrize("kind", ["a folder", "not SQLite"])
def test_an_accounts_file_that_cannot_be_opened_is_one_line(tmp_path: Path, kind: str) -> None:
    """The bridge, the accounts command and the audit command each say so in one line, exit
    status 2 (they ended with sqlite3's traceback)."""
    db = tmp_path / "accounts.sqlite"
    if kind == "a folder":
        db.mkdir()
    else:
        db.write_text("these are not the accounts\n")
    unreachable = {"SENSORPIPE_MQTT_URL": "mqtt://127.0.0.1:1", "SENSORPIPE_INFLUX_URL": "http://127.0.0.1:1"}
    for args, env in (
        ([], {**unreachable, "SENSORPIPE_ACCOUNTS_DB": str(db), "SENSORPIPE_ALERT_DB": str(tmp_path / "a.sqlite")}),
        (["accounts", "--db", str(db), "list"], {}),
        (["audit", "--db", str(db), "verify"], {}),
    ):
        result = run_program("bridge", *args, **env)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (args, result.stderr)
        assert str(db) in lines[0] or "accounts file" in lines[0], lines


def test_the_accounts_command_finds_the_file_the_bridge_uses(tmp_path: Path) -> None:
    """SENSORPIPE_ACCOUNTS_DB=~/... is the same file for the command as for the bridge (the
    command took the ~ literally, as a folder named ~ where it was run)."""
    home = tmp_path / "home"
    made = run_program(
        "bridge",
        "accounts",
        "add",
        "ada",
        "admin",
        input="admin-pass-3\n",
        HOME=str(home),
        SENSORPIPE_ACCOUNTS_DB="~/lab/accounts.sqlite",
    )
    assert made.returncode == 0, made.stderr
    assert "ada\tadmin" in accounts(home / "lab" / "accounts.sqlite", "list").stdout
