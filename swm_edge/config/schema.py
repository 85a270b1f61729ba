"""JSON Schema of the configuration file, for editors and for validating configs elsewhere.

``config/schema.json`` is generated from the models; regenerate it after changing them::

    swm-edge schema --output config/schema.json
    python -m swm_edge.config.schema config/schema.json

Editors using yaml-language-server pick it up from a first line like
``# yaml-language-server: $schema=../config/schema.json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from swm_edge.config.models import Config

__all__ = ["SCHEMA_DIALECT", "json_schema", "profile_json_schema", "render_schema", "write_schema"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a configuration file (validation mode: what a user may write)."""
    schema = Config.model_json_schema(mode="validation")
    return {"$schema": SCHEMA_DIALECT, **schema}


def profile_json_schema() -> dict[str, Any]:
    """The JSON Schema of a device profile file."""
    from swm_edge.config.profiles import ProfileConfig

    schema = ProfileConfig.model_json_schema(mode="validation")
    return {"$schema": SCHEMA_DIALECT, **schema}


def render_schema(schema: dict[str, Any] | None = None) -> str:
    """The schema as the text of ``config/schema.json``: sorted keys, indent 2, final newline."""
    return json.dumps(json_schema() if schema is None else schema, indent=2, sort_keys=True) + "\n"


def write_schema(path: Path) -> None:
    """Write the configuration file's JSON Schema to ``path``."""
    Path(path).write_text(render_schema(), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m swm_edge.config.schema [OUTPUT]``: write the schema (default: stdout)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or (args and args[0] in ("-h", "--help")):
        print("usage: python -m swm_edge.config.schema [OUTPUT.json]", file=sys.stderr)
        return 2
    if args:
        write_schema(Path(args[0]))
    else:
        sys.stdout.write(render_schema())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
