"""Choose the stack's secrets before `docker compose up`: .env with fresh secrets, and the
broker's accounts. Optional: without .env, the compose file's init service makes them on the
first start (scripts/stack_init.py); with it, init takes these.

    scripts/compose-init [--force]

Writes .env from .env.example (mode 0600) with a random InfluxDB admin password and token,
creates the broker accounts the stack uses (the bridge, the health check, the two
simulated devices, a second bridge) with scripts/broker-user, and puts their URLs into .env.
With --scale, also the settings for two bridges (docker compose --profile scale). An existing
.env is left alone unless --force is given; then everything is made anew but the InfluxDB
admin password and token, which InfluxDB took into its volume on its first start and keeps
(new ones in .env would lock the bridge out with 401 for good). Standard library only.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from broker_user import BRIDGE_USER, HEALTH_USER, ROOT, SECOND_BRIDGE_USER, account_url, add_account

HOST = "mosquitto"  # the broker's name inside the compose network
KEPT_ON_FORCE = ("INFLUX_ADMIN_PASSWORD", "INFLUX_TOKEN")  # InfluxDB's volume holds them


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="compose-init", description=__doc__)
    parser.add_argument("--force", action="store_true", help="replace an existing .env")
    parser.add_argument(
        "--scale", action="store_true", help="set SHARE_GROUP and REDIS_URL for two bridges (profile scale)"
    )
    parser.add_argument("--dir", type=Path, default=ROOT, help="the repository (where .env goes)")
    args = parser.parse_args(argv)
    env_path: Path = args.dir / ".env"
    if env_path.exists() and not args.force:
        print(f"compose-init: {env_path} exists; keep it, or run with --force to replace it", file=sys.stderr)
        return 2
    before = {}
    if env_path.exists():
        for line in env_path.read_text().splitlines():
            name, _, value = line.partition("=")
            if name in KEPT_ON_FORCE and value:
                before[name] = value
    config = args.dir / "mosquitto"

    def url(name: str) -> str:
        return account_url(name, add_account(config, name), HOST, 1883)

    values = {
        "INFLUX_ADMIN_PASSWORD": secrets.token_urlsafe(18),
        "INFLUX_TOKEN": secrets.token_urlsafe(48),
        "BRIDGE_MQTT_URL": url(BRIDGE_USER),
        "MQTT_HEALTH_PASSWORD": add_account(config, HEALTH_USER),
        "SIM_GREENHOUSE_MQTT_URL": url("sim-greenhouse"),
        "SIM_COLDROOM_MQTT_URL": url("sim-coldroom"),
        "WEB_PASSWORD": secrets.token_urlsafe(12),
        "WEB_SECRET": secrets.token_urlsafe(32),
        "BRIDGE_B_MQTT_URL": url(SECOND_BRIDGE_USER),
    }
    if args.scale:
        values |= {"SHARE_GROUP": "bridges", "REDIS_URL": "redis://redis:6379/0"}
    values |= before
    text = (args.dir / ".env.example").read_text()
    lines = text.splitlines()
    for name, value in values.items():
        index = lines.index(f"{name}=")  # .env.example leaves every secret empty
        lines[index] = f"{name}={value}"
    text = "\n".join(lines) + "\n"
    env_path.write_text(text)
    env_path.chmod(0o600)
    print(f"compose-init: wrote {env_path} and the broker accounts (mosquitto/passwd, mosquitto/acl)")
    if before:
        print(
            f"kept {' and '.join(sorted(before))} from the old .env: InfluxDB's volume holds them "
            "(to change them: docker compose down -v, which deletes the stored readings)"
        )
    print(f"the dashboard's password: {values['WEB_PASSWORD']} (WEB_PASSWORD in .env)")
    print("next: docker compose up -d            (add --profile sim for two simulated devices)")
    if args.scale:
        print("      docker compose --profile scale up -d  two bridges behind nginx on :8080")
    print("      scripts/broker-user add <device>  for each Raspberry Pi")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
