"""Loading device profiles (``drivers/modbus/profiles/<name>.yaml``) into point lists.

Deliberately small: the simulators need a profile's points, not the core's validated config
loader with FILE:LINE:COL errors (``swm_edge.config``), which they must not depend on.
The format is described in docs/decisions/0001-module-contracts.md, "Device profiles".
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from swm_edge.modbus.codec import register_count
from swm_edge.model import DataType, PointSpec, Table, WordOrder

__all__ = [
    "Profile",
    "available_profiles",
    "load_points",
    "load_profile",
    "profile_dir",
    "profile_path",
    "synthetic_points",
]

_POINT_KEYS = frozenset(
    {"name", "table", "address", "type", "word_order", "byte_swap", "scale", "offset", "unit"}
)
_PROFILE_KEYS = frozenset({"manufacturer", "model", "kind", "source", "device", "points", "notes"})


@dataclass(frozen=True, slots=True)
class Profile:
    """A device profile: the device model, where its register map comes from, its points."""

    name: str
    manufacturer: str
    model: str
    kind: str
    source: str
    points: tuple[PointSpec, ...]
    #: Defaults for device options such as ``max_registers``.
    device: Mapping[str, Any] = field(default_factory=dict)
    #: The ``note`` of each point that has one, by point name.
    notes: Mapping[str, str] = field(default_factory=dict)


def profile_dir() -> Path:
    """The folder of the built-in profiles (shipped with ``swm_edge_drivers``)."""
    # find_spec locates the package without importing it, so loading a profile never
    # runs driver code.
    spec = importlib.util.find_spec("swm_edge_drivers")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package swm_edge_drivers is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "modbus" / "profiles"


def available_profiles() -> list[str]:
    """Names of the built-in profiles."""
    return sorted(p.stem for p in profile_dir().glob("*.yaml"))


def profile_path(name: str) -> Path:
    """The file of the built-in profile ``name``."""
    path = profile_dir() / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(available_profiles()) or "none"
        raise FileNotFoundError(f"no profile named {name!r} (built-in: {known})")
    return path


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a profile by built-in name (``"keller-series30"``) or from a YAML file.

    Raises:
        FileNotFoundError: no such profile.
        ValueError: the file is not a valid profile (unknown key, bad table/type/...).
    """
    if isinstance(name_or_path, Path) or name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
    else:
        path = profile_path(name_or_path)
    data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    try:
        return _profile_from_dict(path.stem, data)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def load_points(name_or_path: str | Path) -> list[PointSpec]:
    """Just the points of a profile; see :func:`load_profile`."""
    return list(load_profile(name_or_path).points)


def synthetic_points(
    count: int,
    *,
    type: DataType = DataType.FLOAT32,
    table: Table = Table.HOLDING,
    start: int = 0,
    prefix: str = "p",
) -> list[PointSpec]:
    """``count`` points of one type packed back to back, for load tests and benchmarks."""
    width = 1 if table.is_bits else register_count(type)
    return [
        PointSpec(name=f"{prefix}{i}", table=table, address=start + i * width, type=type)
        for i in range(count)
    ]


def _profile_from_dict(name: str, data: Any) -> Profile:
    if not isinstance(data, dict):
        raise ValueError("a profile must be a mapping")
    unknown = set(data) - _PROFILE_KEYS
    if unknown:
        raise ValueError(f"unknown profile keys {sorted(unknown)}")
    raw_points = data.get("points")
    if not isinstance(raw_points, list) or not raw_points:
        raise ValueError("'points' must be a non-empty list")
    points, notes = _points(raw_points)
    device = data.get("device") or {}
    if not isinstance(device, dict):
        raise ValueError("'device' must be a mapping")
    return Profile(
        name=name,
        manufacturer=str(data.get("manufacturer", "")),
        model=str(data.get("model", "")),
        kind=str(data.get("kind", "")),
        source=str(data.get("source", "")),
        points=tuple(points),
        device=dict(device),
        notes=notes,
    )


def _points(raw_points: Sequence[Any]) -> tuple[list[PointSpec], dict[str, str]]:
    points: list[PointSpec] = []
    notes: dict[str, str] = {}
    seen: set[str] = set()
    for i, raw in enumerate(raw_points):
        if not isinstance(raw, dict):
            raise ValueError(f"points[{i}] must be a mapping")
        raw = dict(raw)
        note = raw.pop("note", None)
        unknown = set(raw) - _POINT_KEYS
        if unknown:
            raise ValueError(f"points[{i}]: unknown keys {sorted(unknown)}")
        try:
            point = PointSpec(
                name=str(raw["name"]),
                table=Table(raw["table"]),
                address=int(raw["address"]),
                type=DataType(raw["type"]),
                word_order=WordOrder(raw.get("word_order", WordOrder.BIG)),
                byte_swap=bool(raw.get("byte_swap", False)),
                scale=float(raw.get("scale", 1.0)),
                offset=float(raw.get("offset", 0.0)),
                unit=None if raw.get("unit") is None else str(raw["unit"]),
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"points[{i}]: {exc}") from None
        if not 0 <= point.address <= 0xFFFF:
            raise ValueError(f"points[{i}]: address {point.address} outside 0..65535")
        if point.name in seen:
            raise ValueError(f"points[{i}]: duplicate point name {point.name!r}")
        seen.add(point.name)
        points.append(point)
        if note is not None:
            notes[point.name] = str(note)
    return points, notes
