"""`python -m publisher.check`: exit 0 when this machine's publisher samples, else 1.

For Docker's HEALTHCHECK and systemd: it reads the heartbeat the publisher writes beside its
outbox (publisher/heartbeat.py), found from the same settings as the publisher's
(SENSORPIPE_OUTBOX, or the default from SENSORPIPE_DEVICE). Prints one line either way; a
bad setting exits 2 as the publisher does.
"""

from __future__ import annotations

import os
import sys

from common.settings import SettingsError, exit_bad_setting
from publisher.heartbeat import heartbeat_path, verdict
from publisher.settings import load_settings


def main() -> int:
    try:
        settings = load_settings(sys.argv[1:], os.environ)
    except SettingsError as exc:
        exit_bad_setting("publisher.check", exc)
    alive, line = verdict(heartbeat_path(settings.outbox))
    print(f"publisher.check: {line}", file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
