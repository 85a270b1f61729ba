"""Canonical unit spellings and the suggestions for the usual misspellings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swm_edge.units import CANONICAL_UNITS, UNIT_DESCRIPTIONS, check_unit

REQUIRED = [
    "m3",
    "m3/h",
    "m3/s",
    "L",
    "L/s",
    "L/min",
    "L/h",
    "bar",
    "mbar",
    "kPa",
    "Pa",
    "MPa",
    "m",
    "cm",
    "mm",
    "Cel",
    "mg/L",
    "ug/L",
    "NTU",
    "uS/cm",
    "mS/cm",
    "pH",
    "mV",
    "V",
    "A",
    "%",
    "s",
    "h",
    "ppm",
    "1",
]


def test_required_units_are_canonical() -> None:
    assert set(REQUIRED) <= CANONICAL_UNITS
    for unit in REQUIRED:
        assert check_unit(unit) is None


def test_every_canonical_unit_is_described_and_ascii() -> None:
    assert set(UNIT_DESCRIPTIONS) == CANONICAL_UNITS
    assert all(unit.isascii() and " " not in unit for unit in CANONICAL_UNITS)


@pytest.mark.parametrize(
    ("given_unit", "suggestion"),
    [
        ("degC", "Cel"),
        ("°C", "Cel"),
        ("℃", "Cel"),
        ("celsius", "Cel"),
        ("m³/h", "m3/h"),
        ("m^3/h", "m3/h"),
        ("m3/hr", "m3/h"),
        ("M3/H", "m3/h"),
        ("m³", "m3"),
        ("l/s", "L/s"),
        ("lps", "L/s"),
        ("l/min", "L/min"),
        ("µS/cm", "uS/cm"),
        ("μS/cm", "uS/cm"),
        ("us/cm", "uS/cm"),
        ("mg/l", "mg/L"),
        ("µg/L", "ug/L"),
        ("ntu", "NTU"),
        ("PH", "pH"),
        ("KPA", "kPa"),
        ("percent", "%"),
        ("sec", "s"),
        ("", "1"),
    ],
)
def test_misspellings_suggest_the_canonical_unit(given_unit: str, suggestion: str) -> None:
    assert check_unit(given_unit) == f"unknown unit {given_unit!r}; did you mean {suggestion!r}?"


def test_foreign_units_get_a_conversion_hint() -> None:
    message = check_unit("psi")
    assert message is not None and "'bar' with scale: 0.0689476" in message
    message = check_unit("degF")
    assert message is not None and "'Cel'" in message and "offset" in message


def test_hopeless_unit_lists_the_allowed_ones() -> None:
    message = check_unit("furlongs/fortnight")
    assert message is not None and message.startswith(
        "unknown unit 'furlongs/fortnight'; allowed: "
    )
    assert all(unit in message for unit in REQUIRED)


@given(st.text(max_size=12))
def test_check_unit_is_total(unit: str) -> None:
    # Any string gets None (canonical) or a message naming it; never an exception.
    result = check_unit(unit)
    assert (result is None) == (unit in CANONICAL_UNITS)
    if result is not None:
        assert result.startswith(f"unknown unit {unit!r}")
