"""Loading a configuration file: YAML -> checked models -> the core's specs.

Every user mistake becomes a :class:`ConfigIssue` pointing at ``FILE:LINE:COL`` of the
offending YAML node, and all of them are reported at once in one :class:`ConfigError`:
a technician fixing a gateway config over a slow link should not have to iterate.

The file is parsed with ruamel.yaml's round-trip loader because it records the line and
column of every key and value; the data is then copied into plain dicts and lists (so the
models never see ruamel's types) together with a table of positions by path.

A device entry is checked in two parts (docs/decisions/0003-driver-sdk.md): the core keys
by :class:`~swm_edge.config.models.DeviceConfig`, all other keys by the ``device_model`` of
the device's driver (``driver:``, or the installed driver whose ``bus_types`` has the bus's
type), validated with ``context={"bus": BusSpec}`` after merging the profile's ``device:``
defaults and points in. Each error of that model is mapped back to the node it came from:
the device entry's own key or point, or, for a value the profile brought in, the device's
``profile`` key.
"""

from __future__ import annotations

import difflib
import re
import types
import warnings
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails
from pydantic_core.core_schema import ErrorType
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean

from swm_edge.config.models import (
    BUS_TYPES,
    CORE_DEVICE_KEYS,
    ID_PATTERN,
    PATTERN_HELP,
    QUIRK_KEYS,
    SERIAL_BUS_TYPES,
    BusConfig,
    Config,
    DeviceQuirks,
)
from swm_edge.driver import Driver, available_drivers, load_driver
from swm_edge.model import BusSpec, DeviceSpec

if TYPE_CHECKING:
    from swm_edge.config.profiles import ProfileConfig

__all__ = [
    "ROOT_PATH",
    "ConfigError",
    "ConfigIssue",
    "LoadedConfig",
    "Place",
    "YamlDocument",
    "check_root_mapping",
    "load_config",
    "not_missing_at_top",
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


def _item_annotation(annotation: Any) -> Any:
    # The items of a list or of a homogeneous tuple (``tuple[X, ...]``); None otherwise.
    for member in _union_members(annotation):
        origin = get_origin(member)
        args = get_args(member)
        if origin is list and args:
            return args[0]
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return args[0]
    return None


def _annotation_at(root: Any, loc: Loc, data: Any) -> Any:
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
            annotation = _item_annotation(annotation)
            if annotation is None:
                return None
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
    return annotation


def _walk(data: Any, loc: Sequence[Any]) -> tuple[Loc, Any, str | int | None]:
    """Follow pydantic's ``loc`` through the data.

    Returns the path that exists in the data, the node there, and the last part of ``loc``
    when it names a key that is not in the data (a missing key). Parts that are not data
    (the tag pydantic inserts for a discriminated union) are skipped, and so is an index
    into what is not a list: where a list may be given as its one item (``mqtt:``), the
    item is the value itself.
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
        elif isinstance(part, int) and not isinstance(node, list):
            continue
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
# pydantic's own error types; any other type is a custom error of a model (the core's or a
# driver's), whose message is complete.
_PYDANTIC_ERROR_TYPES = frozenset(get_args(ErrorType))


def _extra_key_message(
    key: str, root: Any, container: Loc, data: Any, root_keys: Collection[str] | None
) -> str:
    if key == "password":
        return (
            "plain passwords are not allowed in the config; put the password in a file "
            "(password_file) or an environment variable (password_env)"
        )
    if not container and root_keys is not None:
        allowed = sorted(root_keys)
    else:
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
    err: ErrorDetails,
    root: Any,
    real: Loc,
    missing: str | int | None,
    data: Any,
    root_keys: Collection[str] | None = None,
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
        return _extra_key_message(str(real[-1]), root, real[:-1], data, root_keys)
    if etype == "union_tag_invalid":
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"unknown type {ctx.get('tag')!r}; allowed: {expected}"
    if etype in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), got {_describe(value)}"
    if etype in ("list_type", "tuple_type"):
        return f"expected a list, got {_describe(value)}"
    if etype == "string_pattern_mismatch":
        explanation = PATTERN_HELP.get(str(ctx.get("pattern")))
        if explanation is not None:
            return f"{value!r} {explanation}"
    message = err["msg"]
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if etype not in _SELF_EXPLAINING and etype in _PYDANTIC_ERROR_TYPES:
        message = f"{message}, got {_describe(value)}"
    return message


@dataclass(frozen=True)
class Place:
    """Where a node of validated data is written in a YAML document.

    ``own`` is false when the node came from elsewhere (a device profile's value merged into
    a device entry): ``loc`` is then a stand-in, the key that brought it in, and ``note``
    (appended to the message) says where the node came from.
    """

    loc: Loc
    own: bool = True
    note: str = ""


def _parse_path(text: str) -> Loc:
    return tuple(int(p) if p.isdigit() else p for p in text.strip().split("."))


def validation_issues(
    exc: ValidationError,
    doc: YamlDocument,
    root: Any,
    *,
    data: Any = None,
    locate: Callable[[Loc], Place] | None = None,
    root_keys: Collection[str] | None = None,
    keep: Callable[[ErrorDetails], bool] | None = None,
) -> list[ConfigIssue]:
    """Turn a pydantic ``ValidationError`` into issues at the YAML positions of the
    offending nodes.

    ``root`` is the model (or type) that was validated, from ``data`` (default:
    ``doc.data``). ``locate`` maps a path in ``data`` to its place in ``doc`` (default: the
    same path), for data assembled from several places, such as a device's driver keys
    merged with its profile's. ``root_keys`` lists the keys allowed at the top of ``data``
    when they are not just ``root``'s fields (for suggestions on unknown keys). ``keep``
    selects the errors to report (default: all).

    Missing and unknown keys are reported at a key (the mapping's own key for a missing
    one), bad values at the value.
    """
    source = doc.data if data is None else data
    where = locate if locate is not None else Place
    issues: list[ConfigIssue] = []
    for err in exc.errors(include_url=False):
        if keep is not None and not keep(err):
            continue
        real, node, missing = _walk(source, err["loc"])
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
        message = _error_message(err, root, real, missing, source, root_keys)
        place = where(real)
        related = ctx.get("related")
        if not place.own and isinstance(related, str):
            # The node came from a profile, but the error is also about keys the device
            # may set itself: report it where the user can fix it.
            for text in related.split(","):
                path = _parse_path(text)
                found, _, gap = _walk(source, path)
                candidate = where(found)
                if gap is None and found == path and candidate.own:
                    real, missing, place = found, None, candidate
                    break
        full = place.loc
        if not place.own:
            line, col = doc.value_position(full)
            message += place.note
        elif missing is not None:
            line, col = doc.key_position(full)
            full = (*full, missing)
        elif err["type"] == "extra_forbidden":
            line, col = doc.key_position(full)
        else:
            line, col = doc.value_position(full)
        issues.append(ConfigIssue(doc.file, line, col, _path_str(full), message))
    return issues


def not_missing_at_top(err: ErrorDetails) -> bool:
    """False for a missing top-level key: for validating part of an entry (a profile's
    defaults, a device whose profile is unreadable), where others may supply it."""
    return not (err["type"] == "missing" and len(err["loc"]) == 1)


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


def _bus_spec(raw: dict[str, Any]) -> BusSpec | None:
    """The spec of a bus entry, for checking its devices' driver keys.

    A bus with errors of its own (reported by the models) still gets a spec with its id
    and type, so checks that depend only on the bus type (unit ids, the default driver)
    still run for its devices; the config is refused anyway.
    """
    try:
        spec: BusSpec = _BUS_ADAPTER.validate_python(raw).to_spec()
        return spec
    except ValidationError:
        pass
    bus_id, bus_type = raw.get("id"), raw.get("type")
    if isinstance(bus_id, str) and bus_type in BUS_TYPES:
        return BusSpec(id=bus_id, type=bus_type, timeout=1.0)
    return None


_BUS_ADAPTER: TypeAdapter[Any] = TypeAdapter(BusConfig)


@dataclass(frozen=True)
class _Resolved:
    """A device whose driver keys passed its driver's model."""

    driver: str
    driver_cls: type[Driver]
    options: BaseModel
    profile: ProfileConfig | None


class _Checker:
    """Checks that span sections, checks each device's driver keys, and builds the specs.

    The checks read the raw data rather than validated models, so that a device with,
    say, a bad bus still has its driver keys, id and profile checked: a user gets every
    error of the file in one go.
    """

    def __init__(self, doc: YamlDocument, base_dir: Path, profile_dirs: Sequence[Path]) -> None:
        self.doc = doc
        self.base_dir = base_dir
        self.profile_dirs = [Path(d) for d in profile_dirs]
        self.issues: list[ConfigIssue] = []
        self.profile_issues: list[ConfigIssue] = []
        self.installed = sorted(available_drivers())
        # name -> the loaded class, or why it cannot be loaded
        self._loaded: dict[str, type[Driver] | str] = {}
        self._load_reported: set[str] = set()
        self._profiles: dict[tuple[Path, str], ProfileConfig | None] = {}
        self.bus_specs: dict[str, BusSpec | None] = {}
        # device index -> its driver and checked options (absent: not resolved)
        self.resolved: dict[int, _Resolved] = {}

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
        """Run the cross-section and driver checks on the raw data of the config file."""
        buses = _items(data, "buses")
        first_bus = self._duplicates(buses, "id", ("buses",), "bus id")
        by_index = dict(buses)
        self.bus_specs = {bus_id: _bus_spec(by_index[i]) for bus_id, i in first_bus.items()}
        devices = _items(data, "devices")
        self._duplicates(devices, "id", ("devices",), "device id")
        for i, device in devices:
            self._check_device(i, device)

    # --- drivers

    def _load(self, name: str) -> type[Driver] | str:
        """The driver class ``name``, or why it cannot be loaded (cached)."""
        if name not in self._loaded:
            try:
                cls = load_driver(name)
                if not isinstance(getattr(cls, "device_model", None), type):
                    raise TypeError("it has no device_model")
                self._loaded[name] = cls
            except Exception as exc:  # a broken plugin is a config problem, not a crash
                self._loaded[name] = f"driver {name!r} cannot be loaded: {exc}"
        return self._loaded[name]

    def _load_or_report(self, name: str, loc: Loc) -> type[Driver] | None:
        # A broken plugin is reported once, at the first device that needs it.
        loaded = self._load(name)
        if isinstance(loaded, str):
            if name not in self._load_reported:
                self._load_reported.add(name)
                self.error(loc, loaded)
            return None
        return loaded

    def _default_driver(self, i: int, bus: BusSpec) -> tuple[str, type[Driver]] | None:
        """The installed driver for ``bus``'s type; reported at the device id if none or
        several are."""
        id_loc: Loc = ("devices", i, "id")
        matches: list[tuple[str, type[Driver]]] = []
        broken: list[str] = []
        for name in self.installed:
            loaded = self._load(name)
            if isinstance(loaded, str):
                broken.append(name)
            elif bus.type in loaded.bus_types:
                matches.append((name, loaded))
        if len(matches) == 1:
            return matches[0]
        if matches:
            names = ", ".join(name for name, _ in matches)
            self.error(
                id_loc,
                f"several installed drivers read {bus.type} buses ({names}); pick one with driver:",
            )
            return None
        unreported = [name for name in broken if name not in self._load_reported]
        if broken and not unreported:
            return None  # the broken plugins were reported at an earlier device
        if broken:
            # One of them may be the driver for this bus type; say why they did not load.
            self._load_reported.update(unreported)
            reasons = "; ".join(str(self._loaded[name]) for name in unreported)
            self.error(
                id_loc, f"no installed driver for {bus.type} buses could be loaded: {reasons}"
            )
            return None
        installed = ", ".join(self.installed) or "none"
        self.error(
            id_loc,
            f"no installed driver reads {bus.type} buses (installed: {installed}); "
            "install one, or pick one with driver:",
        )
        return None

    def _guess_driver(self, device: dict[str, Any]) -> tuple[str, type[Driver]] | None:
        # The bus is unknown, so its type cannot pick the driver; the only driver that
        # knows every key of the entry is still worth checking them with (best effort,
        # so that the entry's other errors show up in this run; nothing is built).
        keys = set(device) - CORE_DEVICE_KEYS
        fits = []
        for name in self.installed:
            loaded = self._load(name)
            if not isinstance(loaded, str) and keys <= set(loaded.device_model.model_fields):
                fits.append((name, loaded))
        return fits[0] if len(fits) == 1 else None

    def _driver_of(
        self, i: int, device: dict[str, Any], bus: BusSpec | None
    ) -> tuple[str, type[Driver]] | None:
        if device.get("driver") is not None:
            name = _text(device, "driver", ID_PATTERN)
            if name is None:
                return None  # the model reports a malformed name
            loc: Loc = ("devices", i, "driver")
            if name not in self.installed:
                installed = ", ".join(self.installed) or "none"
                self.error(loc, f"driver {name!r} is not installed (installed: {installed})")
                return None
            cls = self._load_or_report(name, loc)
            return None if cls is None else (name, cls)
        if bus is not None:
            return self._default_driver(i, bus)
        return self._guess_driver(device)

    # --- devices

    def _check_device(self, i: int, device: dict[str, Any]) -> None:
        loc: Loc = ("devices", i)
        device_id = _text(device, "id") or f"#{i}"
        bus_id = _text(device, "bus")
        bus: BusSpec | None = None
        if bus_id is not None and bus_id not in self.bus_specs:
            known = sorted(self.bus_specs)
            close = difflib.get_close_matches(bus_id, known, n=1, cutoff=0.6)
            if close:
                hint = f"; did you mean {close[0]!r}?"
            else:
                hint = f"; defined buses: {', '.join(known)}" if known else "; no buses are defined"
            self.error((*loc, "bus"), f"unknown bus {bus_id!r}{hint}")
        elif bus_id is not None:
            bus = self.bus_specs[bus_id]

        points = device.get("points")
        if isinstance(points, list):
            own_points = [(j, p) for j, p in enumerate(points) if isinstance(p, dict)]
            self._duplicates(
                own_points, "name", (*loc, "points"), "point name", f" in device {device_id!r}"
            )

        driver = self._driver_of(i, device, bus)
        profile: ProfileConfig | None = None
        profile_known = True
        if device.get("profile") is not None:
            name = _text(device, "profile", ID_PATTERN)
            profile = None if name is None else self._resolve_profile(i, name, driver)
            profile_known = profile is not None
        if driver is None:
            return  # reported, or the bus is unknown and the driver cannot be told
        self._check_options(i, device, driver, bus, profile, profile_known)

    def _check_options(
        self,
        i: int,
        device: dict[str, Any],
        driver: tuple[str, type[Driver]],
        bus: BusSpec | None,
        profile: ProfileConfig | None,
        profile_known: bool,
    ) -> None:
        """Check the device's driver keys, merged with its profile's, with the driver's
        ``device_model``; errors go to the device entry's nodes."""
        name, cls = driver
        loc: Loc = ("devices", i)
        own = {k: v for k, v in device.items() if k not in CORE_DEVICE_KEYS}
        data: dict[str, Any] = {}
        from_profile: set[str] = set()
        # The merged points: where each came from, the device's index or None (profile).
        origins: list[int | None] = []
        if profile is not None:
            data.update(profile.defaults)
            from_profile.update(profile.defaults)
        data.update(own)
        from_profile.difference_update(own)
        if profile is not None:
            merged, origins = _merge_points(profile.raw_points, own.get("points"))
            if merged is not None:
                data["points"] = merged
                if "points" not in own:
                    from_profile.add("points")

        def locate(path: Loc) -> Place:
            if not path:
                return Place(loc)
            head = path[0]
            if head == "points" and origins and len(path) > 1 and isinstance(path[1], int):
                origin = origins[path[1]] if 0 <= path[1] < len(origins) else None
                if origin is not None:
                    return Place((*loc, "points", origin, *path[2:]))
            elif head not in from_profile:
                return Place((*loc, *path))
            if profile is None:  # only a profile brings in points or keys of its own
                return Place((*loc, *path))
            return Place(
                (*loc, "profile"),
                own=False,
                note=f"; {_path_str(path)} comes from profile {profile.name!r}",
            )

        context = {"bus": bus} if bus is not None else {}
        try:
            options = cls.device_model.model_validate(data, context=context)
        except ValidationError as exc:
            self.issues.extend(
                validation_issues(
                    exc,
                    self.doc,
                    cls.device_model,
                    data=data,
                    locate=locate,
                    root_keys=CORE_DEVICE_KEYS | set(cls.device_model.model_fields),
                    # The profile could not be read: keys it may supply are not missing.
                    keep=None if profile_known else not_missing_at_top,
                )
            )
            return
        except Exception as exc:  # a driver's model must not crash the loader
            self.error(loc, f"driver {name!r} failed to check the device: {exc!r}", at="key")
            return
        if not profile_known:
            return
        try:
            points = cls.points_of(options)
        except Exception as exc:
            self.error(loc, f"driver {name!r} failed to list the points: {exc!r}", at="key")
            return
        if not points and not cls.discovers_points:
            device_id = _text(device, "id") or f"#{i}"
            self.error(
                (*loc, "points"),
                f"device {device_id!r} has no points; list them under points: or use a profile:",
                at="key",
            )
            return
        self.resolved[i] = _Resolved(name, cls, options, profile)

    # --- profiles

    def _resolve_profile(
        self, i: int, name: str, driver: tuple[str, type[Driver]] | None
    ) -> ProfileConfig | None:
        """The profile ``name`` of device ``i``, checked against its driver."""
        from swm_edge.config.profiles import find_profile, load_profile, profile_names

        searched = [self.base_dir / "profiles", *self.profile_dirs]
        found = find_profile(name, searched)
        if found is None:
            if driver is None:
                return None  # the driver problem is reported; its profiles are unknown
            driver_dirs = [Path(d) for d in driver[1].profile_dirs]
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
        if driver is None:
            return None  # its points cannot be checked without the driver
        key = (found.resolve(), driver[0])
        if key not in self._profiles:
            try:
                self._profiles[key] = load_profile(found, driver[1])
            except ConfigError as exc:
                self._profiles[key] = None
                self.profile_issues.extend(exc.issues)
        return self._profiles[key]

    # --- specs

    def build(self, config: Config) -> tuple[list[BusSpec], list[DeviceSpec]]:
        """The core's specs of a config whose checks found nothing."""
        buses = [bus.to_spec() for bus in config.buses]
        devices: list[DeviceSpec] = []
        for i, device in enumerate(config.devices):
            resolved = self.resolved.get(i)
            if resolved is None:  # every unresolved device was reported; be safe anyway
                self.error(("devices", i), f"device {device.id!r} could not be checked", at="key")
                continue
            quirks = dict(resolved.profile.quirks) if resolved.profile is not None else {}
            quirks.update({key: getattr(device, key) for key in device.model_fields_set})
            merged = DeviceQuirks.model_validate(
                {key: value for key, value in quirks.items() if key in QUIRK_KEYS}
            )
            devices.append(
                DeviceSpec(
                    id=device.id,
                    bus=device.bus,
                    interval=device.interval,
                    points=tuple(resolved.driver_cls.points_of(resolved.options)),
                    driver=resolved.driver,
                    timeout=merged.timeout,
                    retries=merged.retries,
                    request_delay=merged.request_delay,
                    offline_after=merged.offline_after,
                    offline_backoff_max=merged.offline_backoff_max,
                    options=resolved.options,
                )
            )
        return buses, devices

    def driver_classes(self, config: Config) -> dict[str, type[Driver]]:
        """The driver class of every checked device, by device id."""
        return {
            device.id: self.resolved[i].driver_cls
            for i, device in enumerate(config.devices)
            if i in self.resolved
        }


def _merge_points(
    profile_points: Sequence[dict[str, Any]], own: Any
) -> tuple[list[Any] | None, list[int | None]]:
    """A profile's points merged with a device's ``points`` (as written).

    The profile's in their order, each replaced by the device's point of the same name,
    then the device's other points in their order. Returns the merged list (``None`` when
    the device's ``points`` is not a list, which its model reports) and, per merged point,
    its index in the device's list or ``None`` for a profile point.
    """
    if own is None:
        return list(profile_points), [None] * len(profile_points)
    if not isinstance(own, list):
        return None, []
    by_name: dict[str, int] = {}
    for j, point in enumerate(own):
        name = point.get("name") if isinstance(point, dict) else None
        if isinstance(name, str) and name not in by_name:
            by_name[name] = j
    merged: list[Any] = []
    origins: list[int | None] = []
    used: set[int] = set()
    for point in profile_points:
        index = by_name.get(str(point.get("name")))
        if index is None:
            merged.append(point)
            origins.append(None)
        else:
            merged.append(own[index])
            origins.append(index)
            used.add(index)
    for j, point in enumerate(own):
        if j not in used:
            merged.append(point)
            origins.append(j)
    return merged, origins


def _wire_time_warnings(
    doc: YamlDocument,
    config: Config,
    devices: Sequence[DeviceSpec],
    drivers: dict[str, type[Driver]],
) -> list[ConfigIssue]:
    """A warning for every serial line whose devices need more wire time than it has."""
    out: list[ConfigIssue] = []
    for i, bus in enumerate(config.buses):
        if bus.type not in SERIAL_BUS_TYPES:
            continue
        spec = bus.to_spec()
        loads: list[tuple[str, float]] = []
        for device in devices:
            cls = drivers.get(device.id)
            if device.bus != bus.id or cls is None:
                continue
            try:
                seconds = cls.estimate_seconds(device, spec)
            except Exception:  # an estimate is a nicety; a driver bug must not stop loading
                seconds = None
            if seconds is not None:
                loads.append((device.id, seconds / device.interval))
        total = sum(load for _, load in loads)
        if total > _MAX_LINE_LOAD:
            loads.sort(key=lambda item: -item[1])
            figures = ", ".join(f"{dev_id} {load:.2f}" for dev_id, load in loads)
            out.append(
                doc.issue(
                    ("buses", i),
                    f"line {bus.id!r} needs {total:.2f} s of wire time per second at "
                    f"{spec.baudrate} baud: devices {figures}; polls will fall behind their "
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
    warnings_ = _wire_time_warnings(doc, config, devices, checker.driver_classes(config))
    return LoadedConfig(path, config, buses, devices, warnings_)
