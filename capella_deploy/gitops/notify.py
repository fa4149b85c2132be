"""Posting a report to a webhook (Slack-compatible JSON): the one HTTP call the drift command makes.

A webhook URL is itself a credential, so messages name its scheme and host only. Delivery problems are
reported to the caller, never raised: the drift itself is what a run's exit code says.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from capella_deploy.net import plain_http_problem
from capella_deploy.secrets import redact

TIMEOUT_SECONDS = 10.0


def post_report(url: str, payload: dict[str, Any]) -> tuple[str, bool]:
    """POST ``payload`` as JSON to ``url``; return a message for people and whether it was delivered."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "--notify: not a URL; the report was not sent", False
    where = f"{parsed.scheme}://{parsed.host}"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return f"--notify: {where} is not an http(s) URL; the report was not sent", False
    problem = plain_http_problem(parsed, "the report")
    if problem is not None:
        return f"--notify: {problem}", False
    try:
        body = redact(json.dumps(payload))  # a report may quote live values, and a webhook is outside this process
        response = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        return f"could not post the drift report to {where}: {type(exc).__name__}", False
    if response.status_code >= 400:
        return f"the webhook at {where} refused the drift report: HTTP {response.status_code}", False
    return f"Posted the drift report to {where}.", True
