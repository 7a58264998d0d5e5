"""Writing the audit log from a request: who is asking, what they changed."""

from __future__ import annotations

from typing import Any

from flask import current_app


def audit(action: str, detail: dict[str, Any]) -> None:
    """One entry for the current request's actor, when the bridge keeps an audit log."""
    log = current_app.extensions["sensorpipe"].audit
    if log is not None:
        log.record(current_app.extensions["sensorpipe.access"].actor(), action, detail)
