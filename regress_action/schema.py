"""The published JSON schema of the report artifact (`regress_action/schemas/report.schema.json`).

`make schema` (`python -m regress_action.schema`) regenerates it from the `Report` model after
a change to the report; a test fails while the committed file is out of date.
Imports `report` only (pydantic): no torch, SQL, templates or GitHub.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .report import report_json_schema

SCHEMA_PATH = Path(__file__).parent / "schemas" / "report.schema.json"


def schema_text() -> str:
    """The schema as committed: sorted keys, two-space indent, a final newline."""
    return json.dumps(report_json_schema(), indent=2, sort_keys=True) + "\n"


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema_text(), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m regress_action.schema",
        description="Write the JSON schema of the report artifact.",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=SCHEMA_PATH,
        help=f"where to write it (default {SCHEMA_PATH})",
    )
    args = parser.parse_args(argv)
    print(write_schema(args.output))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
