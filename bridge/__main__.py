"""`python -m bridge`: the composition root. Builds every client once and runs until SIGTERM."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from prometheus_client import CollectorRegistry

from bridge.devices import DeviceRegistry
from bridge.health import PING_TIMEOUT_S, check_health, ingest_totals, pipeline_counts
from bridge.history import HistoryReader
from bridge.influx import InfluxError, InfluxTarget, InfluxV1
from bridge.ingest import Ingest
from bridge.metrics import BridgeCollector, IngestMetrics, metrics_text
from bridge.rejections import RejectionLog
from bridge.settings import BridgeSettings, load_settings
from bridge.shared import RedisDeviceRegistry, RedisEndedSessions, RedisRejectionLog, SharedTotals
from bridge.shared import connect as connect_redis
from bridge.writers import make_writer
from common.mqtt import make_client
from common.settings import SettingsError, exit_bad_setting
from common.topics import Topics
from webui import AssetsMissing, WebAccess, WebContext, create_app, make_socketio
from webui.access import SESSION_LIFETIME_S

log = logging.getLogger("bridge")


def prepare_influx(influx: InfluxV1, history: HistoryReader, devices: DeviceRegistry) -> None:
    """Say which server this is, create a 1.x database, learn the known devices.

    InfluxDB may be down at start: then log it and go on; writes retry until it is back.
    """
    try:
        version = influx.ping(timeout=PING_TIMEOUT_S)
    except InfluxError as exc:
        log.error("InfluxDB not reachable (%s); readings wait at the broker until it is", exc)
        return
    log.info("InfluxDB %s at %s, database or bucket %r", version, influx.target.url, influx.target.database)
    try:
        if version.startswith("1."):
            influx.ensure_database()
        devices.saw_readings(history.latest_per_device())
    except InfluxError as exc:
        log.error("could not read the known devices from InfluxDB: %s", exc)


def serve(settings: BridgeSettings) -> int:
    """Run the bridge with these settings until SIGTERM or SIGINT."""
    topics = Topics(settings.topic_prefix)
    influx = InfluxV1(InfluxTarget(settings.influx_url, settings.influx_db, settings.influx_token))
    namespace = f"sensorpipe:{settings.topic_prefix}"
    shared = connect_redis(settings.redis_url) if settings.redis_url else None
    if shared:
        devices: DeviceRegistry = RedisDeviceRegistry(shared, namespace, settings.max_devices)
    else:
        devices = DeviceRegistry(settings.max_devices)
    rejections = RedisRejectionLog(shared, namespace) if shared else RejectionLog()
    history = HistoryReader(influx, settings.influx_measurement)
    client = make_client(settings.mqtt_url, settings.mqtt_client_id, persistent=True, manual_ack=True)
    ended = RedisEndedSessions(shared, namespace, SESSION_LIFETIME_S) if shared else None
    web_access = WebAccess(settings.web_password, settings.web_secret, ended)
    socketio, live = make_socketio(web_access, shared=shared is not None)
    registry = CollectorRegistry(auto_describe=False)
    ingest = Ingest(
        client,
        topics,
        make_writer(settings.influx_api, influx, settings.influx_org),
        settings.influx_measurement,
        devices,
        rejections,
        IngestMetrics(registry),
        sinks=[live],
        linger_s=settings.batch_linger_ms / 1000,
        share_group=settings.share_group,
        stall_after_s=settings.stall_after_s,
    )
    registry.register(BridgeCollector(ingest, rejections, devices, lambda: live.clients))
    totals: Callable[[], dict[str, int]] = functools.partial(ingest_totals, ingest)
    if shared:  # with several bridges, /api/pipeline adds up everyone's totals
        shared_totals = SharedTotals(shared, namespace, settings.mqtt_client_id, totals)
        shared_totals.start()
        totals = shared_totals.totals
    context = WebContext(
        devices=devices,
        rejections=rejections,
        history=history,
        health=lambda: check_health(ingest, influx, shared),
        metrics=metrics_text(registry),
        pipeline=lambda: pipeline_counts(totals(), rejections),
    )
    try:
        app = create_app(
            context,
            socketio,
            web_access,
            settings.web_secure_cookie,
            message_queue=settings.redis_url,
            channel=f"{namespace}:socketio",
            proxies=settings.web_proxies,
        )
    except AssetsMissing as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 1
    prepare_influx(influx, history, devices)
    ingest.start()
    client.connect_async(settings.mqtt_url.host, settings.mqtt_url.port, keepalive=30)
    client.loop_start()
    log.info(
        "broker %s, topics %s/+/reading; dashboard on http://%s:%d/",
        settings.mqtt_url,
        settings.topic_prefix,
        settings.web_host,
        settings.web_port,
    )
    try:
        socketio.run(app, host=settings.web_host, port=settings.web_port, allow_unsafe_werkzeug=True, log_output=False)
    except OSError as exc:
        print(f"bridge: cannot serve on {settings.web_host}:{settings.web_port}: {exc.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean stop short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.info("stopping")
        ingest.stop()  # first: the batch at hand is still acknowledged on this connection
        client.disconnect()
        client.loop_stop()
        influx.close()
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # leaves the web server's loop in the main thread


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per HTTP request
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        exit_bad_setting("bridge", exc)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
