"""The JSON Schemas shipped with the tool: the manifest, and every JSON document the tool writes.

These files are the installed copies; the repository's top-level ``schemas/`` folder publishes the same
files, and a test keeps the two identical (and the manifest schema equal to what the models generate).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# name -> what the schema describes
SCHEMAS = {
    "manifest": "a manifest file (-f)",
    "plan": "the JSON plan of `plan --json` and `show --json`",
    "planfile": "a saved plan (`plan -out FILE`)",
    "drift": "the drift report of `drift --report FILE`",
    "verify": "the check report of `verify --json`",
    "status": "the document of `status --json`",
}


def schema_path(name: str) -> Path:
    """Where the installed schema file is (a real file: the package is installed unzipped)."""
    return Path(str(resources.files(__name__).joinpath(f"{name}.schema.json")))


def schema_text(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8")
