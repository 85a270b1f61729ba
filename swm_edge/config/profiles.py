"""Device profiles: the points and quirks of one device model, written once.

A profile is ``NAME.yaml`` (format in docs/decisions/0001-module-contracts.md)::

    manufacturer: KELLER AG
    model: Series 30 pressure transmitter
    kind: pressure transmitter
    source: "KELLER AG, Communication protocol for Series 30 and 40, v3.5, ch. 4"
    device: {max_registers: 4}      # optional defaults of the device quirk keys
    points:
      - {name: pressure, table: holding, address: 2, type: float32, unit: bar, note: "P1"}

A device using ``profile: NAME`` gets the profile's points and ``device:`` defaults; its own
quirk keys win, its own points add to the profile's and replace same-named ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import ConfigDict, Field, StrictStr, ValidationError

from swm_edge.config.loader import (
    ConfigError,
    check_root_mapping,
    read_yaml_document,
    validation_issues,
)
from swm_edge.config.models import ConfigModel, DeviceConfig, DeviceQuirks, PointConfig

__all__ = [
    "PROFILE_SUFFIX",
    "ProfileConfig",
    "ProfileDeviceDefaults",
    "ProfilePointConfig",
    "find_profile",
    "load_profile",
    "merge_profile",
    "profile_names",
]

PROFILE_SUFFIX = ".yaml"


class ProfilePointConfig(PointConfig):
    """A point of a profile: a config point with a note on where it comes from."""

    note: StrictStr | None = Field(
        default=None, description="Where the point is documented, e.g. a manual's chapter."
    )

    def to_point(self) -> PointConfig:
        """The point without its note, as a device's point."""
        return PointConfig.model_validate(self.model_dump(exclude={"note"}))


class ProfileDeviceDefaults(DeviceQuirks):
    """Defaults a profile sets for the quirk keys of its devices; only the keys given count."""


class ProfileConfig(ConfigModel):
    """A device profile file."""

    model_config = ConfigDict(title="swm-edge device profile")

    manufacturer: StrictStr = Field(min_length=1, description="Manufacturer of the device.")
    model: StrictStr = Field(min_length=1, description="Model or series the profile covers.")
    kind: StrictStr = Field(
        min_length=1, description="What the device is, e.g. 'electromagnetic flow meter'."
    )
    source: StrictStr = Field(
        min_length=1, description="Document (title, version, chapter) the register map is from."
    )
    device: ProfileDeviceDefaults | None = Field(
        default=None, description="Defaults for the device's quirk keys; a device's own keys win."
    )
    points: list[ProfilePointConfig] = Field(
        min_length=1, description="The device's points, unique by name."
    )


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


def load_profile(path: Path) -> ProfileConfig:
    """Load and check one profile file.

    Raises:
        ConfigError: with every problem, located in the profile file itself.
    """
    doc, issues = read_yaml_document(path)
    if doc is None:
        raise ConfigError(issues)
    root_issue = check_root_mapping(
        doc, "a profile needs manufacturer:, model:, kind:, source: and points:"
    )
    if root_issue is not None:
        raise ConfigError([*issues, root_issue])
    profile: ProfileConfig | None = None
    try:
        profile = ProfileConfig.model_validate(doc.data)
    except ValidationError as exc:
        issues.extend(validation_issues(exc, doc, ProfileConfig))
    if profile is not None:
        seen: dict[str, int] = {}
        for j, point in enumerate(profile.points):
            if point.name in seen:
                first = doc.value_position(("points", seen[point.name], "name"))[0]
                issues.append(
                    doc.issue(
                        ("points", j, "name"),
                        f"duplicate point name {point.name!r} (first at line {first})",
                    )
                )
            else:
                seen[point.name] = j
    if issues or profile is None:
        raise ConfigError(sorted(issues, key=lambda i: (i.line, i.col)))
    return profile


def merge_profile(
    device: DeviceConfig, profile: ProfileConfig | None
) -> tuple[DeviceConfig, list[PointConfig]]:
    """The device with the profile's quirk defaults applied, and its merged points.

    Quirk keys the device sets itself win over the profile's ``device:`` defaults. Points:
    the profile's in their order, each replaced by the device's point of the same name,
    then the device's other points in their order.
    """
    if profile is None:
        return device, list(device.points)
    merged = device
    if profile.device is not None:
        defaults = {
            key: getattr(profile.device, key)
            for key in profile.device.model_fields_set
            if key not in device.model_fields_set
        }
        merged = device.model_copy(update=defaults)
    own = {point.name: point for point in device.points}
    points = [own.pop(p.name) if p.name in own else p.to_point() for p in profile.points]
    points.extend(own.values())
    return merged, points
