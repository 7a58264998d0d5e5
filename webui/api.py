"""The JSON API: devices, history, rejections, health and metrics."""

from __future__ import annotations

import re
from collections.abc import Mapping

from flask import Blueprint, Response, current_app, jsonify, request

from common.reading import FORBIDDEN_METRICS, METRIC_NAME, now_us
from common.topics import DEVICE_ID
from webui.context import HistoryFailed, HistoryUnavailable, WebContext

api = Blueprint("api", __name__)

# ASCII digits only ([0-9], not \d or str.isdigit(), which take "²" and other scripts' digits).
RANGE = re.compile(r"([1-9][0-9]{0,5})([smhdw])")
WHOLE = re.compile(r"[0-9]{1,6}")
EPOCH_MS = re.compile(r"[0-9]{1,16}(\.[0-9]{1,6})?")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_RANGE_S = 366 * 86400
MAX_POINTS = 5000
DEFAULT_POINTS = 1000
MAX_TIME_MS = 9_223_372_036_854  # InfluxDB's last nanosecond, 2262-04-11, in ms
MAX_SPARKLINE_DEVICES = 100


def _context() -> WebContext:
    context: WebContext = current_app.extensions["sensorpipe"]
    return context


def _bad_request(message: str) -> tuple[Response, int]:
    return jsonify(error=message), 400


@api.get("/api/devices")
def devices() -> Response:
    """Every known device (or those given as `device`, repeated): online, last_seen (epoch
    ms), metrics and latest values."""
    wanted = request.args.getlist("device")
    return jsonify(_context().devices.snapshot(wanted or None))


@api.get("/api/history")
def history() -> Response | tuple[Response, int]:
    """One device's metric over `since` (e.g. 15m, 1h, 7d) or `from`..`to` (epoch ms), as at
    most `points` points."""
    device = request.args.get("device", "")
    metric = request.args.get("metric", "")
    if not DEVICE_ID.fullmatch(device):
        return _bad_request("device: give a device id, e.g. device=pi-kitchen")
    if not METRIC_NAME.fullmatch(metric) or metric in FORBIDDEN_METRICS:
        return _bad_request("metric: give a metric name, e.g. metric=temperature")
    points = _points(request.args)
    span = _span(request.args)
    if isinstance(points, str) or isinstance(span, str):
        return _bad_request(points if isinstance(points, str) else str(span))
    try:
        return jsonify(_context().history.series(device, metric, span[0], span[1], points))
    except HistoryUnavailable as exc:
        return jsonify(error=str(exc)), 503
    except HistoryFailed as exc:  # a query of ours the store cannot run: a bug, not the caller's
        return jsonify(error=str(exc)), 500


@api.get("/api/sparklines")
def sparklines() -> Response | tuple[Response, int]:
    """Every metric of several devices (`device` repeated, at most 100) over `since` or
    `from`..`to`, as about `points` means per metric: what the overview draws, in one request."""
    devices = request.args.getlist("device")
    if not devices or len(devices) > MAX_SPARKLINE_DEVICES or not all(DEVICE_ID.fullmatch(d) for d in devices):
        return _bad_request(f"device: 1 to {MAX_SPARKLINE_DEVICES} device ids, e.g. device=a&device=b")
    points = _points(request.args)
    span = _span(request.args)
    if isinstance(points, str) or isinstance(span, str):
        return _bad_request(points if isinstance(points, str) else str(span))
    try:
        return jsonify(_context().history.sparklines(sorted(set(devices)), span[0], span[1], points))
    except HistoryUnavailable as exc:
        return jsonify(error=str(exc)), 503
    except HistoryFailed as exc:
        return jsonify(error=str(exc)), 500


def _points(args: Mapping[str, str]) -> int | str:
    """`points`, 1 to MAX_POINTS (default DEFAULT_POINTS); or what is wrong."""
    raw = args.get("points", str(DEFAULT_POINTS))
    if not WHOLE.fullmatch(raw) or not 1 <= int(raw) <= MAX_POINTS:
        return f"points: a whole number from 1 to {MAX_POINTS}"
    return int(raw)


def _span(args: Mapping[str, str]) -> tuple[int, int] | str:
    """(start, end) in Unix µs from `since`, or from `from` and `to`; or what is wrong."""
    end_us = now_us()
    if "from" in args or "to" in args:
        raw_from, raw_to = args.get("from", ""), args.get("to", f"{end_us / 1000:.3f}")
        if not (EPOCH_MS.fullmatch(raw_from) and EPOCH_MS.fullmatch(raw_to)):
            return "from, to: epoch milliseconds, e.g. from=1764000000000"
        start_ms, end_ms = float(raw_from), float(raw_to)
        if end_ms > MAX_TIME_MS:
            return "from, to: at most 9223372036854 (2262-04-11, the last time InfluxDB can store)"
        if not start_ms < end_ms:
            return "from, to: from must be before to"
        if (end_ms - start_ms) / 1000 > MAX_RANGE_S:
            return "from, to: at most 366 days apart"
        return int(start_ms * 1000), int(end_ms * 1000)
    match = RANGE.fullmatch(args.get("since", "1h"))
    if match is None:
        return "since: a number and a unit s, m, h, d or w, e.g. since=1h"
    range_s = int(match.group(1)) * UNIT_S[match.group(2)]
    if range_s > MAX_RANGE_S:
        return "since: at most 366 days"
    return end_us - range_s * 1_000_000, end_us


@api.get("/api/rejections")
def rejections() -> Response:
    """Counts of rejected messages by reason and the latest ones, newest first."""
    log = _context().rejections
    return jsonify(counts=log.counts(), latest=log.latest())


@api.get("/api/pipeline")
def pipeline() -> Response:
    """What the pipeline panel shows: totals since start, and the broker and InfluxDB state."""
    healthy, details = _context().health()
    return jsonify(healthy=healthy, **details, **_context().pipeline())


@api.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 when MQTT and InfluxDB are reachable, 503 with the reasons when not."""
    healthy, details = _context().health()
    return jsonify(status="ok" if healthy else "unavailable", **details), 200 if healthy else 503


@api.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition."""
    return Response(_context().metrics(), mimetype="text/plain; version=0.0.4")
