"""docker compose's `init` service: the stack's secrets and broker accounts, made once.

    python scripts/stack_init.py [--secrets /secrets] [--broker-dir /mosquitto-config]
    python scripts/stack_init.py password      # prints the dashboard's password again

Every service of docker-compose.yml waits for this one-shot service to finish. On the first
start it makes the InfluxDB admin password and token, the dashboard's password and cookie
secret, and the broker accounts' passwords (the bridges, the health check, the simulated
devices), keeps them in the `stack-secrets` volume, adds the accounts to the broker's
`passwd` (this repository's mosquitto/ folder, as scripts/broker-user keeps it), and writes
each service the part it needs, readable by that service's user only:

    bridge.env, bridge-b.env       the bridges' settings (SENSORPIPE_SETTINGS_FILE)
    sim-greenhouse.env, ...        the simulated devices' broker URLs
    influxdb-admin-password, influxdb-token   (DOCKER_INFLUXDB_INIT_*_FILE)
    health-password                the broker's health check

On later starts it makes nothing new: what is in the volume stays (InfluxDB keeps the token
of its first start, so a new one would lock the bridge out). A value set in .env (by
scripts/compose-init, or by hand) is taken instead of a made one, on the first start and
after. Standard library only, and this repository's broker_user.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker_user import (
    BRIDGE_USER,
    HEALTH_USER,
    SECOND_BRIDGE_USER,
    account_url,
    hash_password,
    new_password,
    read_readers,
    read_users,
    save,
    verifies,
)

from common.envfile import quote
from common.settings import read_env_file

BROKER = "mosquitto"  # the broker's name in the compose network
# The users the images run as (docker-compose.yml, the Dockerfile).
SENSORPIPE_UID, INFLUXDB_UID, MOSQUITTO_UID = 10001, 1000, 1883
SIMULATED = ("sim-greenhouse", "sim-coldroom")
# Name in the record and in .env: how a new one is made.
MADE = {
    "INFLUX_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(18),
    "INFLUX_TOKEN": lambda: secrets.token_urlsafe(48),
    "WEB_PASSWORD": lambda: secrets.token_urlsafe(12),
    "WEB_SECRET": lambda: secrets.token_urlsafe(32),
    "MQTT_HEALTH_PASSWORD": new_password,
}
# Broker accounts: the .env variable holding the account's URL, and the account.
ACCOUNTS = {
    "BRIDGE_MQTT_URL": BRIDGE_USER,
    "BRIDGE_B_MQTT_URL": SECOND_BRIDGE_USER,
    "SIM_GREENHOUSE_MQTT_URL": "sim-greenhouse",
    "SIM_COLDROOM_MQTT_URL": "sim-coldroom",
}


def record_path(folder: Path) -> Path:
    return folder / "stack.env"


def decide(recorded: dict[str, str], environ: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Every secret: from .env if set there, else as recorded, else new; and the new ones' names."""
    values, made = {}, []
    for name, make in MADE.items():
        value = environ.get(name) or recorded.get(name)
        if not value:
            value = make()
            made.append(name)
        values[name] = value
    for name, user in ACCOUNTS.items():
        # The URL from .env (a compose-init account), else the recorded one: its password.
        password = password_of(environ.get(name) or recorded.get(name) or "")
        if not password:
            password = new_password()
            made.append(name)
        values[name] = account_url(user, password, BROKER, 1883)
    return values, made


def write(path: Path, text: str, uid: int | None) -> None:
    """Readable by one user only: `uid` (when run as root, as the init service is)."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400 if uid is not None else 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    if uid is not None and os.geteuid() == 0:
        os.chown(tmp, uid, uid)
    os.replace(tmp, path)


def password_of(url: str) -> str:
    return unquote(urlsplit(url).password or "")


def settings_file(values: dict[str, str]) -> str:
    return "".join(f"{name}={quote(value)}\n" for name, value in values.items())


def write_outputs(folder: Path, values: dict[str, str]) -> None:
    bridge = {
        "SENSORPIPE_INFLUX_TOKEN": values["INFLUX_TOKEN"],
        "SENSORPIPE_WEB_PASSWORD": values["WEB_PASSWORD"],
        "SENSORPIPE_WEB_SECRET": values["WEB_SECRET"],
    }
    bridge_a = {"SENSORPIPE_MQTT_URL": values["BRIDGE_MQTT_URL"], **bridge}
    write(folder / "bridge.env", settings_file(bridge_a), SENSORPIPE_UID)
    bridge_b = {"SENSORPIPE_MQTT_URL": values["BRIDGE_B_MQTT_URL"], **bridge}
    write(folder / "bridge-b.env", settings_file(bridge_b), SENSORPIPE_UID)
    for device in SIMULATED:
        url = values[f"{device.upper().replace('-', '_')}_MQTT_URL"]
        write(folder / f"{device}.env", settings_file({"SENSORPIPE_MQTT_URL": url}), SENSORPIPE_UID)
    write(folder / "influxdb-admin-password", values["INFLUX_ADMIN_PASSWORD"], INFLUXDB_UID)
    write(folder / "influxdb-token", values["INFLUX_TOKEN"], INFLUXDB_UID)
    write(folder / "health-password", values["MQTT_HEALTH_PASSWORD"], MOSQUITTO_UID)


def broker_accounts(broker_dir: Path, values: dict[str, str]) -> list[str]:
    """Add (or give the kept password back to) the stack's accounts; the names changed."""
    users = read_users(broker_dir / "passwd")
    wanted = {user: password_of(values[name]) for name, user in ACCOUNTS.items()}
    wanted[HEALTH_USER] = values["MQTT_HEALTH_PASSWORD"]
    changed = [user for user, password in wanted.items() if not verifies(users.get(user), password)]
    for user in changed:
        users[user] = hash_password(wanted[user])
    if changed or not (broker_dir / "acl").exists():
        save(broker_dir, users, read_readers(broker_dir / "acl"))
    return changed


def main(argv: list[str], environ: dict[str, str]) -> int:
    parser = argparse.ArgumentParser(prog="stack_init", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["init", "password"], default="init")
    parser.add_argument("--secrets", type=Path, default=Path("/secrets"), help="the stack-secrets volume")
    parser.add_argument("--broker-dir", type=Path, default=Path("/mosquitto-config"), help="the broker's config")
    args = parser.parse_args(argv)
    folder: Path = args.secrets
    record = record_path(folder)
    recorded = read_env_file(record.read_text()) if record.exists() else {}
    if args.command == "password":
        if "WEB_PASSWORD" not in recorded:
            print("stack_init: no secrets made yet: run docker compose up first", file=sys.stderr)
            return 1
        print(recorded["WEB_PASSWORD"])
        return 0
    if not (args.broker_dir / "acl.base").exists():
        print(f"stack_init: {args.broker_dir} has no acl.base: is it sensorpipe's mosquitto/ folder?", file=sys.stderr)
        return 2
    values, made = decide(recorded, environ)
    folder.mkdir(parents=True, exist_ok=True)
    write(record, settings_file(values), None)
    write_outputs(folder, values)
    changed = broker_accounts(args.broker_dir, values)
    if made:
        print(f"stack_init: made {', '.join(made)} (kept in the stack-secrets volume: never made again)")
        if "WEB_PASSWORD" in made:
            print(f"stack_init: the dashboard's password: {values['WEB_PASSWORD']}")
    else:
        print("stack_init: the secrets of the first start are kept")
    if changed:
        print(f"stack_init: broker accounts written: {', '.join(changed)}")
    print("stack_init: the dashboard's password again: docker compose run --rm init password")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], dict(os.environ)))
