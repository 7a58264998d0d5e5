"""`python -m bridge accounts ...`: the dashboard's named accounts, from the machine itself.

    python -m bridge accounts list
    python -m bridge accounts add NAME viewer|operator|admin    (the password: asked, or one line on stdin)
    python -m bridge accounts role NAME ROLE
    python -m bridge accounts password NAME
    python -m bridge accounts remove NAME
    python -m bridge audit verify | list       (the audit log: webui/audit.py)

The file is SENSORPIPE_ACCOUNTS_DB (or --db), as the bridge has it: run it as the user the
bridge runs as (sudo -u sensorpipe) so the file stays theirs. A running bridge sees changes
at once: a removed account's sessions end, a changed role applies to the next request.
Exit status 2 with one line for a bad name, role or password, or an unknown account.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from common.settings import parse_path, state_folder
from webui.accounts import ROLES, AccountError, AccountStore
from webui.audit import AuditLog


def _password(prompt: str) -> str:
    """Asked twice at a terminal; else the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"{prompt}: ")
        if getpass.getpass("again: ") != first:
            raise AccountError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def _path(given: str | None, environ: Mapping[str, str]) -> Path:
    """The accounts file: --db, else SENSORPIPE_ACCOUNTS_DB as the bridge reads it (`~`
    expanded), else the bridge's default. ValueError for a ~user without a home."""
    raw = given or environ.get("SENSORPIPE_ACCOUNTS_DB", "")
    return parse_path(raw) if raw else state_folder(environ) / "accounts.sqlite"


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge accounts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="the accounts file (default: SENSORPIPE_ACCOUNTS_DB, or the bridge's)")
    steps = parser.add_subparsers(dest="step", required=True)
    steps.add_parser("list")
    add = steps.add_parser("add")
    add.add_argument("name")
    add.add_argument("role", choices=ROLES)
    role = steps.add_parser("role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    for step in ("password", "remove"):
        steps.add_parser(step).add_argument("name")
    args = parser.parse_args(argv)
    try:
        path = _path(args.db, environ)
        store = AccountStore(path)
        audit = AuditLog(path)
    except (ValueError, OSError, sqlite3.Error) as exc:  # a folder, another program's file
        print(f"bridge accounts: cannot open the accounts file: {exc}", file=sys.stderr)
        return 2
    who = f"{getpass.getuser()} (command line)"
    try:
        if args.step == "list":
            for account in store.accounts():
                print(f"{account.name}\t{account.role}\t{account.created}")
        elif args.step == "add":
            account = store.add(args.name, args.role, _password(f"password for {args.name}"))
            audit.record(who, "account.added", {"name": account.name, "role": account.role})
            print(f"added {account.name} ({account.role}) to {path}")
        elif args.step == "role":
            store.set_role(args.name, args.role)
            audit.record(who, "account.role", {"name": args.name, "role": args.role})
            print(f"{args.name} is {args.role} now")
        elif args.step == "password":
            store.set_password(args.name, _password(f"new password for {args.name}"))
            audit.record(who, "account.password", {"name": args.name})
            print(f"{args.name} has a new password")
        else:
            store.remove(args.name)
            audit.record(who, "account.removed", {"name": args.name})
            print(f"removed {args.name}")
    except (AccountError, sqlite3.Error) as exc:  # sqlite3: locked by a bridge for too long, disk full
        print(f"bridge accounts: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
        audit.close()
    return 0


def audit_main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """`python -m bridge audit verify` (exit status 1 when the chain is broken) or `list`."""
    parser = argparse.ArgumentParser(prog="python -m bridge audit", description="The audit log of who changed what.")
    parser.add_argument("--db", help="the accounts file (default: SENSORPIPE_ACCOUNTS_DB, or the bridge's)")
    parser.add_argument("step", choices=["verify", "list"])
    args = parser.parse_args(argv)
    try:
        path = _path(args.db, environ)
        if not path.is_file():
            print(f"bridge audit: no accounts file {path}", file=sys.stderr)
            return 2
        log = AuditLog(path)
    except (ValueError, OSError, sqlite3.Error) as exc:
        print(f"bridge audit: cannot open the accounts file: {exc}", file=sys.stderr)
        return 2
    try:
        if args.step == "list":
            for entry in log.entries():
                print(f"{entry.n}\t{entry.at}\t{entry.who}\t{entry.action}\t{json.dumps(entry.detail)}")
            return 0
        verdict = log.verify()
        if verdict.broken_at is not None:
            print(f"bridge audit: BROKEN at entry {verdict.broken_at}: {verdict.reason}", file=sys.stderr)
            return 1
        print(f"{verdict.entries} entries, newest hash {verdict.head}: the chain holds")
        return 0
    finally:
        log.close()
