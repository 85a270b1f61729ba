"""Canonical unit spellings for point values.

Every quantity has exactly one spelling, so dashboards and the cloud side can compare and
convert units without guessing whether ``m³/h``, ``m3/hr`` and ``cbm/h`` mean the same.
The spellings are ASCII and follow UCUM where it is readable (``Cel``, ``uS/cm``, ``1`` for
dimensionless), and the water industry's usage where UCUM is awkward (``NTU``, ``pH``).

:data:`Unit` is the pydantic type of a point's ``unit`` key, for the config and for every
driver's point model (part of the driver SDK).
"""

from __future__ import annotations

import difflib
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, StrictStr, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = ["CANONICAL_UNITS", "UNIT_DESCRIPTIONS", "Unit", "check_unit"]

#: Canonical unit -> what it measures (shown in the JSON Schema and in ``swm-edge`` help).
UNIT_DESCRIPTIONS: dict[str, str] = {
    # volume
    "m3": "cubic metre",
    "L": "litre",
    "mL": "millilitre",
    # flow
    "m3/s": "cubic metre per second",
    "m3/min": "cubic metre per minute",
    "m3/h": "cubic metre per hour",
    "m3/d": "cubic metre per day",
    "L/s": "litre per second",
    "L/min": "litre per minute",
    "L/h": "litre per hour",
    "L/d": "litre per day",
    # velocity (electromagnetic and ultrasonic meters report it)
    "m/s": "metre per second",
    # pressure
    "Pa": "pascal",
    "kPa": "kilopascal",
    "MPa": "megapascal",
    "mbar": "millibar",
    "bar": "bar",
    # length, level, depth
    "m": "metre",
    "cm": "centimetre",
    "mm": "millimetre",
    # temperature
    "Cel": "degree Celsius",
    # water quality
    "mg/L": "milligram per litre",
    "ug/L": "microgram per litre",
    "ppm": "part per million",
    "ppb": "part per billion",
    "NTU": "nephelometric turbidity unit",
    "FNU": "formazin nephelometric unit (ISO 7027 turbidity)",
    "uS/cm": "microsiemens per centimetre",
    "mS/cm": "millisiemens per centimetre",
    "pH": "pH",
    "mV": "millivolt (e.g. ORP)",
    # electrical
    "V": "volt",
    "A": "ampere",
    "mA": "milliampere",
    "W": "watt",
    "kW": "kilowatt",
    "kWh": "kilowatt hour",
    "Hz": "hertz",
    "Ohm": "ohm",
    # time
    "ms": "millisecond",
    "s": "second",
    "min": "minute",
    "h": "hour",
    "d": "day",
    # ratios and counts
    "%": "percent",
    "1": "dimensionless (counts, states, factors)",
}

#: Every canonical unit spelling.
CANONICAL_UNITS: frozenset[str] = frozenset(UNIT_DESCRIPTIONS)

# Common spellings that are not canonical, keyed by their normalised form (see _normalise).
# Only aliases whose meaning is unambiguous are listed: "ms" could be millisecond or a
# careless "mS", so it is not folded case-insensitively.
_ALIASES: dict[str, str] = {
    "degc": "Cel",
    "°c": "Cel",
    "c": "Cel",
    "celsius": "Cel",
    "degreescelsius": "Cel",
    "degreecelsius": "Cel",
    "cbm": "m3",
    "cum": "m3",
    "m^3": "m3",
    "cbm/h": "m3/h",
    "cbm/hr": "m3/h",
    "m3/hr": "m3/h",
    "m^3/h": "m3/h",
    "m3/hour": "m3/h",
    "cmh": "m3/h",
    "m3/sec": "m3/s",
    "m3/day": "m3/d",
    "l": "L",
    "ltr": "L",
    "litre": "L",
    "liter": "L",
    "lps": "L/s",
    "l/sec": "L/s",
    "lpm": "L/min",
    "l/m": "L/min",
    "lph": "L/h",
    "l/hr": "L/h",
    "ml": "mL",
    "mg/l": "mg/L",
    "ug/l": "ug/L",
    "us/cm": "uS/cm",
    "ms/cm": "mS/cm",
    "ntu": "NTU",
    "fnu": "FNU",
    "ph": "pH",
    "mv": "mV",
    "kpa": "kPa",
    "mpa": "MPa",
    "pa": "Pa",
    "millibar": "mbar",
    "mb": "mbar",
    "hpa": "mbar",
    "v": "V",
    "a": "A",
    "ma": "mA",
    "kwh": "kWh",
    "kw": "kW",
    "w": "W",
    "hz": "Hz",
    "ohm": "Ohm",
    "Ω": "Ohm",
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "mins": "min",
    "minute": "min",
    "minutes": "min",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "day": "d",
    "days": "d",
    "percent": "%",
    "pct": "%",
    "": "1",
    "-": "1",
    "none": "1",
    "count": "1",
    "counts": "1",
    "mps": "m/s",
    "metre": "m",
    "meter": "m",
    "metres": "m",
    "meters": "m",
}

# Units from other systems: no alias, but a hint how to convert with scale/offset.
_CONVERSIONS: dict[str, str] = {
    "psi": "use 'bar' with scale: 0.0689476 (or 'kPa' with scale: 6.89476)",
    "degf": "use 'Cel' with scale: 0.555556 and offset: -17.7778",
    "°f": "use 'Cel' with scale: 0.555556 and offset: -17.7778",
    "f": "use 'Cel' with scale: 0.555556 and offset: -17.7778",
    "gpm": "use 'L/min' with scale: 3.78541",
    "gal": "use 'L' with scale: 3.78541",
    "mgd": "use 'm3/d' with scale: 3785.41",
    "ft": "use 'm' with scale: 0.3048",
    "in": "use 'mm' with scale: 25.4",
    "inh2o": "use 'mbar' with scale: 2.49089",
    "mh2o": "use 'mbar' with scale: 98.0665",
    "mwc": "use 'mbar' with scale: 98.0665",
    "cfs": "use 'm3/s' with scale: 0.0283168",
    "k": "use 'Cel' with offset: -273.15",
}


def _normalise(unit: str) -> str:
    # NFKC folds superscripts (³ -> 3), the micro sign (µ -> μ) and the script l; the
    # rest folds the usual ways people type the same unit (case, spaces, caret, Greek mu).
    text = unicodedata.normalize("NFKC", unit).strip()
    text = text.replace("μ", "u").replace("^", "").replace("·", "").replace(" ", "")
    return text.casefold()


def _build_folded() -> dict[str, set[str]]:
    folded: dict[str, set[str]] = {}
    for canonical in CANONICAL_UNITS:
        folded.setdefault(_normalise(canonical), set()).add(canonical)
    return folded


# Canonical units by normalised form; a form can belong to several ("ms" vs "mS").
_FOLDED = _build_folded()


def check_unit(unit: str) -> str | None:
    """Check a unit spelling.

    Returns ``None`` when ``unit`` is canonical, else an error message naming the
    canonical spelling to use, e.g. ``check_unit("degC")`` -> ``"unknown unit 'degC'; did
    you mean 'Cel'?"``.
    """
    if unit in CANONICAL_UNITS:
        return None
    norm = _normalise(unit)
    suggestions: list[str] = []
    if norm in _ALIASES:
        suggestions = [_ALIASES[norm]]
    elif norm in _FOLDED:
        suggestions = sorted(_FOLDED[norm])
    elif norm in _CONVERSIONS:
        return f"unknown unit {unit!r}; {_CONVERSIONS[norm]}"
    else:
        # Superscripts and typos: compare the normalised form with the normalised
        # canonical forms, so "m³/hr" finds "m3/h" via "m3/hr".
        close = difflib.get_close_matches(norm, list(_FOLDED) + list(_ALIASES), n=3, cutoff=0.75)
        for form in close:
            for candidate in sorted(_FOLDED.get(form, set())) or [_ALIASES[form]]:
                if candidate not in suggestions:
                    suggestions.append(candidate)
    if not suggestions:
        allowed = ", ".join(sorted(CANONICAL_UNITS, key=str.casefold))
        return f"unknown unit {unit!r}; allowed: {allowed}"
    if len(suggestions) == 1:
        return f"unknown unit {unit!r}; did you mean {suggestions[0]!r}?"
    listed = " or ".join(repr(s) for s in suggestions)
    return f"unknown unit {unit!r}; did you mean {listed}?"


def _unit_before(value: Any) -> Any:
    # YAML reads "unit: 1" (the dimensionless unit) as an integer.
    if type(value) is int and value == 1:
        return "1"
    return value


def _unit_after(value: str) -> str:
    problem = check_unit(value)
    if problem is not None:
        raise PydanticCustomError("unit_unknown", problem)
    return value


#: A canonical unit spelling, as a pydantic field type: anything else is an error whose
#: message suggests the canonical spelling (see :func:`check_unit`).
Unit = Annotated[
    StrictStr,
    BeforeValidator(_unit_before),
    AfterValidator(_unit_after),
    # The integer 1 is listed because that is what YAML makes of "unit: 1".
    WithJsonSchema({"enum": [*sorted(CANONICAL_UNITS), 1]}),
]
