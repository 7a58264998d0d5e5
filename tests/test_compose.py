"""docker compose, as far as it can be checked without a Docker engine (none runs here).

`docker-compose config` (Debian's 1.29) validates the file with the secrets that
scripts/compose-init writes; then each service's command runs for real outside Docker,
with the environment compose resolves for it and the accounts compose-init made: the
shipped Mosquitto config, its health check, the bridge's container command, a simulated
publisher. What cannot be the same outside a container is changed and said: host names
become 127.0.0.1 and free ports, and the bridge writes to this machine's InfluxDB 1.6.7
through the v1 API (InfluxDB 2.7 cannot run here; the v2 path is tested in
test_influx_v2.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from bridge.influx import InfluxV1
from devstack.servers import Server, free_port, shipped_mosquitto
from tests.composekit import (
    bridge_env,
    compose,
    dashboard_password,
    dockerfile_cmd,
    in_this_venv,
    init_project,
    run_command,
    run_init,
    service_env,
    settings_file,
)
from tests.conftest import ROOT, assert_stopped_cleanly, fresh_clone_only
from tests.test_influx_v2 import FakeInflux2
from tests.waiting import wait_until


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """What an operator has after cloning and running scripts/compose-init."""
    return init_project(tmp_path / "project")


@pytest.fixture
def config(project: Path) -> dict[str, Any]:
    result = compose(project, "--profile", "sim", "config")
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def fresh_project(folder: Path) -> Path:
    """A fresh clone as `docker compose up` sees it: no .env, the shipped mosquitto/ folder."""
    folder.mkdir()
    shutil.copytree(ROOT / "mosquitto", folder / "mosquitto", ignore=fresh_clone_only)
    return folder


def test_a_fresh_clone_needs_nothing_before_compose_up(tmp_path: Path) -> None:
    """No .env: compose takes the file, and the init service's command (run here for real,
    twice) makes the secrets and the broker's accounts once, prints the dashboard's password
    once, and keeps them on the second start; no secret is in compose's own configuration."""
    fresh_project(tmp_path / "project")
    result = compose(tmp_path / "project", "--profile", "sim", "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert all(not value for value in services["init"]["environment"].values())
    _, first_run = run_init(tmp_path / "project", services)
    secrets = tmp_path / "project" / "secrets"
    first = {path.name: path.read_text() for path in secrets.iterdir()}
    password = dashboard_password(secrets)
    assert f"the dashboard's password: {password}" in first_run
    passwd = (tmp_path / "project" / "mosquitto" / "passwd").read_text()
    assert {"sensorpipe-bridge", "sensorpipe-health", "sim-greenhouse"} <= {
        line.split(":")[0] for line in passwd.splitlines()
    }
    for name in ("bridge.env", "influxdb-token", "health-password"):
        assert oct((secrets / name).stat().st_mode & 0o777) == "0o400", name  # its service's user only
    _, second_run = run_init(tmp_path / "project", services)
    assert {path.name: path.read_text() for path in secrets.iterdir()} == first
    assert (tmp_path / "project" / "mosquitto" / "passwd").read_text() == passwd
    assert "the secrets of the first start are kept" in second_run and password not in second_run
    shown = subprocess.run(
        [*in_this_venv(services["init"]["command"]), "password", "--secrets", str(secrets)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.stdout.strip() == password


def test_a_hand_filled_env_is_taken_by_the_init_service(tmp_path: Path) -> None:
    """.env.example filled in by hand (some secrets only): the init service takes what is
    there and makes the rest."""
    project = fresh_project(tmp_path / "project")
    lines = (ROOT / ".env.example").read_text().splitlines()
    filled = {
        "INFLUX_TOKEN": "a-long-token",
        "BRIDGE_MQTT_URL": "mqtt://sensorpipe-bridge:pass@mosquitto:1883",
    }
    (project / ".env").write_text(
        "\n".join(
            f"{line}{filled[line[:-1]]}" if line[:-1] in filled and line.endswith("=") else line for line in lines
        )
        + "\n"
    )
    result = compose(project, "config")
    assert result.returncode == 0, result.stderr
    secrets, _ = run_init(project, yaml.safe_load(result.stdout)["services"])
    bridge = settings_file({"SENSORPIPE_SETTINGS_FILE": str(secrets / "bridge.env")})
    assert bridge["SENSORPIPE_INFLUX_TOKEN"] == "a-long-token"
    assert bridge["SENSORPIPE_MQTT_URL"] == "mqtt://sensorpipe-bridge:pass@mosquitto:1883"
    assert (secrets / "influxdb-token").read_text() == "a-long-token"
    assert len(bridge["SENSORPIPE_WEB_PASSWORD"]) >= 16  # made, as .env had none


def test_compose_init_keeps_an_existing_env_and_secrets_stay_out_of_the_file(project: Path) -> None:
    before = (project / ".env").read_text()
    again = subprocess.run(
        [str(ROOT / "scripts" / "compose-init"), "--dir", str(project)], capture_output=True, text=True, check=False
    )
    assert again.returncode == 2 and (project / ".env").read_text() == before
    assert oct((project / ".env").stat().st_mode & 0o777) == "0o600"
    compose_text = (ROOT / "docker-compose.yml").read_text()
    for line in before.splitlines():
        name, _, value = line.partition("=")
        if name in {"INFLUX_TOKEN", "INFLUX_ADMIN_PASSWORD", "MQTT_HEALTH_PASSWORD", "WEB_PASSWORD", "WEB_SECRET"}:
            assert value and value not in compose_text


def env_values(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")
    )


def test_compose_init_force_keeps_the_secrets_influxdb_already_holds(project: Path) -> None:
    """`--force` (as `--scale` on an existing .env needs) makes everything anew but the
    InfluxDB admin password and token: InfluxDB took those into its volume on its first start
    and ignores new ones, so new ones in .env would lock the bridge out with 401 for good."""
    before = env_values(project / ".env")
    forced = subprocess.run(
        [str(ROOT / "scripts" / "compose-init"), "--dir", str(project), "--force", "--scale"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert forced.returncode == 0, forced.stderr
    after = env_values(project / ".env")
    assert (after["INFLUX_TOKEN"], after["INFLUX_ADMIN_PASSWORD"]) == (
        before["INFLUX_TOKEN"],
        before["INFLUX_ADMIN_PASSWORD"],
    )
    assert after["WEB_PASSWORD"] != before["WEB_PASSWORD"] and after["SHARE_GROUP"] == "bridges"
    assert "kept INFLUX_ADMIN_PASSWORD and INFLUX_TOKEN" in forced.stdout


def test_the_services_are_wired_as_documented(config: dict[str, Any]) -> None:
    services = config["services"]
    # docker-compose 1.29 lists every profile's services; the profiles say which start when.
    assert {name: service.get("profiles", []) for name, service in services.items()} == {
        "init": [],
        "mosquitto": [],
        "influxdb": [],
        "bridge": [],
        "sim-greenhouse": ["sim"],
        "sim-coldroom": ["sim"],
        "bridge-b": ["scale"],
        "redis": ["scale"],
        "nginx": ["scale"],
    }
    for name, service in services.items():
        if name == "init":  # a one-shot, root in its container to give each secret to its user
            assert service["restart"] == "no" and service["user"] == "0:0"
            continue
        assert service["restart"] == "unless-stopped", name
        assert service.get("user") != "root", name
    for name in ("mosquitto", "influxdb", "bridge", "sim-greenhouse", "sim-coldroom"):
        assert services[name]["healthcheck"]["test"], name
    assert services["bridge"]["depends_on"] == {
        "mosquitto": {"condition": "service_healthy"},
        "influxdb": {"condition": "service_healthy"},
    }
    for name in ("mosquitto", "influxdb"):  # and so everything after them
        assert services[name]["depends_on"] == {"init": {"condition": "service_completed_successfully"}}
    assert services["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_BUCKET"] == "sensors"
    # Published for the side doors (its UI, Grafana, InfluxQL), on this machine only by default.
    assert services["influxdb"]["ports"] == ["127.0.0.1:8086:8086/tcp"]
    # The secrets come from the files of the init service, none from compose's environment.
    assert services["influxdb"]["environment"]["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN_FILE"] == "/secrets/influxdb-token"
    assert services["bridge"]["environment"]["SENSORPIPE_SETTINGS_FILE"] == "/secrets/bridge.env"
    for name in ("bridge", "bridge-b", "sim-greenhouse", "sim-coldroom"):
        environment = services[name]["environment"]
        assert not {"SENSORPIPE_MQTT_URL", "SENSORPIPE_INFLUX_TOKEN", "SENSORPIPE_WEB_PASSWORD"} & set(environment)
    assert {"mosquitto-data", "influxdb-data", "sim-greenhouse-outbox", "stack-secrets"} <= set(config["volumes"])
    # Behind the scale profile's nginx each client has its own login throttle, and the
    # bridge's own port cannot forge one (webui/proxies.py).
    for name in ("bridge", "bridge-b"):
        environment = services[name]["environment"]
        assert (environment["SENSORPIPE_WEB_PROXIES"], environment["SENSORPIPE_WEB_PROXY_FROM"]) == ("1", "nginx")


def test_the_dockerfile_builds_assets_then_runs_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert stages[0].startswith("node:20") and stages[-1].startswith("python:3.11")
    assert "npm ci" in text and "pip install -r requirements.lock" in text
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), path
    user = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert user and user[-1] not in {"root", "0"}
    assert text.index("USER ") < text.index("CMD ")


def test_the_stack_runs_its_commands_for_real(influx: InfluxV1, tmp_path: Path) -> None:
    """`docker compose up` on a fresh clone, the services' commands run here in its order: the
    init service first (the secrets, the broker's accounts), then the broker with the shipped
    config and its health check, the bridge's container command, a simulated publisher, each
    with its compose environment and the file init wrote it. The stack's InfluxDB 2.7 is the
    2.x recorder (tests/test_influx_v2.py) in front of the real 1.6.7."""
    project = fresh_project(tmp_path / "project")
    result = compose(project, "--profile", "sim", "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    secrets, _ = run_init(project, services)
    with shipped_mosquitto(project / "mosquitto").serving() as stack_broker:
        run_services(services, stack_broker, secrets, influx, tmp_path)


def run_services(
    services: dict[str, Any], stack_broker: Server, secrets: Path, influx: InfluxV1, tmp_path: Path
) -> None:
    # The broker's health check, as compose runs it inside the container.
    check = services["mosquitto"]["healthcheck"]["test"][1].replace("$$", "$")
    check = check.replace("-p 1883", f"-p {stack_broker.port}").replace("/secrets/", f"{secrets}/")
    assert subprocess.run(["sh", "-c", check], capture_output=True, check=False).returncode == 0

    # The stack's InfluxDB is 2.7, which cannot run here: the 2.x recorder stands in for it
    # and passes writes and queries on to the real 1.6.7, so the bridge service's own 2.x
    # settings (API, bucket, org, the token compose-init made) are what is tested.
    recorder = FakeInflux2(forward_to=influx.target.url, database=influx.target.database)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    web_port = free_port()
    bridge = bridge_env(services["bridge"], stack_broker.port, recorder.url, web_port, secrets)
    sim = services["sim-greenhouse"]
    sim_env = service_env(sim, stack_broker.port, secrets) | {
        "SENSORPIPE_OUTBOX": str(tmp_path / "data" / "outbox.sqlite"),
        "SENSORPIPE_INTERVAL": "0.2",
        "SENSORPIPE_COUNT": "10",
    }
    with (tmp_path / "bridge.log").open("wb") as log:
        process = subprocess.Popen(in_this_venv(dockerfile_cmd()), cwd=ROOT, env=bridge, stdout=log, stderr=log)
    try:
        bridge_check = in_this_venv(services["bridge"]["healthcheck"]["test"][1:])
        bridge_check = [part.replace(":5000/", f":{web_port}/") for part in bridge_check]
        wait_until(
            lambda: subprocess.run(bridge_check, capture_output=True, check=False).returncode == 0,
            60,
            "the bridge's health check to pass",
        )
        publisher = run_command(sim, sim_env)
        assert publisher.returncode == 0, publisher.stderr
        # Its health check, as compose runs it, finds the heartbeat the run just left.
        sim_check = subprocess.run(
            in_this_venv(sim["healthcheck"]["test"][1:]),
            cwd=ROOT,
            env=sim_env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert sim_check.returncode == 0 and "alive: sampled" in sim_check.stdout, sim_check.stderr

        def stored() -> int:
            series = influx.query("SELECT count(temperature) FROM environment WHERE device = 'sim-greenhouse'")
            return int(series[0]["values"][0][1]) if series else 0

        wait_until(lambda: stored() == 10, 30, "the simulated device's 10 readings")
        bearer = {"Authorization": f"Bearer {dashboard_password(secrets)}"}  # init made one
        assert requests.get(f"http://127.0.0.1:{web_port}/api/devices", timeout=10).status_code == 401
        devices = requests.get(f"http://127.0.0.1:{web_port}/api/devices", headers=bearer, timeout=10).json()
        assert [d["device"] for d in devices] == ["sim-greenhouse"]
        token = (secrets / "influxdb-token").read_text()  # the one InfluxDB was set up with
        for write in recorder.writes():
            assert write.params["bucket"] == ["sensors"] and write.params["org"] == ["sensorpipe"]
            assert write.headers["Authorization"] == f"Token {token}"
        assert recorder.writes()
    finally:
        process.terminate()
        process.wait(30)
        recorder.shutdown()
        recorder.server_close()
    assert_stopped_cleanly(process, tmp_path / "bridge.log", "the bridge")
