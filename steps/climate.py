"""Physical and climatological facts about surface air temperature and dew point, in deg F, with
their sources: the ranges validate enforces and the served model accepts, and the Magnus relation.

Everything here is said once; validate, the gate, the served model (through the coefficients
artifact train writes) and the synthetic source read it from here.
"""

from __future__ import annotations

import numpy as np

# Record extremes of surface air temperature, WMO Archive of Weather and Climate Extremes
# (https://wmo.asu.edu): highest 56.7 C (134.1 F), Furnace Creek (Death Valley), 10 July 1913;
# lowest -89.2 C (-128.6 F), Vostok, Antarctica, 21 July 1983. A daily mean lies between them; the
# range keeps a small margin beyond both.
TEMP_RANGE_F = (-130.0, 140.0)
# Dew point: never above the air temperature (saturation, relative humidity <= 100 %), so never
# above the temperature record; the highest reported is about 35 C (95 F), Dhahran, Saudi Arabia,
# 8 July 2003. At the coldest temperatures air holds almost no water: an Antarctic winter dew point
# reaches about -125 F, so the low end leaves room below the temperature record.
DEWP_RANGE_F = (-150.0, 100.0)
# GSOD reports TEMP and DEWP in tenths of a degree F (NCEI GSOD readme, "Format").
REPORTING_RESOLUTION_F = 0.1
# The freezing point of water, deg F.
FREEZING_F = 32.0

# Magnus formula for saturation vapour pressure over water, temperatures in deg C (Alduchov and
# Eskridge 1996, "Improved Magnus form approximation of saturation vapor pressure", J. Appl.
# Meteor. 35, 601-609; as used for dew point by Lawrence 2005, "The relationship between relative
# humidity and the dewpoint temperature in moist air", Bull. Amer. Meteor. Soc. 86, 225-233).
MAGNUS_A = 17.625
MAGNUS_B = 243.04


def f_to_c(temp_f: np.ndarray | float) -> np.ndarray:
    """Degrees Fahrenheit to degrees Celsius."""
    return (np.asarray(temp_f, dtype=float) - 32.0) / 1.8


def dewpoint_f(temp_f: np.ndarray | float, rh_percent: np.ndarray | float) -> np.ndarray:
    """Dew point (deg F) from temperature (deg F) and relative humidity (%) by the Magnus formula.

    Td = b * g / (a - g) with g = ln(RH / 100) + a * T / (b + T), T and Td in deg C. At 100 % the
    dew point is the temperature; below, it is lower (Lawrence 2005).
    """
    temp_c = f_to_c(temp_f)
    gamma = np.log(np.asarray(rh_percent, dtype=float) / 100.0) + MAGNUS_A * temp_c / (
        MAGNUS_B + temp_c
    )
    return MAGNUS_B * gamma / (MAGNUS_A - gamma) * 1.8 + 32.0
