"""docs/contract.md is the contract users read: every rejection reason the code can give,
every route the web app serves and every Socket.IO event is written there, and the other
way round (a reason the text names is one the code gives)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = (ROOT / "docs" / "contract.md").read_text()


def sources(*folders: str) -> str:
    return "\n".join(path.read_text() for folder in folders for path in sorted((ROOT / folder).rglob("*.py")))


def test_every_rejection_reason_of_the_code_is_in_the_contract_and_no_other() -> None:
    code = sources("common", "bridge")
    # RejectedMessage("reason", ...), also as `reason or "default"` in common.reading.decode_object
    given = set(re.findall(r'RejectedMessage\(\s*(?:reason or )?(?:exc\.reason|"([a-z_]+)")', code)) - {""}
    given |= set(re.findall(r'reason or "([a-z_]+)"', code))
    assert {"not_json", "retained", "unreadable", "influx_refused", "bad_health"} <= given  # the scan works
    table = CONTRACT.split("### Rejection reasons", 1)[1].split("\n## ", 1)[0]
    written = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE))
    assert given == written, f"in the code only: {given - written}; in the contract only: {written - given}"


def test_every_route_is_in_the_contract() -> None:
    routes = re.findall(r'@\w+\.(get|post|put|delete)\("([^"]+)"\)', sources("webui"))
    assert len(routes) >= 10
    for method, path in routes:
        assert (
            re.search(rf"{method.upper()} [^|]*`?{re.escape(path)}", CONTRACT)
            or f"`{method.upper()} {path}" in CONTRACT
        ), (
            method,
            path,
        )


def test_every_socketio_event_is_in_the_contract() -> None:
    live = (ROOT / "webui" / "live.py").read_text()
    handled = set(re.findall(r'on_event\("([a-z_]+)"', live)) - {"connect", "disconnect"}
    emitted = set(re.findall(r'emit\(\s*"([a-z_]+)"', live))
    assert {"subscribe", "replay"} <= handled and {"readings", "status", "health"} <= emitted
    table = CONTRACT.split("### Socket.IO", 1)[1].split("\n## ", 1)[0]
    for event in handled | emitted:
        assert f"| `{event}` |" in table, event


def test_the_readme_points_to_the_contract() -> None:
    assert "docs/contract.md" in (ROOT / "README.md").read_text()
