"""A program's settings file, every setting explained: systemd's EnvironmentFile format.

Each setting appears with its meaning and default; those given are set, the rest stay
commented out so the default applies. Values are double-quoted with backslash escapes,
which systemd's EnvironmentFile and a shell's `set -a; . FILE` read the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from common.settings import Option, read_env_file


def quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")
    return f'"{escaped}"'


def render(
    values: Mapping[str, str],
    options: Iterable[Option],
    title: str,
    program: str,
    listed: Callable[[Option], bool] = lambda option: True,
) -> str:
    """The file's text; raises ValueError for a name that is none of `options`' settings.
    `listed`: which unset settings appear, commented out (all by default)."""
    options = list(options)
    known = {option.env for option in options}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"not a {program} setting: {', '.join(unknown)}")
    lines = [title, ""]
    for option in options:
        if option.env not in values and not listed(option):
            continue
        lines.append(f"# {option.help} (default: {option.default or 'empty'})")
        if option.env in values:
            lines.append(f"{option.env}={quote(values[option.env])}")
        else:
            lines.append(f"#{option.env}={quote(option.default)}")
        lines.append("")
    return "\n".join(lines)


def read(text: str) -> dict[str, str]:
    """The settings a file written by `render` sets (its commented-out lines are not)."""
    return read_env_file(text)
