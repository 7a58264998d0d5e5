"""sensorpipe's version and its release date, defined here once (pyproject.toml reads VERSION).

The release date doubles as the publisher's test of a plausible clock: a Raspberry Pi has
no real-time clock, and until NTP has set it, it may say 1970 or the last shutdown's time.
Any time before this version was released is certainly wrong. Bump both on every release.
"""

from __future__ import annotations

import datetime

VERSION = "0.1.0"
RELEASE_DATE = datetime.date(2026, 11, 25)
