"""Alert rules: what to watch, read from a TOML file or the dashboard, checked strictly.

A rule watches one metric of some devices (`above` or `below` a threshold, for a duration,
with hysteresis) or the silence of some devices (`no_data`). The format is in
docs/contract.md ("Alerts"). Every mistake is an error naming the rule and the key: a rule
that is silently ignored is an alarm that never rings.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from common.reading import FORBIDDEN_METRICS, METRIC_NAME
from common.topics import DEVICE_ID

RULE_ID = re.compile(r"[a-z0-9_-]{1,64}")
DEVICE_PATTERN = re.compile(r"[A-Za-z0-9_.*?-]{1,64}")
DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_S = 366 * 86400
MAX_RULES = 10_000
KEYS = frozenset({"id", "devices", "metric", "above", "below", "no_data", "for", "clear", "repeat", "severity"})
Kind = Literal["above", "below", "no_data"]
Severity = Literal["warning", "critical"]


class RuleError(ValueError):
    """A rule that cannot be used, with one line saying which and why."""


@dataclass(frozen=True)
class Rule:
    """One rule. `threshold` is the `above`/`below` level, or the `no_data` seconds."""

    id: str
    kind: Kind
    threshold: float
    metric: str | None = None
    devices: tuple[str, ...] = ("*",)
    for_s: float = 0.0
    clear: float | None = None  # above/below: resolves only past this level
    repeat_s: float | None = None
    severity: Severity = "warning"
    provisioned: bool = False  # from the rules file: read-only on the dashboard
    _exact: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        exact = frozenset(p for p in self.devices if not any(c in p for c in "*?"))
        object.__setattr__(self, "_exact", exact)

    def watches(self, device: str) -> bool:
        """Whether this rule applies to `device`."""
        if device in self._exact:
            return True
        return any(fnmatch.fnmatchcase(device, p) for p in self.devices if p not in self._exact)

    @property
    def clear_level(self) -> float:
        """Where a firing threshold alert resolves: `clear`, or the threshold itself."""
        return self.threshold if self.clear is None else self.clear

    def breached(self, value: float) -> bool:
        """The value is past the threshold."""
        return value > self.threshold if self.kind == "above" else value < self.threshold

    def cleared(self, value: float) -> bool:
        """The value is back past the clear level (hysteresis)."""
        return value <= self.clear_level if self.kind == "above" else value >= self.clear_level

    def to_json(self) -> dict[str, object]:
        """The rule in the contract's form (durations as text)."""
        body: dict[str, object] = {"id": self.id, "devices": list(self.devices)}
        if self.kind == "no_data":
            body["no_data"] = format_duration(self.threshold)
        else:
            body["metric"] = self.metric
            body[self.kind] = self.threshold
            body["for"] = format_duration(self.for_s)
            if self.clear is not None:
                body["clear"] = self.clear
        if self.repeat_s is not None:
            body["repeat"] = format_duration(self.repeat_s)
        body["severity"] = self.severity
        body["provisioned"] = self.provisioned
        return body


def parse_duration(value: object, key: str = "duration") -> float:
    """`"90s"`, `"10m"`, `"1.5h"`, `"2d"` as seconds (0 allowed, at most a year)."""
    if not isinstance(value, str) or not (match := DURATION.fullmatch(value.strip())):
        raise RuleError(f'{key} must be a number and s, m, h or d (like "10m"), not {value!r:.40}')
    seconds = float(match.group(1)) * UNIT_S[match.group(2)]
    if seconds > MAX_DURATION_S:
        raise RuleError(f"{key} {value!r} is longer than a year")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form: 600 -> "10m", 90 -> "90s"."""
    for unit in ("d", "h", "m"):
        if seconds and seconds % UNIT_S[unit] == 0:
            return f"{int(seconds // UNIT_S[unit])}{unit}"
    return f"{seconds:g}s"


def rule_from_json(body: Mapping[str, object], provisioned: bool = False) -> Rule:
    """A rule from a TOML table or a JSON object; raises RuleError naming the rule."""
    name = body.get("id")
    if not isinstance(name, str) or not RULE_ID.fullmatch(name):
        raise RuleError(f"rule id {name!r:.70} must be 1 to 64 of a-z 0-9 _ -")
    try:
        return _rule(name, body, provisioned)
    except RuleError as exc:
        raise RuleError(f"rule {name!r}: {exc}") from None


def _rule(name: str, body: Mapping[str, object], provisioned: bool) -> Rule:
    unknown = sorted(set(body) - KEYS - {"provisioned"})
    if unknown:
        raise RuleError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})")
    kinds = [k for k in ("above", "below", "no_data") if k in body]
    if len(kinds) != 1:
        raise RuleError("needs exactly one of above, below, no_data")
    kind: Kind = kinds[0]  # type: ignore[assignment]  # one of the three literals above
    devices = _devices(body.get("devices", "*"))
    severity = body.get("severity", "warning")
    if severity not in ("warning", "critical"):
        raise RuleError(f"severity must be warning or critical, not {severity!r:.40}")
    repeat_s = parse_duration(body["repeat"], "repeat") if "repeat" in body else None
    if repeat_s is not None and repeat_s < 60:
        raise RuleError("repeat must be at least 1m")
    if kind == "no_data":
        for key in ("metric", "for", "clear"):
            if key in body:
                raise RuleError(f"{key} has no meaning for a no_data rule")
        silence_s = parse_duration(body["no_data"], "no_data")
        if silence_s < 1:
            raise RuleError("no_data must be at least 1s")
        return Rule(name, kind, silence_s, None, devices, 0.0, None, repeat_s, severity, provisioned)
    metric = body.get("metric")
    if not isinstance(metric, str) or not METRIC_NAME.fullmatch(metric) or metric in FORBIDDEN_METRICS:
        raise RuleError(f'metric must be a metric name like "temperature", not {metric!r:.40}')
    threshold = _number(body[kind], kind)
    for_s = parse_duration(body["for"], "for") if "for" in body else 0.0
    clear = _number(body["clear"], "clear") if "clear" in body else None
    if clear is not None and (clear > threshold if kind == "above" else clear < threshold):
        side = "at or below" if kind == "above" else "at or above"
        raise RuleError(f"clear {clear:g} must be {side} the threshold {threshold:g} (it is where the alert resolves)")
    return Rule(name, kind, threshold, metric, devices, for_s, clear, repeat_s, severity, provisioned)


def _number(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not abs(value) < 1e300:
        raise RuleError(f"{key} must be a finite number, not {value!r:.40}")
    return float(value)


def _devices(value: object) -> tuple[str, ...]:
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
        raise RuleError('devices must be a device id, a glob like "sim-*", or a list of them')
    for pattern in patterns:
        if not DEVICE_PATTERN.fullmatch(pattern):
            raise RuleError(f"device {pattern!r:.70} is neither a device id nor a glob of one (A-Z a-z 0-9 _ . - * ?)")
        if not any(c in pattern for c in "*?") and not DEVICE_ID.fullmatch(pattern):
            raise RuleError(f"device {pattern!r:.70} is not a device id (it must start with a letter or digit)")
    return tuple(dict.fromkeys(patterns))


def check_unique(rules: Iterable[Rule]) -> list[Rule]:
    """The rules as a list; raises RuleError on a repeated id or too many rules."""
    seen: set[str] = set()
    listed = list(rules)
    if len(listed) > MAX_RULES:
        raise RuleError(f"{len(listed)} rules, at most {MAX_RULES}")
    for rule in listed:
        if rule.id in seen:
            raise RuleError(f"rule {rule.id!r} is defined twice")
        seen.add(rule.id)
    return listed


def load_rules_file(path: Path) -> list[Rule]:
    """The rules of a TOML file (`[[rule]]` tables); raises RuleError with the file's name."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RuleError(f"{path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise RuleError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{path}: not TOML: {exc}") from None
    unknown = sorted(set(document) - {"rule"})
    if unknown:
        raise RuleError(f"{path}: unknown table {unknown[0]!r}; rules are [[rule]] tables")
    tables = document.get("rule", [])
    if not isinstance(tables, list):
        raise RuleError(f"{path}: rules are [[rule]] tables (an array of tables), not [rule]")
    try:
        return check_unique(rule_from_json(table, provisioned=True) for table in tables)
    except RuleError as exc:
        raise RuleError(f"{path}: {exc}") from None
