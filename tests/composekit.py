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


def service_env(service: dict[str, Any], broker_port: int) -> dict[str, str]:
    """A service's environment as compose gives it (with the image's ENV), the broker moved
    to this machine."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SENSORPIPE_")} | {"PYTHONUNBUFFERED": "1"}
    env = base | dockerfile_env() | {k: str(v) for k, v in service["environment"].items()}
    env["SENSORPIPE_MQTT_URL"] = local(env["SENSORPIPE_MQTT_URL"], broker_port)
    return env


def bridge_env(service: dict[str, Any], broker_port: int, influx_url: str, web_port: int) -> dict[str, str]:
    """A bridge service's environment here, its InfluxDB settings (v2 API, bucket, org, the
    token compose-init made) as they are but for the server's address, and the web server
    on `web_port` of 127.0.0.1."""
    return service_env(service, broker_port) | {
        "SENSORPIPE_INFLUX_URL": influx_url,
        "SENSORPIPE_WEB_HOST": "127.0.0.1",
        "SENSORPIPE_WEB_PORT": str(web_port),
    }


def run_command(service: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a service's `command` (a one-shot, like a publisher with SENSORPIPE_COUNT) here."""
    return subprocess.run(
        in_this_venv(service["command"]), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
