"""The line every plan, apply, drift and status output opens with: where it acts, as text and as Markdown."""

from __future__ import annotations

import re

from capella_deploy.plan import Where

# What Markdown would read as markup inside a line of prose.
_MARKUP = re.compile(r"([\\`*_\[\]<>|~#])")


def target_line(where: Where) -> str:
    """``Target: https://cloudapi.cloud.couchbase.com, organization "Acme Prod" (6af0..., from CAPELLA_ORG_ID),
    environment production, scope team-a-*``."""
    return f"Target: {where.describe()}"


def target_markdown(where: Where) -> str:
    place = code(where.url) if where.url is not None else f"embedded sandbox {code(where.sandbox_state or '')}"
    if where.organization_name is not None:
        name, unnamed = f"**{escape(where.organization_name)}** ", ""
    else:
        name, unnamed = "", "no name given, "
    source = where.organization_id_source.phrase
    environment = f", environment {code(where.environment)}" if where.environment else ""
    scope = f", scope {', '.join(code(pattern) for pattern in where.scope)}" if where.scope else ""
    organization = f"organization {name}({code(where.organization_id)}, {unnamed}{source})"
    return f"Target: {place}, {organization}{environment}{scope}"


def escape(text: str) -> str:
    """``text`` shown as written, not read as Markdown."""
    return _MARKUP.sub(r"\\\1", text)


def code(text: str) -> str:
    """``text`` as inline code, whatever backticks it holds."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"
