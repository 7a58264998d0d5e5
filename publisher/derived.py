"""Values the publisher derives from a reading's temperature and relative humidity.

`dew_point` (°C): the temperature at which the air's water vapour would condense, the
number behind mould and condensation risk. `absolute_humidity` (g/m³): how much water the
air holds. Both from the Magnus formula with Sonntag's (1990) coefficients over water,
a = 17.62 and b = 243.12 °C, which stay within 0.1 °C of the ITS-90 vapour-pressure
formulation from -20 to 50 °C (tests/test_derived.py). Below 0 °C the dew point is taken
over water, as hygrometers report it; a frost point would be higher.
"""

from __future__ import annotations

import math

A, B = 17.62, 243.12
# Water vapour's specific gas constant (J/(kg K)), for grams per cubic metre.
R_VAPOUR = 461.5


def saturation_hpa(celsius: float) -> float:
    """Saturation vapour pressure over water (hPa), Magnus-Sonntag."""
    return 6.112 * math.exp(A * celsius / (B + celsius))


def dew_point(celsius: float, relative_humidity: float) -> float:
    gamma = math.log(relative_humidity / 100) + A * celsius / (B + celsius)
    return B * gamma / (A - gamma)


def absolute_humidity(celsius: float, relative_humidity: float) -> float:
    vapour_pa = relative_humidity / 100 * saturation_hpa(celsius) * 100
    return vapour_pa / (R_VAPOUR * (celsius + 273.15)) * 1000


def with_derived(metrics: dict[str, float]) -> dict[str, float]:
    """`metrics` plus dew_point and absolute_humidity (2 decimals) when it has temperature and
    a humidity above 0 % (at 0 % there is no dew point); as it is otherwise."""
    temperature, humidity = metrics.get("temperature"), metrics.get("humidity")
    if temperature is None or humidity is None or not 0 < humidity <= 100 or "dew_point" in metrics:
        return metrics
    return metrics | {
        "dew_point": round(dew_point(temperature, humidity), 2),
        "absolute_humidity": round(absolute_humidity(temperature, humidity), 2),
    }
