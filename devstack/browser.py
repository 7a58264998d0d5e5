"""Where the system's Chromium is, for Playwright (which then downloads no browser of its own)."""

from __future__ import annotations

import shutil
from pathlib import Path

# Debian's package `chromium`, then Raspberry Pi OS's older `chromium-browser`. The
# /usr/bin names are wrapper scripts; Playwright wants the binary they start.
CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/lib/chromium-browser/chromium-browser")


def chromium_executable() -> str:
    """The Chromium binary to drive; raises with the package to install when there is none."""
    for path in CANDIDATES:
        if Path(path).is_file():
            return path
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(
        f"no Chromium found (looked at {', '.join(CANDIDATES)} and PATH): run `scripts/setup.sh test`, "
        "which installs Debian's chromium package"
    )
