"""The demo's and the tests' brokers run with the shipped config's limits."""

from __future__ import annotations

from pathlib import Path

from devstack.servers import SHIPPED_LIMITS, mosquitto
from tests.conftest import ROOT


def test_private_brokers_use_every_limit_of_the_shipped_config(tmp_path: Path) -> None:
    shipped = {
        line.split()[0]: line
        for line in (ROOT / "mosquitto" / "mosquitto.conf").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert set(SHIPPED_LIMITS) <= set(shipped)
    assert shipped["max_queued_messages"] == "max_queued_messages 3000000"  # a day of 50 sensors at 2 s
    private = (mosquitto(tmp_path).folder / "mosquitto.conf").read_text().splitlines()
    for name in SHIPPED_LIMITS:
        assert shipped[name] in private
