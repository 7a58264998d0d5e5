"""Settings: every one listed by --help; a wrong one stops the program with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.settings import OPTIONS as BRIDGE_OPTIONS
from bridge.settings import load_settings as bridge_settings
from publisher.settings import OPTIONS as PUBLISHER_OPTIONS
from tests.conftest import run_program

CONTRACT_SETTINGS = {
    "publisher": {
        "SENSORPIPE_MQTT_URL",
        "SENSORPIPE_TOPIC_PREFIX",
        "SENSORPIPE_DEVICE",
        "SENSORPIPE_SENSOR",
        "SENSORPIPE_PIN",
        "SENSORPIPE_INTERVAL",
    },
    "bridge": {
        "SENSORPIPE_MQTT_URL",
        "SENSORPIPE_TOPIC_PREFIX",
        "SENSORPIPE_INFLUX_URL",
        "SENSORPIPE_INFLUX_DB",
        "SENSORPIPE_INFLUX_TOKEN",
        "SENSORPIPE_WEB_HOST",
        "SENSORPIPE_WEB_PORT",
    },
}


run = run_program


@pytest.mark.parametrize("program", ["publisher", "bridge"])
def test_help_lists_every_setting_with_its_variable_and_flag(program: str) -> None:
    result = run(program, "--help")
    assert result.returncode == 0
    options = PUBLISHER_OPTIONS if program == "publisher" else BRIDGE_OPTIONS
    assert CONTRACT_SETTINGS[program] <= {option.env for option in options}
    for option in options:
        assert option.env in result.stdout
        assert option.flag in result.stdout


@pytest.mark.parametrize(
    ("program", "args", "env", "named"),
    [
        ("publisher", ["--sensor", "bme680"], {}, "SENSORPIPE_SENSOR"),
        ("publisher", ["--sensors", "simulated bme680"], {}, "SENSORPIPE_SENSORS"),
        ("publisher", ["--sensors", "bme280,address=0x78"], {}, "SENSORPIPE_SENSORS"),
        ("publisher", ["--sensors", "sht4x,address=0x47"], {}, "SENSORPIPE_SENSORS"),
        ("publisher", ["--sensors", "dht22,pin=D28"], {}, "SENSORPIPE_SENSORS"),
        ("publisher", ["--sensors", "dht22,colour=red"], {}, "SENSORPIPE_SENSORS"),
        ("publisher", ["--sensors", "simulated simulated"], {}, "SENSORPIPE_SENSORS"),
        ("publisher", ["--sensors", "simulated sht4x"], {}, "SENSORPIPE_SENSORS"),
        ("publisher", ["--sensors", "simulated,name=Freezer"], {}, "SENSORPIPE_SENSORS"),
        (
            "publisher",
            ["--sensors", "ds18b20,id=28-0123456789ab"],
            {"SENSORPIPE_W1_DEVICES": "/nonexistent"},
            "SENSORPIPE_SENSORS",
        ),
        ("publisher", ["--sensors", "dht-kernel"], {"SENSORPIPE_IIO_DEVICES": "/nonexistent"}, "SENSORPIPE_SENSORS"),
        (
            "publisher",
            ["--sensors", " ".join(["simulated"] + [f"simulated,name=s{i}" for i in range(8)])],
            {},
            "SENSORPIPE_SENSORS",
        ),
        ("publisher", ["--calibration", "temperature=warm"], {}, "SENSORPIPE_CALIBRATION"),
        ("publisher", ["--calibration", "temperature=nan"], {}, "SENSORPIPE_CALIBRATION"),
        ("publisher", ["--calibration", "temperature=20:21,20:22"], {}, "SENSORPIPE_CALIBRATION"),
        ("publisher", ["--calibration", "temperature=0:0,10:100"], {}, "SENSORPIPE_CALIBRATION"),
        ("publisher", ["--calibration", "pressure=1.5"], {}, "SENSORPIPE_CALIBRATION"),
        ("publisher", ["--calibration", "dew_point=0.5"], {}, "SENSORPIPE_CALIBRATION"),
        ("publisher", [], {"SENSORPIPE_SENSOR": "dht22", "SENSORPIPE_INTERVAL": "1"}, "SENSORPIPE_INTERVAL"),
        ("publisher", ["--interval", "0"], {}, "SENSORPIPE_INTERVAL"),
        ("publisher", ["--interval", "soon"], {}, "SENSORPIPE_INTERVAL"),
        ("publisher", ["--pin", "GPIO4"], {}, "SENSORPIPE_PIN"),
        ("publisher", ["--pin", "D40"], {}, "SENSORPIPE_PIN"),
        ("publisher", ["--device", "my device"], {}, "SENSORPIPE_DEVICE"),
        ("publisher", ["--mqtt-url", "http://broker"], {}, "SENSORPIPE_MQTT_URL"),
        ("publisher", ["--mqtt-url", "mqtt://broker:99999"], {}, "SENSORPIPE_MQTT_URL"),
        ("publisher", [], {"SENSORPIPE_MQTT_URL": "mqtt://"}, "SENSORPIPE_MQTT_URL"),
        ("publisher", ["--topic-prefix", "sensors/#"], {}, "SENSORPIPE_TOPIC_PREFIX"),
        ("publisher", ["--count", "-1"], {}, "SENSORPIPE_COUNT"),
        ("publisher", ["--colour", "red"], {}, "unknown flag --colour"),
        # Locations the bridge would refuse in every reading: refused here, at start.
        ("publisher", ["--location", "C:\\lab"], {}, "SENSORPIPE_LOCATION"),
        ("publisher", ["--location", "freezer\x7f"], {}, "SENSORPIPE_LOCATION"),
        ("publisher", ["--location", "cold\x85room"], {}, "SENSORPIPE_LOCATION"),
        ("publisher", ["--location", "x" * 65], {}, "SENSORPIPE_LOCATION"),
        # A Latin-1 byte in an env file: Python sees U+DCFC, which no encoding can store.
        ("publisher", [], {"SENSORPIPE_LOCATION": "K\udcfcche"}, "SENSORPIPE_LOCATION"),
        ("publisher", ["--outbox", "/dev/null/outbox.sqlite"], {}, "SENSORPIPE_OUTBOX"),
        ("publisher", ["--outbox", "~nobody-here/outbox.sqlite"], {}, "SENSORPIPE_OUTBOX"),
        ("publisher", ["--sim-fail-rate", "1.5"], {}, "SENSORPIPE_SIM_FAIL_RATE"),
        ("publisher", ["--max-jump-temperature", "-1"], {}, "SENSORPIPE_MAX_JUMP_TEMPERATURE"),
        ("publisher", ["--ha-discovery", "maybe"], {}, "SENSORPIPE_HA_DISCOVERY"),
        ("publisher", ["--ha-prefix", "home/#"], {}, "SENSORPIPE_HA_PREFIX"),
        ("publisher", ["--health-interval", "0"], {}, "SENSORPIPE_HEALTH_INTERVAL"),
        ("bridge", ["--web-port", "70000"], {}, "SENSORPIPE_WEB_PORT"),
        ("bridge", [], {"SENSORPIPE_WEB_PORT": "http"}, "SENSORPIPE_WEB_PORT"),
        ("bridge", ["--influx-url", "127.0.0.1:8086"], {}, "SENSORPIPE_INFLUX_URL"),
        ("bridge", ["--influx-db", "my db"], {}, "SENSORPIPE_INFLUX_DB"),
        ("bridge", ["--mqtt-client-id", ""], {}, "SENSORPIPE_MQTT_CLIENT_ID"),
        ("bridge", ["--topic-prefix", ""], {}, "SENSORPIPE_TOPIC_PREFIX"),
        ("bridge", ["--write-interval-ms", "-1"], {}, "SENSORPIPE_WRITE_INTERVAL_MS"),
        ("bridge", ["--write-interval-ms", "soon"], {}, "SENSORPIPE_WRITE_INTERVAL_MS"),
        ("bridge", ["--mqtt-window", "0"], {}, "SENSORPIPE_MQTT_WINDOW"),
        ("bridge", ["--mqtt-window", "65536"], {}, "SENSORPIPE_MQTT_WINDOW"),
        ("bridge", ["--web-threads", "3"], {}, "SENSORPIPE_WEB_THREADS"),
        ("bridge", ["--web-threads", "10001"], {}, "SENSORPIPE_WEB_THREADS"),
        ("bridge", ["--web-proxy-from", "not a host"], {}, "SENSORPIPE_WEB_PROXY_FROM"),
        ("bridge", ["--mqtt-version", "4"], {}, "SENSORPIPE_MQTT_VERSION"),
        ("bridge", ["--influx-url", "http://admin:pw@127.0.0.1:8086"], {}, "SENSORPIPE_INFLUX_TOKEN"),
        ("bridge", ["--influx-url", "http://127.0.0.1:8086/?db=x"], {}, "SENSORPIPE_INFLUX_URL"),
        ("bridge", ["--stall-after-s", "0"], {}, "SENSORPIPE_STALL_AFTER_S"),
        ("bridge", ["--max-devices", "0"], {}, "SENSORPIPE_MAX_DEVICES"),
        ("bridge", ["--timezone", "Mars/Olympus"], {}, "SENSORPIPE_TIMEZONE"),
        ("bridge", ["--timezone", "Europe"], {}, "SENSORPIPE_TIMEZONE"),  # a folder of zones
        ("bridge", ["--accounts-db", "~nobody-here/accounts.sqlite"], {}, "SENSORPIPE_ACCOUNTS_DB"),
        ("bridge", ["--alert-rules", "~nobody-here/rules.toml"], {}, "SENSORPIPE_ALERT_RULES"),
        ("bridge", ["--report-daily", "7am"], {}, "SENSORPIPE_REPORT_DAILY"),
        ("bridge", ["--report-weekly", "monday 07:00"], {}, "SENSORPIPE_REPORT_WEEKLY"),
        ("bridge", ["--report-notify", "nonsense"], {}, "SENSORPIPE_REPORT_NOTIFY"),
        ("bridge", ["--alert-notify", "nonsense://x"], {}, "SENSORPIPE_ALERT_NOTIFY"),
        ("bridge", ["--site-name", "lab\x01"], {}, "SENSORPIPE_SITE_NAME"),
        # A bridge of a group sees only its share: its alerts need the others' readings (Redis).
        ("bridge", ["--share-group", "g", "--alert-notify", "json://127.0.0.1/x"], {}, "SENSORPIPE_REDIS_URL"),
    ],
)
def test_a_bad_setting_stops_with_one_line_naming_it(
    program: str, args: list[str], env: dict[str, str], named: str
) -> None:
    result = run(program, *args, **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{program}: bad setting: ")
    assert named in lines[0]


def test_a_password_in_a_bad_setting_is_not_shown() -> None:
    result = run("bridge", "--mqtt-url", "mqtp://user:s3cret@broker")
    assert result.returncode == 2
    assert "s3cret" not in result.stderr
    assert "SENSORPIPE_MQTT_URL" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--web-pasword", "s3cret"],  # a mistyped flag: its value is not shown
        ["--web-pasword=s3cret"],
        ["s3cret"],  # a value without its flag
        ["--influx-url", "http://admin:s3cret@127.0.0.1:8086"],  # credentials where none belong
    ],
)
def test_a_mistyped_setting_never_echoes_its_value(args: list[str]) -> None:
    result = run("bridge", *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "s3cret" not in result.stderr


SECRETS = {
    "SENSORPIPE_MQTT_URL": "mqtt://bridge:mqtt-s3cret@127.0.0.1:1883",
    "SENSORPIPE_INFLUX_TOKEN": "admin:influx-s3cret",
    "SENSORPIPE_WEB_PASSWORD": "web-s3cret",
    "SENSORPIPE_WEB_SECRET": "cookie-s3cret",
    "SENSORPIPE_REDIS_URL": "redis://:redis-s3cret@127.0.0.1:6379/0",
}


def test_no_secret_in_a_failing_start_its_help_or_the_settings_repr() -> None:
    failing = run("bridge", "--web-port", "70000", **SECRETS)
    assert failing.returncode == 2 and "SENSORPIPE_WEB_PORT" in failing.stderr
    shown = run("bridge", "--help", **SECRETS)
    assert shown.returncode == 0
    settings = bridge_settings([], SECRETS)
    assert settings.web_password.reveal() == "web-s3cret"  # kept, only never shown
    for text in (failing.stdout, failing.stderr, shown.stdout, repr(settings), str(settings.mqtt_url)):
        assert "s3cret" not in text, text


def test_a_settings_file_is_read_under_the_environment_and_flags(tmp_path: Path) -> None:
    """SENSORPIPE_SETTINGS_FILE: its values apply where neither a flag nor the environment sets
    one; quotes and backslash escapes as systemd reads them; an unreadable file is one line."""
    path = tmp_path / "bridge.env"
    path.write_text(
        '# a comment\nSENSORPIPE_WEB_PASSWORD="pa\\"ss"\nSENSORPIPE_WEB_PORT="5001"\nSENSORPIPE_INFLUX_DB="from_file"\n'
    )
    environ = {"SENSORPIPE_SETTINGS_FILE": str(path), "SENSORPIPE_INFLUX_DB": "from_env"}
    settings = bridge_settings(["--web-port", "5002"], environ)
    assert settings.web_password.reveal() == 'pa"ss'
    assert settings.influx_db == "from_env" and settings.web_port == 5002
    assert bridge_settings([], environ).web_port == 5001
    missing = run("publisher", SENSORPIPE_SETTINGS_FILE=str(tmp_path / "absent.env"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"publisher: bad setting: SENSORPIPE_SETTINGS_FILE = '{tmp_path / 'absent.env'}': No such file or directory"
    )
