"""Reading back from InfluxDB: a downsampled series for a chart, the latest point per device."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bridge.influx import InfluxV1, quote_ident, quote_string
from common.reading import Reading, now_us

TAG_AND_SPECIAL_COLUMNS = frozenset({"time", "device", "sensor", "location", "seq"})


@dataclass(frozen=True)
class Series:
    """One metric of one device: `points` as [epoch ms, value] pairs, oldest first."""

    device: str
    metric: str
    start_ms: float
    end_ms: float
    interval_ms: int
    points: list[list[float]]


class HistoryReader:
    """InfluxQL queries over the readings measurement."""

    def __init__(self, influx: InfluxV1, measurement: str) -> None:
        self._influx = influx
        self._measurement = quote_ident(measurement)

    def series(self, device: str, metric: str, range_s: float, points: int) -> Series:
        """The last `range_s` seconds, averaged into at most `points` equal time buckets.

        A bucket without a reading is left out (`fill(none)`), so a gap stays a gap.
        Raises InfluxUnavailable or InfluxRejected.
        """
        end_us = now_us()
        start_us = end_us - int(range_s * 1_000_000)
        interval_ms = max(1, math.ceil(range_s * 1000 / points))
        query = (
            f"SELECT mean({quote_ident(metric)}) FROM {self._measurement} "
            f'WHERE "device" = {quote_string(device)} '
            f"AND time >= {start_us * 1000} AND time <= {end_us * 1000} "
            f"GROUP BY time({interval_ms}ms) fill(none)"
        )
        rows: list[list[float]] = []
        for serie in self._influx.query(query):
            rows.extend([row[0], row[1]] for row in serie["values"] if row[1] is not None)
        # GROUP BY time aligns buckets to multiples of the interval: the first may start
        # a little before the range and hold one bucket more than asked.
        return Series(device, metric, start_us / 1000, end_us / 1000, interval_ms, rows[-points:])

    def latest_per_device(self) -> list[Reading]:
        """The newest stored reading of every device (to know the devices after a restart)."""
        found = []
        query = f'SELECT * FROM {self._measurement} GROUP BY "device" ORDER BY time DESC LIMIT 1'
        for serie in self._influx.query(query):
            row = dict(zip(serie["columns"], serie["values"][0], strict=True))
            metrics = {
                name: float(value)
                for name, value in row.items()
                if name not in TAG_AND_SPECIAL_COLUMNS and isinstance(value, (int, float))
            }
            if metrics:
                found.append(
                    Reading(
                        device=serie.get("tags", {}).get("device", ""),
                        ts_us=int(row["time"]) * 1000,
                        metrics=metrics,
                        seq=row.get("seq"),
                        sensor=row.get("sensor"),
                        location=row.get("location"),
                    )
                )
        return found
