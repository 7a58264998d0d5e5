"""`python -m publisher`: read the configured sensor every interval and publish each reading."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from common.reading import Reading
from common.settings import SettingsError, exit_bad_setting
from common.topics import Topics
from publisher.link import ReadingLink
from publisher.sensors import Sensor, SensorReadError, open_sensor
from publisher.settings import PublisherSettings, load_settings

log = logging.getLogger("publisher")


def run(settings: PublisherSettings, sensor: Sensor, link: ReadingLink, stop: threading.Event) -> int:
    """Read and publish until `stop` is set or `settings.count` readings are acknowledged.

    Returns the number of readings published.
    """
    seq = 0
    failed = 0
    next_at = time.monotonic()
    while not stop.is_set() and (settings.count == 0 or seq < settings.count):
        try:
            measurement = sensor.read()
        except SensorReadError as exc:
            failed += 1
            log.warning("sensor read failed (%d so far): %s", failed, exc)
        else:
            link.publish(
                Reading(
                    device=settings.device,
                    ts_us=measurement.ts_us,
                    metrics=measurement.metrics,
                    seq=seq,
                    sensor=settings.sensor,
                    location=settings.location,
                )
            )
            seq += 1
        # A fixed schedule: the interval does not stretch by the time a read takes.
        next_at += settings.interval
        stop.wait(max(0.0, next_at - time.monotonic()))
    return seq


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: settings, sensor and MQTT link are built here and passed down."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        exit_bad_setting("publisher", exc)
    try:
        sensor = open_sensor(settings.sensor, settings.pin, settings.sim_seed)
    except SensorReadError as exc:
        print(f"publisher: cannot open the {settings.sensor} sensor: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    link = ReadingLink(settings.mqtt_url, Topics(settings.topic_prefix), settings.device)
    log.info(
        "device %s: %s sensor every %g s to %s", settings.device, settings.sensor, settings.interval, settings.mqtt_url
    )
    link.start()
    try:
        published = run(settings, sensor, link, stop)
        # With --count, wait for every acknowledgement; once stopped, give it 5 s at most.
        deadline = None if settings.count and not stop.is_set() else time.monotonic() + 5.0
        while not link.wait_all_acked(timeout=0.2):
            if deadline is None and stop.is_set():
                deadline = time.monotonic() + 5.0
            if deadline is not None and time.monotonic() > deadline:
                log.warning("%d readings were not acknowledged by the broker and are lost", link.unacked())
                break
        log.info("published %d readings", published)
    finally:
        link.stop()
        sensor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
