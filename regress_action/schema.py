"""The published JSON schemas: the report artifact's (`regress_action/schemas/report.schema.json`)
and the config file's (`regress_action/schemas/config.schema.json`, which editors read through
the `# yaml-language-server: $schema=...` line of a `.regress-action.yml`).

`make schema` (`python -m regress_action.schema`) regenerates both from the `Report` and
`ConfigFile` models after a change; a test fails while a committed file is out of date.
Imports `report` and `config_file` only (pydantic, PyYAML): no torch, SQL, templates or GitHub.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config_file import config_json_schema
from .report import report_json_schema

SCHEMA_PATH = Path(__file__).parent / "schemas" / "report.schema.json"
CONFIG_SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.json"


def _text(schema: dict[str, Any]) -> str:
    """A schema as committed: sorted keys, two-space indent, a final newline."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def schema_text() -> str:
    """The report's schema as committed."""
    return _text(report_json_schema())


def config_schema_text() -> str:
    """The config file's schema as committed."""
    return _text(config_json_schema())


def write_schema(path: Path = SCHEMA_PATH, text: Callable[[], str] = schema_text) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text(), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regress_action.schema",
        description="Write the JSON schemas of the report artifact and of the config file.",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=SCHEMA_PATH,
        help=f"where to write the report's (default {SCHEMA_PATH})",
    )
    parser.add_argument(
        "--config-output",
        type=Path,
        default=CONFIG_SCHEMA_PATH,
        help=f"where to write the config file's (default {CONFIG_SCHEMA_PATH})",
    )
    args = parser.parse_args(argv)
    print(write_schema(args.output))
    print(write_schema(args.config_output, config_schema_text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
