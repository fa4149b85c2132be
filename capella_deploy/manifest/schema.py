"""The manifest's JSON Schema, generated from the models, for editors and for ``capella-deploy schema``.

The committed copies (``schemas/`` and the packaged one) are regenerated with
``python -m capella_deploy.manifest --write-schema``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from capella_deploy.manifest.spec import Manifest

SCHEMA_ID = "urn:capella-deploy:schema:manifest:v1"
DEFAULT_SCHEMA_PATH = Path("schemas/manifest.schema.json")
PACKAGED_SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "manifest.schema.json"


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema of a manifest file, generated from the models."""
    generated = Manifest.model_json_schema()
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "capella-deploy manifest",
        "description": (
            "Models and Model API keys of a Couchbase Capella AI Services organization, as capella-deploy "
            "plans and applies them. String values may use ${VAR} and ${VAR:-default}."
        ),
    }
    schema.update({key: value for key, value in generated.items() if key not in ("title", "description")})
    return schema


def schema_text() -> str:
    return json.dumps(manifest_json_schema(), indent=2, sort_keys=True) + "\n"


def write_schema(path: str | Path = DEFAULT_SCHEMA_PATH) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(schema_text(), encoding="utf-8")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m capella_deploy.manifest", description="Print or write the manifest JSON Schema."
    )
    parser.add_argument(
        "--write-schema",
        nargs="?",
        const="",
        metavar="PATH",
        help=f"write the schema to PATH (default: {DEFAULT_SCHEMA_PATH} and the packaged copy) instead of printing it",
    )
    args = parser.parse_args(argv)
    if args.write_schema is None:
        sys.stdout.write(schema_text())
        return 0
    # The repository publishes the schema in schemas/; the package ships its own copy for `capella-deploy schema`.
    targets = [args.write_schema] if args.write_schema else [DEFAULT_SCHEMA_PATH, PACKAGED_SCHEMA_PATH]
    for target in targets:
        print(f"wrote {write_schema(target)}")
    return 0
