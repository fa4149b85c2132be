"""Publishing outputs as GitHub Actions step outputs, each token masked in the job log first."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from capella_deploy.outputs import SECTIONS, OutputsError, _text, env_name
from capella_deploy.secrets import revealed


def check_github_output(environ: Mapping[str, str]) -> str:
    """The step-output file GitHub Actions gives this step, once it is known to take appends."""
    target = environ.get("GITHUB_OUTPUT")
    if not target:
        raise OutputsError("--outputs github needs $GITHUB_OUTPUT, which GitHub Actions sets for each step")
    try:
        with open(target, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise OutputsError(f"--outputs github: cannot append to $GITHUB_OUTPUT ({target}): {exc.strerror}") from None
    return target


def publish_to_github(doc: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """Append the outputs of ``doc`` to $GITHUB_OUTPUT; every token is masked in the job log before it is written."""
    target = check_github_output(environ)
    lines: list[str] = []
    for section in SECTIONS:
        # CAPELLA_MODEL_CHAT_URL in a dotenv file is the step output model_chat_url.
        prefix = section.prefix.removeprefix("CAPELLA_").lower()
        for name, entry in sorted(doc.get(section.key, {}).items()):
            token = entry.get("token")
            if token:
                # The workflow command must come first so the runner masks the value wherever it appears.
                with revealed():
                    sys.stdout.write(f"::add-mask::{token}\n")
            for field, suffix in section.fields:
                if entry.get(field) is not None:
                    lines.append(f"{prefix}{env_name(name).lower()}_{suffix.lower()}={_text(entry[field])}")
    sys.stdout.flush()
    with open(target, "a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
