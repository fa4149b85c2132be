"""Where outputs go besides the outputs file: GitHub step outputs or AWS Secrets Manager.

A sink is checked before apply changes anything, so a sink that cannot be written (no $GITHUB_OUTPUT, no boto3,
no AWS credentials) stops the run while every token still has nowhere to be lost from. It publishes only the
entries of the manifest being applied, whatever else an outputs file shared with other manifests holds.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class Sink(Protocol):
    def check(self) -> None:
        """Raise ``OutputsError`` saying what to set when the sink cannot be written."""

    def publish(self, doc: Mapping[str, Any]) -> str:
        """Publish this manifest's entries of the outputs document ``doc``; say in one line what was done."""


@dataclass(frozen=True)
class Entries:
    """The names one manifest declares, by outputs section ("models": {...}, "apiKeys": {...}, ...): the outputs
    a sink publishes."""

    names: Mapping[str, Collection[str]]

    def of(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        mine = {
            section: {n: e for n, e in doc.get(section, {}).items() if n in names}
            for section, names in self.names.items()
        }
        return {**doc, **mine}


def sink_for(target: str | None, environ: Mapping[str, str], entries: Entries) -> Sink | None:
    """The sink `--outputs` names (`github`, `aws-secretsmanager:PREFIX`); None for a plain path."""
    from capella_deploy.outputs.secretstores import aws_prefix

    if target == "github":
        return _GitHub(environ, entries)
    prefix = aws_prefix(target)
    if prefix is not None:
        return _AwsSecretsManager(prefix, entries)
    return None


class _GitHub:
    def __init__(self, environ: Mapping[str, str], entries: Entries) -> None:
        self._environ = environ
        self._entries = entries

    def check(self) -> None:
        from capella_deploy.outputs.github import check_github_output

        check_github_output(self._environ)

    def publish(self, doc: Mapping[str, Any]) -> str:
        from capella_deploy.outputs.github import publish_to_github

        publish_to_github(self._entries.of(doc), self._environ)
        return "Published the outputs to $GITHUB_OUTPUT (tokens masked in the log)."


class _AwsSecretsManager:
    def __init__(self, prefix: str, entries: Entries) -> None:
        self._prefix = prefix
        self._entries = entries
        self._client: Any = None

    def check(self) -> None:
        from capella_deploy.outputs.secretstores import checked_client

        self._client = checked_client(self._prefix)

    def publish(self, doc: Mapping[str, Any]) -> str:
        from capella_deploy.outputs.secretstores import publish_to_aws_secrets_manager

        written = publish_to_aws_secrets_manager(self._entries.of(doc), self._prefix, client=self._client)
        return f"Wrote {len(written)} secret(s) under {self._prefix.rstrip('/')}/."
