"""Loading a configuration file: YAML -> checked models -> the core's specs.

Every user mistake becomes a :class:`ConfigIssue` pointing at ``FILE:LINE:COL`` of the
offending YAML node, and all of them are reported at once in one :class:`ConfigError`:
a technician fixing a gateway config over a slow link should not have to iterate.

The file is parsed with ruamel.yaml's round-trip loader because it records the line and
column of every key and value; the data is then copied into plain dicts and lists (so the
models never see ruamel's types) together with a table of positions by path.
"""

from __future__ import annotations

import difflib
import re
import types
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean

from swm_edge.config.models import (
    ID_PATTERN,
    PATTERN_HELP,
    Config,
    DeviceConfig,
    PointConfig,
    RtuBusConfig,
)
from swm_edge.driver import available_drivers, load_driver
from swm_edge.modbus.planner import plan_reads
from swm_edge.modbus.timing import poll_seconds
from swm_edge.model import BusSpec, DeviceSpec

if TYPE_CHECKING:
    from swm_edge.config.profiles import ProfileConfig

__all__ = [
    "ROOT_PATH",
    "ConfigError",
    "ConfigIssue",
    "LoadedConfig",
    "YamlDocument",
    "load_config",
    "read_yaml_document",
    "validation_issues",
]

Loc = tuple[str | int, ...]

#: The ``path`` of an issue about the document as a whole.
ROOT_PATH = "(root)"

# A config has a few hundred nodes; the limit stops alias bombs ("billion laughs"), whose
# aliases ruamel shares but a plain copy would expand.
_MAX_NODES = 200_000
_STANDARD_COLLECTION_TAGS = frozenset({None, "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
# Where the line of one second is full.
_MAX_LINE_LOAD = 1.0


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration (or profile) file.

    ``line`` and ``col`` are 1-based; ``path`` is the dotted path of the node, e.g.
    ``devices.2.points.0.address``, or ``(root)`` for the document as a whole.
    """

    file: str
    line: int
    col: int
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.path}: {self.message}"


class ConfigError(Exception):
    """A configuration cannot be used; ``issues`` lists every error found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues) or "invalid configuration")


@dataclass(frozen=True)
class LoadedConfig:
    """A checked configuration: the model as written, and the core's specs.

    ``devices`` have their profiles merged in. ``warnings`` are things that work but are
    probably not what was meant (e.g. an overloaded serial line).
    """

    path: Path
    config: Config
    buses: list[BusSpec]
    devices: list[DeviceSpec]
    warnings: list[ConfigIssue]


def _path_part(part: str | int) -> str:
    # Keys that would make the dotted path ambiguous (empty, with dots or spaces) are quoted.
    if isinstance(part, int) or re.fullmatch(r"[^.\s'\"]+", part):
        return str(part)
    return repr(part)


def _path_str(loc: Loc) -> str:
    return ".".join(_path_part(part) for part in loc) if loc else ROOT_PATH


@dataclass
class YamlDocument:
    """A parsed YAML file as plain Python data, with the position of every node.

    ``key_positions`` holds, by path, where a mapping key (or a sequence item) starts;
    ``value_positions`` where its value starts. Positions are 1-based (line, col).
    """

    file: str
    data: Any
    key_positions: dict[Loc, tuple[int, int]]
    value_positions: dict[Loc, tuple[int, int]]

    def key_position(self, loc: Loc) -> tuple[int, int]:
        """Where the key of ``loc`` is, or of its nearest ancestor that is in the file."""
        for n in range(len(loc), 0, -1):
            pos = self.key_positions.get(loc[:n])
            if pos is not None:
                return pos
        return (1, 1)

    def value_position(self, loc: Loc) -> tuple[int, int]:
        """Where the value of ``loc`` is (its key's position if it has none of its own)."""
        pos = self.value_positions.get(loc)
        return pos if pos is not None else self.key_position(loc)

    def issue(
        self,
        loc: Loc,
        message: str,
        *,
        at: Literal["key", "value"] = "value",
        severity: str = "error",
    ) -> ConfigIssue:
        """An issue located at the key or the value of ``loc``."""
        line, col = self.key_position(loc) if at == "key" else self.value_position(loc)
        return ConfigIssue(self.file, line, col, _path_str(loc), message, severity)


class _TooLarge(Exception):
    pass


class _Converter:
    """Copies ruamel's round-trip tree into plain data, recording node positions."""

    def __init__(self) -> None:
        self.keys: dict[Loc, tuple[int, int]] = {}
        self.values: dict[Loc, tuple[int, int]] = {}
        self.problems: list[tuple[Loc, str]] = []
        self._nodes = 0
        self._open: set[int] = set()

    def convert(self, node: Any, loc: Loc) -> Any:
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise _TooLarge
        if isinstance(node, (CommentedMap, CommentedSeq)):
            if id(node) in self._open:
                self.problems.append((loc, "a YAML alias refers to a node that contains it"))
                return None
            tag = getattr(getattr(node, "tag", None), "value", None)
            if tag not in _STANDARD_COLLECTION_TAGS:
                self.problems.append((loc, f"YAML tag {tag} is not supported"))
            self._open.add(id(node))
            try:
                if isinstance(node, CommentedMap):
                    return self._mapping(node, loc)
                return self._sequence(node, loc)
            finally:
                self._open.discard(id(node))
        if isinstance(node, TaggedScalar):
            self.problems.append((loc, f"YAML tag {node.tag.value} is not supported"))
            return None if node.value is None else str(node.value)
        # ruamel's scalar subclasses carry formatting; the models want the plain types.
        if isinstance(node, (bool, ScalarBoolean)):
            return bool(node)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        if isinstance(node, str):
            return str(node)
        return node

    def _mapping(self, node: CommentedMap, loc: Loc) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for raw_key, value in node.items():
            key = self.convert(raw_key, loc)
            key = key if isinstance(key, str) else str(key)
            child = (*loc, key)
            # Keys merged in with "<<:" have no position of their own.
            data = node.lc.data.get(raw_key)
            if data is not None:
                self.keys[child] = (data[0] + 1, data[1] + 1)
                self.values[child] = (data[2] + 1, data[3] + 1)
            out[key] = self.convert(value, child)
        return out

    def _sequence(self, node: CommentedSeq, loc: Loc) -> list[Any]:
        out: list[Any] = []
        for i, value in enumerate(node):
            child = (*loc, i)
            data = node.lc.data.get(i)
            if data is not None:
                self.keys[child] = self.values[child] = (data[0] + 1, data[1] + 1)
            out.append(self.convert(value, child))
        return out


def _line_col(text: str, index: int) -> tuple[int, int]:
    before = text[:index]
    return before.count("\n") + 1, index - (before.rfind("\n") + 1) + 1


def _yaml_error_message(exc: MarkedYAMLError) -> str:
    problem = exc.problem or str(exc).strip().splitlines()[0]
    if isinstance(exc, DuplicateKeyError):
        match = re.search(r'found duplicate key "(.*?)" with value', problem)
        key = match.group(1) if match else "?"
        return f"duplicate key {key!r} (a key may appear only once in a mapping)"
    if "'\\t'" in problem:
        problem += " (indent with spaces, not tabs)"
    mark = exc.context_mark
    if exc.context and mark is not None and mark is not exc.problem_mark:
        problem += f" ({exc.context} at line {mark.line + 1}, column {mark.column + 1})"
    return problem


def read_yaml_document(
    path: Path, file: str | None = None
) -> tuple[YamlDocument | None, list[ConfigIssue]]:
    """Read and parse one YAML file.

    Returns the document (``None`` when nothing usable could be read) and the problems
    found, each located in ``file`` (default: ``str(path)``). Never raises for a bad file.
    """
    name = str(path) if file is None else file

    def fail(message: str, line: int = 1, col: int = 1) -> tuple[None, list[ConfigIssue]]:
        return None, [ConfigIssue(name, line, col, ROOT_PATH, message)]

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return fail("file not found")
    except IsADirectoryError:
        return fail("is a directory, not a file")
    except PermissionError:
        return fail("permission denied")
    except OSError as exc:
        return fail(f"cannot read the file: {exc.strerror or exc}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        prefix = raw[: exc.start]
        line = prefix.count(b"\n") + 1
        col = len(prefix[prefix.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        return fail(f"not UTF-8 text (byte 0x{raw[exc.start]:02x})", line, col)
    text = text.removeprefix("\ufeff")

    yaml = YAML(typ="rt", pure=True)
    try:
        with warnings.catch_warnings():
            # ruamel warns about e.g. reused anchors; those are valid YAML, not config issues.
            warnings.simplefilter("ignore")
            tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        return fail(_yaml_error_message(exc), line, col)
    except ReaderError as exc:
        line, col = _line_col(text, exc.position)
        return fail(f"character {exc.character!r} is not allowed in YAML", line, col)
    except YAMLError as exc:
        return fail(f"invalid YAML: {str(exc).strip()}")
    except RecursionError:
        return fail("the YAML is nested too deeply")
    except Exception as exc:  # a parser bug must still not end in a traceback
        return fail(f"cannot parse the YAML: {exc}")

    converter = _Converter()
    try:
        data = converter.convert(tree, ())
    except _TooLarge:
        return fail(f"the document has more than {_MAX_NODES} nodes (expanded aliases?)")
    except RecursionError:
        return fail("the YAML is nested too deeply")
    doc = YamlDocument(name, data, converter.keys, converter.values)
    return doc, [doc.issue(loc, message) for loc, message in converter.problems]


# --- pydantic errors -> issues -------------------------------------------------------


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _union_members(annotation: Any) -> list[Any]:
    annotation = _unwrap(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return [_unwrap(arg) for arg in get_args(annotation) if arg is not type(None)]
    return [annotation]


def _models(annotation: Any) -> list[type[BaseModel]]:
    return [
        m for m in _union_members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)
    ]


def _type_tags(model: type[BaseModel]) -> list[str]:
    field = model.model_fields.get("type")
    if field is None or get_origin(field.annotation) is not Literal:
        return []
    return [str(arg) for arg in get_args(field.annotation)]


def _pick_model(annotation: Any, node: Any) -> type[BaseModel] | None:
    candidates = _models(annotation)
    if len(candidates) > 1 and isinstance(node, dict):
        # A discriminated union: the member whose ``type`` matches the data.
        candidates = [m for m in candidates if node.get("type") in _type_tags(m)]
    return candidates[0] if len(candidates) == 1 else None


def _annotation_at(root: type[BaseModel], loc: Loc, data: Any) -> Any:
    """The annotation describing the node at ``loc`` (``None`` if it cannot be told)."""
    annotation: Any = root
    node = data
    for part in loc:
        if isinstance(part, str):
            model = _pick_model(annotation, node)
            if model is None or part not in model.model_fields:
                return None
            annotation = model.model_fields[part].annotation
            node = node.get(part) if isinstance(node, dict) else None
        else:
            lists = [m for m in _union_members(annotation) if get_origin(m) is list]
            if not lists:
                return None
            annotation = get_args(lists[0])[0]
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
    return annotation


def _walk(data: Any, loc: Sequence[Any]) -> tuple[Loc, Any, str | int | None]:
    """Follow pydantic's ``loc`` through the data.

    Returns the path that exists in the data, the node there, and the last part of ``loc``
    when it names a key that is not in the data (a missing key). Parts that are not data
    (the tag pydantic inserts for a discriminated union) are skipped.
    """
    real: list[str | int] = []
    node = data
    missing: str | int | None = None
    for i, part in enumerate(loc):
        in_dict = isinstance(node, dict) and isinstance(part, str) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            real.append(part)
            node = node[part]
        elif i == len(loc) - 1 and isinstance(part, (str, int)):
            missing = part
    return tuple(real), node, missing


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    kind = {int: "integer", float: "number", str: "string"}.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}"


# Error types whose message already says everything (or names the value itself).
_SELF_EXPLAINING = frozenset(
    {"swm_config", "unit_unknown", "string_pattern_mismatch", "missing", "extra_forbidden"}
)


def _extra_key_message(key: str, root: type[BaseModel], container: Loc, data: Any) -> str:
    if key == "password":
        return (
            "plain passwords are not allowed in the config; put the password in a file "
            "(password_file) or an environment variable (password_env)"
        )
    container_node = _walk(data, container)[1]
    model = _pick_model(_annotation_at(root, container, data), container_node)
    if model is None:
        return f"unknown key {key!r}"
    allowed = sorted(model.model_fields)
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.7)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}; allowed: {', '.join(allowed)}"


def _error_message(
    err: ErrorDetails, root: type[BaseModel], real: Loc, missing: str | int | None, data: Any
) -> str:
    etype = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if etype == "union_tag_not_found":
        tags = [t for m in _models(_annotation_at(root, real, data)) for t in _type_tags(m)]
        listed = f" (one of: {', '.join(tags)})" if tags else ""
        return f"missing required key 'type'{listed}"
    if etype == "missing":
        return f"missing required key {missing!r}"
    if etype == "extra_forbidden":
        return _extra_key_message(str(real[-1]), root, real[:-1], data)
    if etype == "union_tag_invalid":
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"unknown type {ctx.get('tag')!r}; allowed: {expected}"
    if etype in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), got {_describe(value)}"
    if etype == "list_type":
        return f"expected a list, got {_describe(value)}"
    if etype == "string_pattern_mismatch":
        explanation = PATTERN_HELP.get(str(ctx.get("pattern")))
        if explanation is not None:
            return f"{value!r} {explanation}"
    message = err["msg"]
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if etype not in _SELF_EXPLAINING:
        message = f"{message}, got {_describe(value)}"
    return message


def validation_issues(
    exc: ValidationError, doc: YamlDocument, root: type[BaseModel]
) -> list[ConfigIssue]:
    """Turn a pydantic ``ValidationError`` of ``root`` (validated from ``doc.data``) into
    issues at the YAML positions of the offending nodes.

    Missing and unknown keys are reported at a key (the mapping's own key for a missing
    one), bad values at the value.
    """
    issues: list[ConfigIssue] = []
    for err in exc.errors(include_url=False):
        real, node, missing = _walk(doc.data, err["loc"])
        ctx = err.get("ctx") or {}
        # Errors raised by a model validator name the field they are about in ctx; union
        # tag errors are about the "type" key.
        field: Any = ctx.get("field")
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            field = "type"
        if isinstance(field, str) and missing is None:
            if isinstance(node, dict) and field in node:
                real = (*real, field)
            else:
                missing = field
        message = _error_message(err, root, real, missing, doc.data)
        full = real
        if missing is not None:
            line, col = doc.key_position(full)
            full = (*full, missing)
        elif err["type"] == "extra_forbidden":
            line, col = doc.key_position(full)
        else:
            line, col = doc.value_position(full)
        issues.append(ConfigIssue(doc.file, line, col, _path_str(full), message))
    return issues


def _root_message(data: Any, what: str) -> str:
    if data is None:
        return f"the file is empty; {what}"
    return f"the top level must be a mapping (key: value lines), not {_describe(data)}; {what}"


def check_root_mapping(doc: YamlDocument, what: str) -> ConfigIssue | None:
    """An issue when the document is not a mapping; ``what`` says what it should hold."""
    if isinstance(doc.data, dict):
        return None
    return ConfigIssue(doc.file, 1, 1, ROOT_PATH, _root_message(doc.data, what))


# --- cross-section checks and building the specs ---------------------------------


def _items(data: dict[str, Any], key: str) -> list[tuple[int, dict[str, Any]]]:
    # The mappings of a list section; anything else there is reported by the models.
    items = data.get(key)
    if not isinstance(items, list):
        return []
    return [(i, item) for i, item in enumerate(items) if isinstance(item, dict)]


def _text(item: dict[str, Any], key: str, pattern: str | None = None) -> str | None:
    # A string field the models would accept, else None (the models report it).
    value = item.get(key)
    if not isinstance(value, str) or (pattern is not None and not re.fullmatch(pattern, value)):
        return None
    return value


class _Checker:
    """Checks that span sections, and builds the specs of a valid config.

    The checks read the raw data rather than validated models, so that a device with,
    say, a bad scale on one point still has its bus, id and profile checked: a user gets
    every error of the file in one go.
    """

    def __init__(self, doc: YamlDocument, base_dir: Path, profile_dirs: Sequence[Path]) -> None:
        self.doc = doc
        self.base_dir = base_dir
        self.profile_dirs = [Path(d) for d in profile_dirs]
        self.issues: list[ConfigIssue] = []
        self.profile_issues: list[ConfigIssue] = []
        self.installed = set(available_drivers())
        self._driver_dirs: dict[str, list[Path] | None] = {}
        self._profiles_by_file: dict[Path, ProfileConfig | None] = {}
        # device index -> its profile (None: it has none); absent: unresolved.
        self.device_profiles: dict[int, ProfileConfig | None] = {}

    def error(self, loc: Loc, message: str, *, at: Literal["key", "value"] = "value") -> None:
        self.issues.append(self.doc.issue(loc, message, at=at))

    def _duplicates(
        self,
        items: Iterable[tuple[int, dict[str, Any]]],
        key: str,
        prefix: Loc,
        what: str,
        where: str = "",
    ) -> dict[str, int]:
        """Report repeated ``key`` values among ``items``; return the first index of each."""
        first: dict[str, int] = {}
        for i, item in items:
            value = _text(item, key)
            if value is None:
                continue
            if value in first:
                line = self.doc.value_position((*prefix, first[value], key))[0]
                self.error(
                    (*prefix, i, key), f"duplicate {what} {value!r}{where} (first at line {line})"
                )
            else:
                first[value] = i
        return first

    def check(self, data: dict[str, Any]) -> None:
        """Run the cross-section checks on the raw data of the config file."""
        buses = _items(data, "buses")
        first_bus = self._duplicates(buses, "id", ("buses",), "bus id")
        by_index = dict(buses)
        bus_types = {bus_id: by_index[i].get("type") for bus_id, i in first_bus.items()}
        devices = _items(data, "devices")
        self._duplicates(devices, "id", ("devices",), "device id")
        for i, device in devices:
            self._check_device(i, device, bus_types)

    def _check_device(self, i: int, device: dict[str, Any], bus_types: dict[str, Any]) -> None:
        loc: Loc = ("devices", i)
        device_id = _text(device, "id") or f"#{i}"
        bus = _text(device, "bus")
        if bus is not None and bus not in bus_types:
            known = sorted(bus_types)
            close = difflib.get_close_matches(bus, known, n=1, cutoff=0.6)
            if close:
                hint = f"; did you mean {close[0]!r}?"
            else:
                hint = f"; defined buses: {', '.join(known)}" if known else "; no buses are defined"
            self.error((*loc, "bus"), f"unknown bus {bus!r}{hint}")
        unit = device.get("unit")
        on_rtu = bus is not None and bus_types.get(bus) == "modbus-rtu"
        # Out of 0..255 is the model's error; only the RTU range is checked here.
        if on_rtu and type(unit) is int and 0 <= unit <= 255 and not 1 <= unit <= 247:
            self.error(
                (*loc, "unit"),
                f"unit {unit} is out of range 1..247 for a device on modbus-rtu bus {bus!r} "
                "(0 is broadcast, which no device answers)",
            )

        # Driver problems are reported at the driver key, or at the id for the default one.
        given = "driver" in device
        driver_loc: Loc = (*loc, "driver") if given else (*loc, "id")
        driver = _text(device, "driver", ID_PATTERN) if given else "modbus"
        driver_ok = driver is not None and driver in self.installed
        if driver is not None and not driver_ok:
            installed = ", ".join(sorted(self.installed)) or "none"
            default = "" if given else " (the default)"
            self.error(
                driver_loc,
                f"driver {driver!r}{default} is not installed (installed: {installed})",
            )

        points = device.get("points", [])
        own_points = (
            [(j, p) for j, p in enumerate(points) if isinstance(p, dict)]
            if isinstance(points, list)
            else []
        )
        self._duplicates(
            own_points, "name", (*loc, "points"), "point name", f" in device {device_id!r}"
        )

        profile_points = 0
        if "profile" in device and device["profile"] is not None:
            name = _text(device, "profile", ID_PATTERN)
            if name is None:
                return  # the model reports a malformed name
            profile = self._resolve_profile(i, name, driver if driver_ok else None, driver_loc)
            if profile is None:
                return  # reported; its points are unknown
            self.device_profiles[i] = profile
            profile_points = len(profile.points)
        else:
            self.device_profiles[i] = None
        if isinstance(points, list) and not points and not profile_points:
            self.error(
                (*loc, "points"),
                f"device {device_id!r} has no points; list them under points: or use a profile:",
                at="key",
            )

    def _driver_profile_dirs(self, driver: str, driver_loc: Loc) -> list[Path] | None:
        # Loaded only when a profile is not found elsewhere; a broken plugin is reported
        # once, at the first device that needs it.
        if driver not in self._driver_dirs:
            try:
                cls = load_driver(driver)
                self._driver_dirs[driver] = [Path(d) for d in cls.profile_dirs]
            except Exception as exc:  # a broken plugin is a config problem, not a crash
                self._driver_dirs[driver] = None
                self.error(driver_loc, f"driver {driver!r} cannot be loaded: {exc}")
        return self._driver_dirs[driver]

    def _resolve_profile(
        self, i: int, name: str, driver: str | None, driver_loc: Loc
    ) -> ProfileConfig | None:
        """The profile ``name`` of device ``i`` (``driver``: its driver, if installed)."""
        from swm_edge.config.profiles import find_profile, load_profile, profile_names

        searched = [self.base_dir / "profiles", *self.profile_dirs]
        found = find_profile(name, searched)
        if found is None:
            if driver is None:
                return None  # the driver problem is reported; its profiles are unknown
            driver_dirs = self._driver_profile_dirs(driver, driver_loc)
            if driver_dirs is None:
                return None
            searched += driver_dirs
            found = find_profile(name, driver_dirs)
        if found is None:
            close = difflib.get_close_matches(
                name, sorted(profile_names(searched)), n=1, cutoff=0.6
            )
            hint = f"did you mean {close[0]!r}? " if close else ""
            where = ", ".join(str(d) for d in searched)
            self.error(
                ("devices", i, "profile"), f"unknown profile {name!r}; {hint}searched: {where}"
            )
            return None
        key = found.resolve()
        if key not in self._profiles_by_file:
            try:
                self._profiles_by_file[key] = load_profile(found)
            except ConfigError as exc:
                self._profiles_by_file[key] = None
                self.profile_issues.extend(exc.issues)
        return self._profiles_by_file[key]

    def build(self, config: Config) -> tuple[list[BusSpec], list[DeviceSpec]]:
        from swm_edge.config.profiles import merge_profile

        buses = [bus.to_spec() for bus in config.buses]
        devices: list[DeviceSpec] = []
        for i, device in enumerate(config.devices):
            merged, points = merge_profile(device, self.device_profiles.get(i))
            for point in points:
                limit = merged.max_bits if point.table.is_bits else merged.max_registers
                if point.width > limit:
                    self._too_wide(i, device, point, limit)
            devices.append(
                DeviceSpec(
                    id=merged.id,
                    bus=merged.bus,
                    unit=merged.unit,
                    interval=merged.interval,
                    points=tuple(p.to_spec() for p in points),
                    driver=merged.driver,
                    timeout=merged.timeout,
                    retries=merged.retries,
                    request_delay=merged.request_delay,
                    single_point_reads=merged.single_point_reads,
                    max_gap=merged.max_gap,
                    max_registers=merged.max_registers,
                    max_bits=merged.max_bits,
                    offline_after=merged.offline_after,
                    offline_backoff_max=merged.offline_backoff_max,
                )
            )
        return buses, devices

    def _too_wide(self, i: int, device: DeviceConfig, point: PointConfig, limit: int) -> None:
        own = [j for j, p in enumerate(device.points) if p.name == point.name]
        if own:
            loc: Loc = ("devices", i, "points", own[0], "type")
        elif "max_registers" in device.model_fields_set:
            loc = ("devices", i, "max_registers")
        else:
            loc = ("devices", i, "profile")
        self.error(
            loc,
            f"point {point.name!r} is a {point.type} of {point.width} registers, but device "
            f"{device.id!r} reads at most {limit} per request (max_registers)",
        )


def _wire_time_warnings(
    doc: YamlDocument, config: Config, devices: Sequence[DeviceSpec]
) -> list[ConfigIssue]:
    """A warning for every serial line whose devices need more wire time than it has."""
    out: list[ConfigIssue] = []
    for i, bus in enumerate(config.buses):
        if not isinstance(bus, RtuBusConfig):
            continue
        loads: list[tuple[str, float]] = []
        for device in devices:
            if device.bus != bus.id:
                continue
            requests = plan_reads(
                device.points,
                max_gap=device.max_gap,
                max_registers=device.max_registers,
                max_bits=device.max_bits,
                single_point=device.single_point_reads,
            )
            seconds = poll_seconds(
                requests,
                baudrate=bus.baudrate,
                parity=bus.parity,
                stopbits=bus.stopbits,
                bytesize=bus.bytesize,
                # The bus worker waits the longer of the two delays before each request.
                request_delay=max(bus.request_delay, device.request_delay),
            )
            loads.append((device.id, seconds / device.interval))
        total = sum(load for _, load in loads)
        if total > _MAX_LINE_LOAD:
            loads.sort(key=lambda item: -item[1])
            figures = ", ".join(f"{dev_id} {load:.2f}" for dev_id, load in loads)
            out.append(
                doc.issue(
                    ("buses", i),
                    f"line {bus.id!r} needs {total:.2f} s of wire time per second at "
                    f"{bus.baudrate} baud: devices {figures}; polls will fall behind their "
                    "intervals (lengthen intervals, raise the baud rate, or split the line)",
                    severity="warning",
                )
            )
    return out


def _ordered(issues: Iterable[ConfigIssue], main_file: str) -> list[ConfigIssue]:
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda x: (x.file != main_file, x.file, x.line, x.col))


def load_config(path: Path, *, profile_dirs: Sequence[Path] | None = None) -> LoadedConfig:
    """Load, check and resolve a configuration file.

    Device profiles are searched in ``<config dir>/profiles/``, then in each of
    ``profile_dirs``, then in the ``profile_dirs`` of the device's driver.

    Raises:
        ConfigError: with every problem found, each at ``FILE:LINE:COL``.
    """
    path = Path(path)
    doc, issues = read_yaml_document(path)
    if doc is None:
        raise ConfigError(issues)
    root_issue = check_root_mapping(doc, "a config needs at least gateway: and mqtt:")
    if root_issue is not None:
        raise ConfigError([*issues, root_issue])

    base_dir = path.absolute().parent
    config: Config | None = None
    try:
        config = Config.model_validate(doc.data, context={"base_dir": base_dir})
    except ValidationError as exc:
        issues.extend(validation_issues(exc, doc, Config))
    checker = _Checker(doc, base_dir, profile_dirs or ())
    checker.check(doc.data)
    issues.extend(checker.issues)
    issues.extend(checker.profile_issues)
    if issues or config is None:
        raise ConfigError(_ordered(issues, doc.file))

    buses, devices = checker.build(config)
    if checker.issues:
        raise ConfigError(_ordered(checker.issues, doc.file))
    warnings_ = _wire_time_warnings(doc, config, devices)
    return LoadedConfig(path, config, buses, devices, warnings_)
