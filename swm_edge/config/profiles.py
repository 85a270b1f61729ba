"""Device profiles: the points and quirks of one device model, written once.

A profile is ``NAME.yaml`` in a folder of the driver it belongs to (format in
docs/decisions/0003-driver-sdk.md)::

    manufacturer: KELLER AG
    model: Series 30 pressure transmitter
    kind: pressure transmitter
    source: "KELLER AG, Communication protocol for Series 30 and 40, v3.5, ch. 4"
    device: {max_registers: 4}      # optional defaults: core quirk keys and driver keys
    points:                         # in the driver's point shape
      - {name: pressure, table: holding, address: 2, type: float32, unit: bar, note: "P1"}

The profile is checked against the device's driver: ``points`` with the items of the
``points`` field of its ``device_model``, the driver keys of ``device:`` with the model's
fields one by one (a profile does not set, e.g., a unit id, so missing keys are fine). A
device using ``profile: NAME`` gets the profile's points and ``device:`` defaults; its own
keys win, its own points add to the profile's and replace same-named ones (the merging is
done by :mod:`swm_edge.config.loader`, so errors of the merged entry land on its nodes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, StrictStr, TypeAdapter, ValidationError

from swm_edge.config.loader import (
    ConfigError,
    ConfigIssue,
    Loc,
    Place,
    YamlDocument,
    check_root_mapping,
    not_missing_at_top,
    read_yaml_document,
    validation_issues,
)
from swm_edge.config.models import QUIRK_KEYS, ConfigModel, DeviceQuirks
from swm_edge.driver import Driver

__all__ = [
    "PROFILE_SUFFIX",
    "ProfileConfig",
    "ProfileHeader",
    "find_profile",
    "load_profile",
    "profile_names",
]

PROFILE_SUFFIX = ".yaml"


class ProfileHeader(ConfigModel):
    """The keys of a profile file every driver's profiles have (checked by the core)."""

    manufacturer: StrictStr = Field(min_length=1, description="Manufacturer of the device.")
    model: StrictStr = Field(min_length=1, description="Model or series the profile covers.")
    kind: StrictStr = Field(
        min_length=1, description="What the device is, e.g. 'electromagnetic flow meter'."
    )
    source: StrictStr = Field(
        min_length=1, description="Document (title, version, chapter) the register map is from."
    )
    device: dict[str, Any] | None = Field(
        default=None,
        description="Defaults for the device's keys (core quirk keys and driver keys); a "
        "device's own keys win.",
    )
    points: list[Any] = Field(
        min_length=1, description="The device's points in the driver's shape, unique by name."
    )


@dataclass(frozen=True)
class ProfileConfig:
    """A checked device profile file.

    ``quirks`` are the core keys its ``device:`` sets (checked values); ``defaults`` the
    driver keys it sets, and ``raw_points`` its points, both as written, to be merged with a
    device entry and checked there again with the bus known; ``points`` are the driver's
    point objects.
    """

    name: str
    path: Path
    manufacturer: str
    model: str
    kind: str
    source: str
    quirks: Mapping[str, Any]
    defaults: Mapping[str, Any]
    points: tuple[Any, ...]
    raw_points: tuple[dict[str, Any], ...]

    @property
    def device(self) -> dict[str, Any]:
        """Every key the profile's ``device:`` sets: core quirk keys and driver keys."""
        return {**self.defaults, **self.quirks}


def find_profile(name: str, dirs: Iterable[Path]) -> Path | None:
    """The first ``<dir>/<name>.yaml`` that exists, in the order of ``dirs``."""
    for directory in dirs:
        candidate = Path(directory) / f"{name}{PROFILE_SUFFIX}"
        if candidate.is_file():
            return candidate
    return None


def profile_names(dirs: Iterable[Path]) -> set[str]:
    """Names of the profiles in ``dirs`` (for suggestions)."""
    names: set[str] = set()
    for directory in dirs:
        try:
            names.update(p.stem for p in Path(directory).glob(f"*{PROFILE_SUFFIX}"))
        except OSError:
            continue
    return names


def _under(prefix: Loc) -> Callable[[Loc], Place]:
    def locate(path: Loc) -> Place:
        return Place((*prefix, *path))

    return locate


def _check_device_defaults(
    doc: YamlDocument, device: dict[str, Any], driver: type[Driver]
) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """The checked core quirk defaults of a profile's ``device:``, and its problems."""
    issues: list[ConfigIssue] = []
    quirk_data = {k: v for k, v in device.items() if k in QUIRK_KEYS}
    driver_data = {k: v for k, v in device.items() if k not in QUIRK_KEYS}
    quirks: dict[str, Any] = {}
    try:
        checked = DeviceQuirks.model_validate(quirk_data)
        quirks = {key: getattr(checked, key) for key in checked.model_fields_set}
    except ValidationError as exc:
        issues += validation_issues(
            exc, doc, DeviceQuirks, data=quirk_data, locate=_under(("device",))
        )
    if "points" in driver_data:
        del driver_data["points"]
        issues.append(
            doc.issue(
                ("device", "points"),
                "a profile's points go under its top-level points:, not under device:",
                at="key",
            )
        )
    model = driver.device_model
    allowed = (set(model.model_fields) - {"points"}) | set(QUIRK_KEYS)
    try:
        model.model_validate(driver_data)
    except ValidationError as exc:
        issues += validation_issues(
            exc,
            doc,
            model,
            data=driver_data,
            locate=_under(("device",)),
            root_keys=allowed,
            # Defaults need not be complete: the device entry supplies the rest.
            keep=not_missing_at_top,
        )
    return quirks, issues


def _check_points(
    doc: YamlDocument, points: list[Any], driver: type[Driver]
) -> tuple[tuple[Any, ...], list[ConfigIssue]]:
    """The profile's points as the driver's point objects, and their problems."""
    field = driver.device_model.model_fields.get("points")
    if field is None or field.annotation is None:
        message = f"driver {driver.__name__} takes no points"
        return (), [doc.issue(("points",), message, at="key")]
    adapter: TypeAdapter[Any] = TypeAdapter(field.annotation)
    try:
        return tuple(adapter.validate_python(points)), []
    except ValidationError as exc:
        return (), validation_issues(
            exc, doc, field.annotation, data=points, locate=_under(("points",))
        )


def load_profile(path: Path, driver: type[Driver]) -> ProfileConfig:
    """Load one profile file and check it against ``driver``.

    Raises:
        ConfigError: with every problem, located in the profile file itself.
    """
    path = Path(path)
    doc, issues = read_yaml_document(path)
    if doc is None:
        raise ConfigError(issues)
    root_issue = check_root_mapping(
        doc, "a profile needs manufacturer:, model:, kind:, source: and points:"
    )
    if root_issue is not None:
        raise ConfigError([*issues, root_issue])
    header: ProfileHeader | None = None
    try:
        header = ProfileHeader.model_validate(doc.data)
    except ValidationError as exc:
        issues.extend(validation_issues(exc, doc, ProfileHeader))
    data: dict[str, Any] = doc.data
    quirks: dict[str, Any] = {}
    device = data.get("device")
    if isinstance(device, dict):
        quirks, found = _check_device_defaults(doc, device, driver)
        issues.extend(found)
    raw_points = data.get("points")
    points: tuple[Any, ...] = ()
    if isinstance(raw_points, list):
        points, found = _check_points(doc, raw_points, driver)
        issues.extend(found)
        seen: dict[str, int] = {}
        for j, point in enumerate(raw_points):
            name = point.get("name") if isinstance(point, dict) else None
            if not isinstance(name, str):
                continue
            if name in seen:
                first = doc.value_position(("points", seen[name], "name"))[0]
                issues.append(
                    doc.issue(
                        ("points", j, "name"),
                        f"duplicate point name {name!r} (first at line {first})",
                    )
                )
            else:
                seen[name] = j
    if issues or header is None:
        raise ConfigError(sorted(dict.fromkeys(issues), key=lambda i: (i.line, i.col)))
    return ProfileConfig(
        name=path.stem,
        path=path,
        manufacturer=header.manufacturer,
        model=header.model,
        kind=header.kind,
        source=header.source,
        quirks=quirks,
        defaults={k: v for k, v in (header.device or {}).items() if k not in QUIRK_KEYS},
        points=points,
        raw_points=tuple(raw_points) if isinstance(raw_points, list) else (),
    )
