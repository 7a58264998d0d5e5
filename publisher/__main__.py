"""`python -m publisher`: read the configured sensor on a schedule and deliver every reading.

The composition root: settings, sensor, outbox, link and sampler are built here and wired
together; nothing below reads the environment.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

from common.health import encode_health
from common.settings import SettingsError, exit_bad_setting
from common.topics import Topics
from publisher.calibration import in_force
from publisher.channel import Channel
from publisher.discovery import discovery_messages
from publisher.heartbeat import Heartbeat, heartbeat_path
from publisher.link import ReadingLink
from publisher.outbox import Outbox, OutboxError
from publisher.plausibility import Plausibility
from publisher.sampling import Sampler, SamplerConfig
from publisher.sensors import SensorReadError, open_sensors
from publisher.settings import PublisherSettings, load_settings

log = logging.getLogger("publisher")

DRAIN_ON_STOP_S = 5.0  # after SIGTERM, wait this long for acks; the rest waits in the outbox


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        exit_bad_setting("publisher", exc)
    try:
        outbox = Outbox(settings.outbox, settings.device, settings.outbox_max)
    except OutboxError as exc:
        exit_bad_setting("publisher", SettingsError(f"SENSORPIPE_OUTBOX (--outbox): {exc}"))
    try:
        sensors = open_sensors(settings.sensors, settings.sensor_context)
    except SensorReadError as exc:
        print(f"publisher: cannot open the {settings.sensor_name} sensor: {exc}", file=sys.stderr)
        return 1
    jump_limits = {"temperature": settings.max_jump_temperature, "humidity": settings.max_jump_humidity}
    channels = [
        Channel(spec, sensor, Plausibility(sensor.ranges, jump_limits), settings.calibration, settings.derived)
        for spec, sensor in zip(settings.sensors, sensors, strict=True)
    ]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    topics = Topics(settings.topic_prefix)
    # What this run delivers starts with the oldest reading still waiting in the outbox.
    waiting = outbox.after(-1, 1)
    first_seq = waiting[0].seq if waiting else outbox.next_seq
    link = ReadingLink(
        settings.mqtt_url,
        topics,
        settings.device,
        outbox,
        on_refusal=lambda refusal: sampler.bridge_refused(refusal, first_seq),
    )
    sampler = Sampler(
        SamplerConfig(settings.device, settings.sensor_name, settings.interval, settings.location, settings.count),
        channels,
        outbox,
        on_stored=link.notify,
        calibration=in_force(settings.calibration, settings.calibration_record),
    )
    log.info(
        "device %s: %s sensor every %g s to %s; outbox %s (%d waiting, next seq %d)",
        settings.device,
        settings.sensor_name,
        settings.interval,
        settings.mqtt_url,
        settings.outbox,
        outbox.depth,
        outbox.next_seq,
    )
    link.start()
    try:
        sampler.run(stop, every_slot=_announcer(settings, topics, link, sampler))
        # With --count, wait for every acknowledgement; once stopped, give it a few seconds.
        if settings.count and not stop.is_set():
            while not link.wait_drained(0.2) and not stop.is_set():
                pass
        if not link.wait_drained(DRAIN_ON_STOP_S):
            log.warning("%d readings not yet acknowledged wait in the outbox for the next start", outbox.depth)
        link.publish_retained(topics.health(settings.device), encode_health(sampler.health()))
        stats = sampler.stats
        log.info("took %d readings this run; %d wait in the outbox", stats.stored, outbox.depth)
        if stats.refused_count and stats.refused:
            # The broker acknowledged them, but they are not stored: never report them as delivered.
            log.error(
                "the bridge refused %d of this run's readings (the latest: %s: %s); they are not stored",
                stats.refused_count,
                stats.refused.reason,
                stats.refused.detail,
            )
    finally:
        link.stop()
        for sensor in sensors:
            sensor.close()
        outbox.close()
    # A run with --count wants a verdict: 1 when the bridge refused any of its readings.
    return 1 if settings.count and sampler.stats.refused_count else 0


def _announcer(settings: PublisherSettings, topics: Topics, link: ReadingLink, sampler: Sampler) -> Callable[[], None]:
    """After each slot: the heartbeat (publisher/heartbeat.py), health every
    `health_interval`, discovery after each (re)connect."""
    last_health = float("-inf")
    announced = False
    heartbeat = Heartbeat(heartbeat_path(settings.outbox), settings.interval)

    def announce() -> None:
        nonlocal last_health, announced
        try:
            heartbeat.beat(link.connected, lambda: sampler.health().outbox_depth)
        except OSError as exc:  # a full disk: the outbox says so louder; sampling goes on
            log.warning("cannot write the heartbeat %s: %s", heartbeat.path, exc)
        if not link.connected:
            announced = False
            return
        if settings.ha_discovery and not announced:
            for topic, config in discovery_messages(
                settings.ha_prefix, topics, settings.device, settings.sensors, settings.location, settings.derived
            ):
                link.publish_retained(topic, config)
        if not announced or time.monotonic() - last_health >= settings.health_interval:
            link.publish_retained(topics.health(settings.device), encode_health(sampler.health()))
            last_health = time.monotonic()
        announced = True

    return announce


if __name__ == "__main__":
    sys.exit(main())
