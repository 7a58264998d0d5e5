"""`python -m publisher.envfile KEY=VALUE ...`: the publisher's settings file, every setting explained.

scripts/install-pi.sh writes /etc/sensorpipe/publisher.env with it. Each setting appears
with its meaning and default; those given on the command line are set, the rest stay
commented out so the default applies. The format is systemd's EnvironmentFile (double
quotes, backslash escapes), which a shell's `set -a; . FILE` reads the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from publisher.settings import OPTIONS


def quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
    return f'"{escaped}"'


def render(values: Mapping[str, str]) -> str:
    """The file's text; raises ValueError for a name that is no publisher setting."""
    known = {option.env for option in OPTIONS}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"not a publisher setting: {', '.join(unknown)}")
    lines = ["# sensorpipe publisher settings. After a change: sudo systemctl restart sensorpipe-publisher", ""]
    for option in OPTIONS:
        if option.env.startswith("SENSORPIPE_SIM_") or option.env == "SENSORPIPE_COUNT":
            continue  # for the simulation and tests, not for a Pi
        lines.append(f"# {option.help} (default: {option.default or 'empty'})")
        if option.env in values:
            lines.append(f"{option.env}={quote(values[option.env])}")
        else:
            lines.append(f"#{option.env}={quote(option.default)}")
        lines.append("")
    return "\n".join(lines)


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
