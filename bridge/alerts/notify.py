"""Telling people: the journal's outbox, sent through Apprise, retried until it arrives.

One Apprise URL per target (`SENSORPIPE_ALERT_NOTIFY`, space-separated): ntfy, Telegram,
e-mail, Discord, Slack, Matrix, a JSON webhook, ... Each target has its own row per
notification, so a target that is down is retried (backoff up to a minute) without sending
again to the ones that took it. Runs on its own thread: ingest never waits for a delivery.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import apprise

from bridge.alerts.journal import AlertJournal, Pending
from common.reading import now_us

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
IDLE_S = 1.0  # how often the outbox is looked at when nothing woke the sender


class NotifyError(ValueError):
    """An Apprise URL that cannot be used; the message never holds the URL's secrets."""


@dataclass(frozen=True)
class Target:
    """One notification service. `name` is its URL with the secrets masked."""

    name: str
    service: apprise.Apprise


def parse_targets(text: str) -> list[Target]:
    """Targets from space-separated Apprise URLs; raises NotifyError naming the bad one by its
    position and scheme only (the rest of such a URL is often a token or a password)."""
    targets = []
    for number, url in enumerate(text.split(), start=1):
        plugin = _quietly_instantiate(url)
        if plugin is None:
            scheme = url.split("://", 1)[0][:20] if "://" in url else "no scheme"
            raise NotifyError(f"URL number {number} ({scheme}://...) is not an Apprise URL it can use")
        service = apprise.Apprise()
        service.add(plugin)
        masked: str = plugin.url(privacy=True)
        targets.append(Target(masked.split("?", 1)[0], service))
    return targets


def _quietly_instantiate(url: str) -> Any:
    """Apprise's plugin for `url`, or None; Apprise's own log line about a bad URL (which can
    hold the URL's secrets, and would make a bad setting two lines) is held back."""
    apprise_log = logging.getLogger("apprise")
    was = apprise_log.disabled
    apprise_log.disabled = True
    try:
        return apprise.Apprise.instantiate(url)
    finally:
        apprise_log.disabled = was


def message(event: dict[str, object], link: str) -> tuple[str, str]:
    """(title, body) of one notification."""
    state, rule, device = event["state"], event["rule"], event["device"]
    what = {"firing": "FIRING", "ok": "RESOLVED", "acknowledged": "ACKNOWLEDGED"}.get(str(state), str(state).upper())
    if event.get("repeat"):
        what = "STILL FIRING"
    title = f"{what}: {rule} on {device}"
    lines = [title]
    metric, value, threshold = event.get("metric"), event.get("value"), event.get("threshold")
    if metric is not None:
        lines.append(f"{metric} {value:g}, threshold {threshold:g}" if isinstance(value, float) else f"{metric}")
        if isinstance(event.get("peak"), float) and state == "ok":
            lines.append(f"worst value {event['peak']:g}")
    else:
        lines.append(f"no reading for {threshold:g} s" if isinstance(threshold, float) else "no reading")
    since = _when(event.get("since"))
    at = _when(event.get("at"))
    found = _when(event.get("found"))
    if state == "ok":
        lines.append(f"resolved at {at}")
    elif state == "acknowledged":
        lines.append(f"by {event.get('by')}: {event.get('comment') or ''}".rstrip(": "))
        lines.append(f"firing since {since}")
    else:
        lines.append(f"since {since}")
    if event.get("late"):
        lines.append(f"reported late, at {found} (the readings arrived late)")
    lines.append(link)
    return title, "\n".join(lines)


def _when(ms: object) -> str:
    if not isinstance(ms, int | float):
        return "?"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class NotifierState:
    """For /metrics, /healthz and the alerts page."""

    sent: int = 0
    failures: int = 0
    last_error: str | None = None
    errors: dict[int, str] = field(default_factory=dict)  # target -> its last error, while failing


class Notifier:
    """Sends what the outbox holds, oldest first, on a thread of its own."""

    def __init__(self, journal: AlertJournal, targets: list[Target], link: Callable[[str], str]) -> None:
        self._journal = journal
        self.targets = targets
        self._link = link
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-notifier", daemon=True)
        self.state = NotifierState()

    def start(self) -> None:
        """Send from now on (again, after a stop: a bridge that leads the alerts again)."""
        if self.targets and not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="alert-notifier", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Something new is in the outbox."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(IDLE_S)
            self._wake.clear()
            try:
                for pending in self._journal.due(now_us()):
                    if self._stop.is_set():
                        return
                    self._send(pending)
            except Exception:  # the sender must outlive a bug or a locked database
                log.exception("sending alert notifications failed; retrying")
                self._stop.wait(BACKOFF_MIN_S)

    def _send(self, pending: Pending) -> None:
        if pending.target >= len(self.targets):  # the target was removed from the settings
            self._journal.delivered(pending.n)
            return
        target = self.targets[pending.target]
        title, body = message(pending.body, self._link(str(pending.body["device"])))
        problems: list[str] = []
        ok = target.service.notify(
            body=body,
            title=title,
            log_callback=lambda entry, plugin: problems.append(entry.message),
            log_level=logging.WARNING,
        )
        if ok:
            self._journal.delivered(pending.n)
            self.state.sent += 1
            if self.state.errors.pop(pending.target, None) is not None:
                log.info("notifications reach %s again", target.name)
            return
        error = "; ".join(problems)[:300] or "the service refused it"
        delay = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** min(pending.attempts, 10)) * random.uniform(0.8, 1.2)
        self._journal.failed(pending.n, error, now_us() + int(delay * 1e6))
        self.state.failures += 1
        self.state.last_error = f"{target.name}: {error}"
        if pending.target not in self.state.errors:
            log.error("a notification to %s failed (%s); retrying with backoff", target.name, error)
        self.state.errors[pending.target] = error

    def stuck_s(self) -> float:
        """How long the oldest undelivered notification has waited (0 when none)."""
        waiting = self._journal.undelivered()
        if not waiting or not self.targets:
            return 0.0
        return max(0.0, time.time() - min(p.found_ms for p in waiting) / 1000)
