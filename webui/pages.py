"""The dashboard page and the front-end packages it loads (from npm, served by this app)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, current_app, render_template, send_file

from common.topics import DEVICE_ID

pages = Blueprint("pages", __name__)

NODE_MODULES = Path(__file__).resolve().parent / "node_modules"
# The only files of node_modules the browser may fetch.
VENDOR_FILES = {
    "uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
    "socket.io.min.js": "socket.io-client/dist/socket.io.min.js",
}


class AssetsMissing(RuntimeError):
    """The front-end packages are not installed."""


def check_vendor_files() -> None:
    """Raise AssetsMissing naming the first missing file and how to install it."""
    for relative in VENDOR_FILES.values():
        if not (NODE_MODULES / relative).is_file():
            raise AssetsMissing(f"{NODE_MODULES / relative} is missing: run `npm ci` in webui/")


@pages.get("/")
def dashboard() -> str:
    return render_template("dashboard.html", signed_in=current_app.extensions["sensorpipe.access"].enabled)


@pages.get("/device/<device>")
def device_page(device: str) -> str:
    if not DEVICE_ID.fullmatch(device):
        abort(404)
    return render_template("device.html", device=device, signed_in=current_app.extensions["sensorpipe.access"].enabled)


@pages.get("/alerts")
def alerts_page() -> str:
    return render_template("alerts.html", signed_in=current_app.extensions["sensorpipe.access"].enabled)


@pages.get("/vendor/<name>")
def vendor(name: str) -> Response:
    relative = VENDOR_FILES.get(name)
    if relative is None:
        abort(404)
    return send_file(NODE_MODULES / relative, max_age=3600)
