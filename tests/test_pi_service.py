"""The publisher as the Raspberry Pi service runs it: unit file, settings file, its command.

No systemd runs here as PID 1 and no Pi is attached: systemd-analyze checks the shipped
unit, and its ExecStart runs for real with the environment systemd would give it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack.servers import Server
from tests.conftest import ROOT
from tests.waiting import wait_until

UNIT = ROOT / "publisher" / "systemd" / "sensorpipe-publisher.service"
VENV_PYTHON = "/opt/sensorpipe/venv/bin/python"


def unit_values(key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", UNIT.read_text(), flags=re.MULTILINE)


def render_env_file(*settings: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "publisher.envfile", *settings], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def read_env_file(path: Path) -> dict[str, str]:
    """The variables a shell's `set -a; . FILE` gets, which systemd's EnvironmentFile reads alike."""
    out = subprocess.run(
        ["bash", "-c", 'set -a; . "$1"; env -0', "-", str(path)], capture_output=True, check=True, env={}
    ).stdout
    pairs = (item.split(b"=", 1) for item in out.split(b"\0") if item)
    return {k.decode(): v.decode() for k, v in pairs if k.startswith(b"SENSORPIPE_")}


def test_the_unit_file_passes_systemd_analyze(tmp_path: Path) -> None:
    # The venv does not exist here; everything else is checked as systemd would.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(VENV_PYTHON, sys.executable))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert unit_values("User") == ["sensorpipe"] and unit_values("SupplementaryGroups") == ["gpio i2c"]
    assert unit_values("Restart") == ["on-failure"] and unit_values("RestartPreventExitStatus") == ["2"]


def test_the_bridge_unit_passes_systemd_analyze_and_always_restarts(tmp_path: Path) -> None:
    shipped = ROOT / "bridge" / "systemd" / "sensorpipe-bridge.service"
    unit = tmp_path / shipped.name
    unit.write_text(shipped.read_text().replace(VENV_PYTHON, sys.executable))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    text = shipped.read_text()
    assert "\nRestart=always\n" in text and "\nRestartPreventExitStatus=2\n" in text
    assert "\nExecStart=/opt/sensorpipe/venv/bin/python -m bridge\n" in text


def test_settings_file_round_trips_awkward_values(tmp_path: Path) -> None:
    location = 'Glass "house" \\ $HOME `x` 100%'
    path = tmp_path / "publisher.env"
    path.write_text(render_env_file("SENSORPIPE_DEVICE=greenhouse", f"SENSORPIPE_LOCATION={location}"))
    assert read_env_file(path) == {"SENSORPIPE_DEVICE": "greenhouse", "SENSORPIPE_LOCATION": location}
    text = path.read_text()
    assert "#SENSORPIPE_PIN=" in text and "GPIO pin" in text  # unset ones are listed, commented, explained


def test_settings_file_refuses_unknown_names() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "publisher.envfile", "SENSORPIPE_COLOUR=red"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "SENSORPIPE_COLOUR" in result.stderr


def test_the_services_command_runs_with_the_services_environment(
    broker: Server, tmp_path: Path, prefix: str, mqtt_client: Any
) -> None:
    env_file = tmp_path / "publisher.env"
    env_file.write_text(
        render_env_file(
            "SENSORPIPE_DEVICE=pi-one",
            f"SENSORPIPE_MQTT_URL=mqtt://127.0.0.1:{broker.port}",
            f"SENSORPIPE_TOPIC_PREFIX={prefix}",
            "SENSORPIPE_SENSOR=simulated",
            "SENSORPIPE_INTERVAL=0.1",
        )
    )
    state = tmp_path / "state"
    state.mkdir()
    env = {"PATH": os.environ["PATH"], "STATE_DIRECTORY": str(state), "SENSORPIPE_COUNT": "5"}
    for assignment in " ".join(unit_values("Environment")).split():
        name, _, value = assignment.partition("=")
        env[name] = value
    env.update(read_env_file(env_file))
    command = unit_values("ExecStart")[0].replace(VENV_PYTHON, sys.executable).split()
    mqtt_client.subscribe(f"{prefix}/pi-one/reading")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: len(mqtt_client.received) >= 5, 10, "5 readings")
    assert [json.loads(m.payload)["seq"] for m in mqtt_client.received] == [0, 1, 2, 3, 4]
    assert (state / "outbox-pi-one.sqlite").exists()  # the outbox went to systemd's StateDirectory


@pytest.mark.parametrize(("args", "says"), [(["--colour"], "unknown option"), (["--device"], "needs a value")])
def test_install_script_refuses_bad_options(args: list[str], says: str) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install-pi.sh"), *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and says in result.stderr
