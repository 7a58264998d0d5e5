"""`python -m bridge`: the composition root. Builds every client once and runs until SIGTERM."""

from __future__ import annotations

import faulthandler
import functools
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from urllib.parse import quote
from zoneinfo import ZoneInfo

import redis
from flask import Flask
from flask_socketio import SocketIO
from prometheus_client import CollectorRegistry

from bridge import accounts_cli, rebuild, webserver
from bridge.alerts.journal import AlertJournal, Journal
from bridge.alerts.notify import Notifier, parse_targets
from bridge.alerts.rules import RuleError
from bridge.alerts.service import AlertService
from bridge.alerts.shared import RedisJournal, SharedAlertService
from bridge.alerts.web import WebAlerts
from bridge.device_events import DeviceEvents
from bridge.devices import DeviceRegistry
from bridge.health import PING_TIMEOUT_S, Stages, check_health, ingest_totals, pipeline_counts
from bridge.history import HistoryReader, WebHistory
from bridge.inbox import Incoming, MqttInbox
from bridge.influx import InfluxError, InfluxTarget, InfluxV1
from bridge.metrics import AlertCollector, BridgeCollector, metrics_text
from bridge.pipeline import Pipeline
from bridge.refusals import RefusalNotifier
from bridge.rejections import RejectionLog
from bridge.report_schedule import ReportSchedule
from bridge.reports import ReportReader, WebReports
from bridge.rollups import Rollups
from bridge.router import Router
from bridge.settings import BridgeSettings, load_settings
from bridge.shared import RedisDeviceRegistry, RedisEndedSessions, RedisRejectionLog, SharedTotals
from bridge.shared import connect as connect_redis
from bridge.store import InfluxStore, StoreMetrics
from bridge.totals import Totals
from bridge.writers import PointWriter, make_writer
from common.mqtt import make_client
from common.settings import SettingsError, exit_bad_setting
from common.topics import Topics
from webui import AssetsMissing, WebAccess, WebContext, create_app, make_socketio
from webui.access import SESSION_LIFETIME_S
from webui.accounts import AccountStore
from webui.audit import AuditLog
from webui.reports import scheduled_report

# Seconds a connection may take to send a request's head, or stay idle between requests.
WEB_IDLE_TIMEOUT_S = 10
# A stop that takes longer than this prints every thread's stack to stderr (the log): the
# service manager kills a stuck bridge in the end, and the stacks say where it was stuck.
STOP_STUCK_S = 15
# Once ingest has stopped (all written and acknowledged, the broker disconnected), how long
# the web server's last threads may take to end before the bridge exits without them.
STRAGGLERS_S = 3

log = logging.getLogger("bridge")


def prepare_influx(
    influx: InfluxV1, history: HistoryReader, devices: DeviceRegistry, raw_retention: int | None = None
) -> None:
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
            if raw_retention is not None:
                policy = influx.keep_raw_for(raw_retention or None)
                kept = f"{raw_retention // 86_400} days" if raw_retention else "for ever"
                log.info("raw readings are kept %s (retention policy %r); the rollups for ever", kept, policy)
        elif raw_retention is not None:
            log.warning(
                "SENSORPIPE_RAW_RETENTION is for InfluxDB 1.x: on %s set the bucket's own retention "
                "(influx bucket update --retention); no rollups are kept there",
                version,
            )
        devices.saw_readings(history.latest_per_device())
    except InfluxError as exc:
        log.error("could not read the known devices from InfluxDB: %s", exc)


def warn_of_unwatched(alerts: AlertService, devices: DeviceRegistry) -> None:
    """A rule whose devices match none the bridge knows is most often a typo: say so."""
    known = devices.names()
    for rule in alerts.rules():
        if rule.devices != ("*",) and not any(rule.watches(device) for device in known):
            log.warning("alert rule %r watches %s: no device known matches (yet)", rule.id, ", ".join(rule.devices))


def build_alerts(settings: BridgeSettings, topics: Topics, shared: redis.Redis | None, namespace: str) -> AlertService:
    """The alert engine with its journal and notifier: in SQLite for one bridge, in Redis for
    several (bridge/alerts/shared.py). Raises RuleError for a bad rule."""
    public = settings.public_url or f"http://{settings.web_host}:{settings.web_port}"
    targets = parse_targets(settings.alert_notify.reveal())

    def notifier(journal: AlertJournal) -> Notifier:
        return Notifier(journal, targets, lambda device: f"{public}/device/{quote(device)}")

    rules, devices, stuck = settings.alert_rules, settings.max_devices, settings.stall_after_s
    if shared:
        journal = RedisJournal(shared, namespace)
        replica = settings.mqtt_client_id
        return SharedAlertService(shared, journal, notifier(journal), topics, rules, replica, devices, stuck)
    local = Journal(settings.alert_db)
    return AlertService(local, notifier(local), topics, rules, devices, stuck_after_s=stuck)


def build_report_schedule(settings: BridgeSettings, app: Flask) -> ReportSchedule:
    """The scheduled reports (bridge/report_schedule.py), sent to their own targets or the alerts'."""
    schedules = [s for s in (settings.report_daily, settings.report_weekly) if s is not None]
    targets = parse_targets(settings.report_notify.reveal() or settings.alert_notify.reveal())
    if schedules and not targets:
        log.warning(
            "scheduled reports are set, but no SENSORPIPE_REPORT_NOTIFY or SENSORPIPE_ALERT_NOTIFY to send them to"
        )
    return ReportSchedule(
        schedules,
        ZoneInfo(settings.timezone),
        targets,
        functools.partial(scheduled_report, app),
        settings.alert_db.with_name(f"reports-sent-{settings.mqtt_client_id}.json"),
    )


def build_stages(
    settings: BridgeSettings,
    topics: Topics,
    influx: InfluxV1,
    writer: PointWriter,
    devices: DeviceRegistry,
    sinks: list[object],
    registry: CollectorRegistry,
) -> Stages:
    """The ingest stages (bridge/pipeline.py), with `sinks` and the bridge's own ones."""
    v5 = settings.mqtt_version == "5"
    client = make_client(settings.mqtt_url, settings.mqtt_client_id, manual_ack=True, persistent=not v5, v5=v5)
    inbox = MqttInbox(client, settings.mqtt_url, topics, settings.share_group, settings.mqtt_window, v5)
    # The only writer of its series (no share group): it may remember the buckets it wrote.
    rollups = Rollups(influx, settings.influx_measurement, exclusive=not settings.share_group)
    interval_s = settings.write_interval_ms / 1000
    store: InfluxStore[Incoming] = InfluxStore(
        writer, StoreMetrics(registry), interval_s, rollups=rollups if settings.rollups else None
    )
    totals = Totals()
    # The sinks: each takes the news it has methods for (bridge/sinks.py). One line each.
    sinks = [
        *sinks,
        totals,  # /metrics and /api/pipeline
        RefusalNotifier(topics, inbox.publish_retained),  # the device itself
    ]
    for sink in sinks:
        if isinstance(sink, AlertService):
            sink.publish_with(inbox.publish_retained)  # its states, retained, on the bridge's connection
    router = Router(topics, settings.influx_measurement)
    pipeline = Pipeline(inbox, router, store, devices, sinks, settings.stall_after_s)
    return Stages(inbox, store, pipeline, totals)


def serve(settings: BridgeSettings) -> int:
    """Run the bridge with these settings until SIGTERM or SIGINT."""
    topics = Topics(settings.topic_prefix)
    influx = InfluxV1(InfluxTarget(settings.influx_url, settings.influx_db, settings.influx_token.reveal()))
    namespace = f"sensorpipe:{settings.topic_prefix}"
    redis_url = settings.redis_url.reveal() if settings.redis_url else None
    shared = connect_redis(redis_url) if redis_url else None
    devices: DeviceRegistry = (
        RedisDeviceRegistry(shared, namespace, settings.max_devices) if shared else DeviceRegistry(settings.max_devices)
    )
    rejections = RedisRejectionLog(shared, namespace) if shared else RejectionLog()
    writer = make_writer(settings.influx_api, influx, settings.influx_org)
    # Rollups are read where they are kept: on 1.x (which the writer learns from the server).
    history = HistoryReader(
        influx, settings.influx_measurement, rollups=lambda: settings.rollups and writer.reads_back()
    )
    ended = RedisEndedSessions(shared, namespace, SESSION_LIFETIME_S) if shared else None
    try:
        accounts = AccountStore(settings.accounts_db)
        audit = AuditLog(settings.accounts_db)
    except (OSError, sqlite3.Error) as exc:  # a folder, another program's file, no room
        print(f"bridge: accounts ({settings.accounts_db}): {exc}", file=sys.stderr)
        return 2
    web_access = WebAccess(settings.web_password.reveal(), settings.web_secret.reveal(), ended, accounts)
    # Readings reach the browsers before InfluxDB: a page keeps what its history lacks from
    # the replay of the last few write intervals (webui/live.py).
    replay_s = 5 + 3 * settings.write_interval_ms / 1000
    socketio, live = make_socketio(web_access, shared=shared is not None, replay_s=replay_s)
    registry = CollectorRegistry(auto_describe=False)
    try:
        alerts = build_alerts(settings, topics, shared, namespace)
    except (RuleError, OSError, sqlite3.Error) as exc:  # a rules file changed since it was read; the database
        print(f"bridge: alerts ({settings.alert_db}): {exc}", file=sys.stderr)
        return 2
    alerts.on_change(live.alert)
    # Status and health as they come, for the reports' gaps (1.x, where the rollups are kept too).
    events = DeviceEvents(influx, settings.influx_measurement, enabled=writer.reads_back)
    stages = build_stages(settings, topics, influx, writer, devices, [live, rejections, alerts, events], registry)
    registry.register(BridgeCollector(stages, rejections, devices, lambda: live.clients))
    registry.register(AlertCollector(alerts))
    totals: Callable[[], dict[str, int]] = functools.partial(ingest_totals, stages)
    if shared:  # with several bridges, /api/pipeline adds up everyone's totals
        shared_totals = SharedTotals(shared, namespace, settings.mqtt_client_id, totals)
        shared_totals.start()
        totals = shared_totals.totals
    context = WebContext(
        devices=devices,
        rejections=rejections,
        history=WebHistory(history),
        health=lambda: check_health(stages, influx, shared, alerts.problems),
        metrics=metrics_text(registry),
        pipeline=lambda: pipeline_counts(totals(), rejections),
        alerts=WebAlerts(alerts, devices.names),
        reports=WebReports(
            ReportReader(influx, settings.influx_measurement, rollups=lambda: settings.rollups and writer.reads_back())
        ),
        audit=audit,
        site=settings.site_name,
        zone=settings.timezone,
    )
    try:
        app = create_app(
            context,
            socketio,
            web_access,
            settings.web_secure_cookie,
            message_queue=redis_url,
            channel=f"{namespace}:socketio",
            proxies=settings.web_proxies,
            proxy_from=settings.web_proxy_from,
        )
    except AssetsMissing as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 1
    prepare_influx(influx, history, devices, settings.raw_retention)
    warn_of_unwatched(alerts, devices)
    reports = build_report_schedule(settings, app)
    reports.start()
    events.start()
    try:
        return run(app, socketio, settings, stages, alerts, influx)
    finally:
        reports.stop()
        events.stop()


def run(
    app: Flask, socketio: SocketIO, settings: BridgeSettings, stages: Stages, alerts: AlertService, influx: InfluxV1
) -> int:
    """Start the stages and serve the web UI until SIGTERM or SIGINT; then stop in order."""
    stages.pipeline.start()
    stages.inbox.start()
    alerts.start()
    log.info(
        "broker %s, topics %s/+/reading; dashboard on http://%s:%d/",
        settings.mqtt_url,
        settings.topic_prefix,
        settings.web_host,
        settings.web_port,
    )
    try:
        webserver.serve(
            app,
            settings.web_host,
            settings.web_port,
            threads=settings.web_threads,
            idle_timeout=WEB_IDLE_TIMEOUT_S,
            # The browsers first: each open websocket holds a web thread until it closes.
            on_stop=socketio.server.eio.disconnect,
            on_hup=alerts.reload,
        )
    except KeyboardInterrupt:
        pass  # SIGTERM before the web server took over the signals
    except OSError as exc:
        print(f"bridge: cannot serve on {settings.web_host}:{settings.web_port}: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean stop short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        log.info("stopping")
        faulthandler.dump_traceback_later(STOP_STUCK_S)
        stages.pipeline.stop()  # first: what has arrived is written and acknowledged on this connection
        alerts.stop()
        stages.inbox.stop()
        influx.close()
    return 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # leaves the web server's loop in the main thread


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:2] == ["rollups", "rebuild"]:  # a one-time job, not the bridge
        return rebuild.main(args[2:], os.environ)
    if args[:1] == ["accounts"]:  # the dashboard's accounts, not the bridge
        return accounts_cli.main(args[1:], os.environ)
    if args[:1] == ["audit"]:
        return accounts_cli.audit_main(args[1:], os.environ)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args, os.environ)
    except SettingsError as exc:
        exit_bad_setting("bridge", exc)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also when started with SIGINT ignored
    code = serve(settings)
    stragglers = _wait_for_threads(STRAGGLERS_S)
    if stragglers:
        # Python would wait for them at exit, for as long as a dead client's read takes;
        # nothing they hold is a reading, so the bridge leaves without them.
        log.warning("exiting with %d web thread(s) still busy: %s", len(stragglers), ", ".join(stragglers))
        logging.shutdown()
        os._exit(code)
    return code


def _wait_for_threads(timeout: float) -> list[str]:
    """Wait up to `timeout` s for the other non-daemon threads to end; the names of those that
    did not."""
    deadline = time.monotonic() + timeout
    others = [t for t in threading.enumerate() if not t.daemon and t is not threading.current_thread()]
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in others if t.is_alive()]


if __name__ == "__main__":
    sys.exit(main())
