"""Manage who may use the shipped Mosquitto: devices, readers, the bridge.

    scripts/broker-user add greenhouse            # a device: writes only sensors/greenhouse/...
    scripts/broker-user add grafana --reader      # reads every device's topics, writes nothing
    scripts/broker-user add-bridge                # the bridge's account (sensorpipe-bridge)
    scripts/broker-user add-bridge --second       # a second bridge's (sensorpipe-bridge-b)
    scripts/broker-user add-health                # the container health check's account
    scripts/broker-user remove greenhouse
    scripts/broker-user list

Writes `passwd` (Mosquitto's PBKDF2-SHA512 hashes, the format mosquitto_passwd writes) and
`acl` (acl.base plus one block per reader) in the broker's config folder, then asks the
broker to reread them (SIGHUP: through docker compose, systemd or a pid). Passwords are
generated (24 random characters) unless --password is given, and printed once: with the
settings to put on the device. Needs only Python's standard library (and this repository's
common/, for the device id rule and the topic prefix, which it shares with the programs).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common.topics import DEFAULT_PREFIX, DEVICE_ID

ROOT = Path(__file__).resolve().parent.parent
BRIDGE_USER = "sensorpipe-bridge"
SECOND_BRIDGE_USER = "sensorpipe-bridge-b"  # when two bridges share the work (docs/scaling.md)
HEALTH_USER = "sensorpipe-health"
READERS_MARK = "# --- readers, written by scripts/broker-user ---"
ITERATIONS = 101  # mosquitto_passwd's own default; passwords are random, not guessable words


class UsageError(Exception):
    """A wrong request: one line, exit status 2."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    """Mosquitto 2.0's `$7$` format: PBKDF2-HMAC-SHA512, 12 bytes of salt, base64."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verifies(hashed: str | None, password: str | None) -> bool:
    """Whether a `$7$` hash (as hash_password writes) is of this password."""
    if not hashed or not password or not hashed.startswith("$7$"):
        return False
    _, _, _iterations, salt, _digest = hashed.split("$")
    return hash_password(password, base64.b64decode(salt)) == hashed


def new_password() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(24))


def read_users(passwd: Path) -> dict[str, str]:
    if not passwd.exists():
        return {}
    users = {}
    for line in passwd.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, hashed = line.partition(":")
            users[name] = hashed
    return users


def read_readers(acl: Path) -> list[str]:
    if not acl.exists() or READERS_MARK not in acl.read_text():
        return []
    block = acl.read_text().split(READERS_MARK, 1)[1]
    return [line.split(" ", 1)[1] for line in block.splitlines() if line.startswith("user ")]


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    # The broker reads these as its own unprivileged user (uid 1883 in the container): they
    # hold only hashes, no passwords.
    tmp.chmod(0o644)
    tmp.replace(path)


def save(folder: Path, users: dict[str, str], readers: list[str]) -> None:
    write_atomically(folder / "passwd", "".join(f"{name}:{hashed}\n" for name, hashed in sorted(users.items())))
    base = (folder / "acl.base").read_text()
    blocks = "".join(f"\nuser {name}\ntopic read {DEFAULT_PREFIX}/#\n" for name in sorted(readers))
    write_atomically(folder / "acl", f"{base.rstrip()}\n\n{READERS_MARK}\n{blocks}")


def reload_broker(how: str, folder: Path) -> str:
    """Ask the running broker to reread passwd and acl; says what it did."""
    if how == "none":
        return "not reloaded (--reload none): send the broker SIGHUP to apply"
    if how.startswith("pid:"):
        os.kill(int(how[4:]), signal.SIGHUP)
        return f"reloaded (SIGHUP to pid {how[4:]})"
    if how in {"auto", "compose"} and shutil.which("docker"):
        running = subprocess.run(
            ["docker", "compose", "ps", "-q", "mosquitto"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        if running.returncode == 0 and running.stdout.strip():
            subprocess.run(["docker", "compose", "kill", "-s", "SIGHUP", "mosquitto"], cwd=ROOT, check=True)
            return "reloaded (docker compose kill -s SIGHUP mosquitto)"
    if how in {"auto", "systemd"} and shutil.which("systemctl"):
        active = subprocess.run(["systemctl", "is-active", "--quiet", "mosquitto"], check=False)
        if active.returncode == 0:
            subprocess.run(["systemctl", "reload", "mosquitto"], check=True)
            return "reloaded (systemctl reload mosquitto)"
    if how != "auto":
        raise UsageError(f"could not reload the broker by {how}")
    return "no running broker found to reload: it reads the files when it starts (or send it SIGHUP)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker-user", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=ROOT / "mosquitto", help="the broker's config folder")
    parser.add_argument("--reload", default="auto", help="auto, compose, systemd, pid:N or none (default auto)")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("add", "add-bridge", "add-health"):
        command = commands.add_parser(name)
        if name == "add":
            command.add_argument("name", help="the device id (or the reader's name with --reader)")
            command.add_argument("--reader", action="store_true", help="read-only access to every device")
        if name == "add-bridge":
            command.add_argument("--second", action="store_true", help="the second bridge's account")
        command.add_argument("--password", help="use this password instead of a generated one")
        command.add_argument("--host", default=socket.gethostname(), help="broker host name for the printed URL")
        command.add_argument("--port", type=int, default=1883, help="broker port for the printed URL")
        command.add_argument("--url-only", action="store_true", help="print only the MQTT URL (for scripts)")
    commands.add_parser("remove").add_argument("name")
    commands.add_parser("list")
    return parser


def add_account(folder: Path, name: str, *, reader: bool = False, password: str | None = None) -> str:
    """Create (or give a new password to) an account; returns its password. Not reloaded."""
    if not DEVICE_ID.fullmatch(name):
        raise UsageError(f"{name!r}: a user name is 1 to 64 of A-Z a-z 0-9 _ . - starting with a letter or digit")
    users = read_users(folder / "passwd")
    password = password or new_password()
    users[name] = hash_password(password)
    readers = [r for r in read_readers(folder / "acl") if r != name] + ([name] if reader else [])
    save(folder, users, readers)
    return password


def account_url(name: str, password: str, host: str, port: int) -> str:
    return f"mqtt://{quote(name, safe='')}:{quote(password, safe='')}@{host}:{port}"


def add(args: argparse.Namespace, folder: Path) -> None:
    if args.command == "add-bridge":
        name = SECOND_BRIDGE_USER if args.second else BRIDGE_USER
    else:
        name = HEALTH_USER if args.command == "add-health" else args.name
    reader = args.command == "add" and args.reader
    if args.command == "add" and name in {BRIDGE_USER, SECOND_BRIDGE_USER, HEALTH_USER}:
        raise UsageError(f"{name} is reserved: use add-bridge or add-health")
    password = add_account(folder, name, reader=reader, password=args.password)
    done = reload_broker(args.reload, folder)
    url = account_url(name, password, args.host, args.port)
    if args.url_only:
        print(url)
        return
    print(f"added {name}; {done}")
    if args.command == "add" and not reader:
        print(f"on the Pi:  sudo scripts/install-pi.sh --device {name} --broker {url}")
        print(f"or set:     SENSORPIPE_DEVICE={name} SENSORPIPE_MQTT_URL={url}")
    else:
        print(f"its URL:    {url}")
    print("the password is shown only now")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    folder: Path = args.dir
    if not (folder / "acl.base").exists():
        raise UsageError(f"{folder} has no acl.base: is it sensorpipe's mosquitto/ folder?")
    users = read_users(folder / "passwd")
    readers = read_readers(folder / "acl")
    if args.command == "list":
        roles = {BRIDGE_USER: "bridge", SECOND_BRIDGE_USER: "bridge", HEALTH_USER: "health check"}
        for name in sorted(users):
            print(f"{name}\t{roles.get(name, 'reader' if name in readers else 'device')}")
    elif args.command == "remove":
        if args.name not in users:
            raise UsageError(f"no user {args.name!r}")
        del users[args.name]
        save(folder, users, [r for r in readers if r != args.name])
        print(f"removed {args.name}; {reload_broker(args.reload, folder)}")
    else:
        add(args, folder)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UsageError as exc:
        print(f"broker-user: {exc}", file=sys.stderr)
        sys.exit(2)
