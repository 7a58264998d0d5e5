"""docker compose, the way the tests use it without a Docker engine: the file checked with
Debian's docker-compose, each service's command run for real with the environment compose
resolves for it (host names and ports moved to this machine)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from common.settings import read_env_file
from devstack.servers import SHIPPED_CONFIG_DIR
from tests.conftest import ROOT, fresh_clone_only


def compose(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "--project-directory", str(project), "-f", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def init_project(folder: Path, *flags: str) -> Path:
    """What an operator has after cloning and running scripts/compose-init (with `flags`)."""
    folder.mkdir()
    shutil.copy(ROOT / ".env.example", folder)
    shutil.copytree(SHIPPED_CONFIG_DIR, folder / "mosquitto", ignore=fresh_clone_only)
    result = subprocess.run(
        [str(ROOT / "scripts" / "compose-init"), "--dir", str(folder), *flags],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return folder


def dockerfile_env() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", text, flags=re.MULTILINE):
        for assignment in shlex.split(line):
            name, _, value = assignment.partition("=")
            env[name] = value
    return env


def dockerfile_cmd() -> list[str]:
    line = re.findall(r"^CMD (.+)$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)[-1]
    cmd: list[str] = yaml.safe_load(line)  # the JSON form is YAML too
    return cmd


def in_this_venv(command: list[str]) -> list[str]:
    """The image's `python` is the one with the pinned packages: here, this venv's."""
    return [sys.executable if part == "python" else part for part in command]


def local(url: str, port: int) -> str:
    """A compose-network URL on this machine: mosquitto:1883 -> 127.0.0.1:<port>."""
    return url.replace("@mosquitto:1883", f"@127.0.0.1:{port}")


def run_init(project: Path, services: dict[str, Any]) -> tuple[Path, str]:
    """The init service's command with its compose environment: the stack's secrets into
    `project`/secrets (the stack-secrets volume), its accounts into `project`/mosquitto.
    Returns that folder and what the command printed."""
    secrets = project / "secrets"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORPIPE_")}
    env |= {k: str(v) for k, v in services["init"]["environment"].items()}
    command = in_this_venv(services["init"]["command"])
    result = subprocess.run(
        [*command, "--secrets", str(secrets), "--broker-dir", str(project / "mosquitto")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return secrets, result.stdout


def settings_file(env: dict[str, str]) -> dict[str, str]:
    """What the service's SENSORPIPE_SETTINGS_FILE sets."""
    return read_env_file(Path(env["SENSORPIPE_SETTINGS_FILE"]).read_text())


def dashboard_password(secrets: Path) -> str:
    """The dashboard's password the init service made (or took from .env)."""
    return read_env_file((secrets / "bridge.env").read_text())["SENSORPIPE_WEB_PASSWORD"]


def service_env(service: dict[str, Any], broker_port: int, secrets: Path) -> dict[str, str]:
    """A service's environment as compose gives it (with the image's ENV), its settings file
    taken from `secrets` (as run_init made it) with the broker moved to this machine."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SENSORPIPE_")} | {"PYTHONUNBUFFERED": "1"}
    env = base | dockerfile_env() | {k: str(v) for k, v in service["environment"].items()}
    given = Path(env["SENSORPIPE_SETTINGS_FILE"].replace("/secrets/", f"{secrets}/", 1))
    moved = given.with_name(given.name + ".here")
    moved.write_text(local(given.read_text(), broker_port))
    env["SENSORPIPE_SETTINGS_FILE"] = str(moved)
    return env


def bridge_env(
    service: dict[str, Any], broker_port: int, influx_url: str, web_port: int, secrets: Path
) -> dict[str, str]:
    """A bridge service's environment here, its InfluxDB settings (v2 API, bucket, org, the
    token init made) as they are but for the server's address, and the web server on
    `web_port` of 127.0.0.1."""
    return service_env(service, broker_port, secrets) | {
        "SENSORPIPE_INFLUX_URL": influx_url,
        "SENSORPIPE_WEB_HOST": "127.0.0.1",
        "SENSORPIPE_WEB_PORT": str(web_port),
    }


def run_command(service: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a service's `command` (a one-shot, like a publisher with SENSORPIPE_COUNT) here."""
    return subprocess.run(
        in_this_venv(service["command"]), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
