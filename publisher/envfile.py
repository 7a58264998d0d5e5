"""`python -m publisher.envfile KEY=VALUE ...`: the publisher's settings file, every setting explained.

scripts/install-pi.sh writes /etc/sensorpipe/publisher.env with it (common/envfile.py has
the format).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from common import envfile
from publisher.settings import OPTIONS


def render(values: Mapping[str, str]) -> str:
    """The file's text; raises ValueError for a name that is no publisher setting."""
    return envfile.render(
        values,
        OPTIONS,
        "# sensorpipe publisher settings. After a change: sudo systemctl restart sensorpipe-publisher",
        "publisher",
        # The simulation's and the tests' settings are not for a Pi.
        listed=lambda option: not option.env.startswith("SENSORPIPE_SIM_") and option.env != "SENSORPIPE_COUNT",
    )


def main(argv: Sequence[str]) -> int:
    values = {}
    for arg in argv:
        name, sep, value = arg.partition("=")
        if not sep:
            print(f"envfile: expected NAME=VALUE, got {arg!r}", file=sys.stderr)
            return 2
        values[name] = value
    try:
        sys.stdout.write(render(values))
    except ValueError as exc:
        print(f"envfile: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
