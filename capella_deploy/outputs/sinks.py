"""Where outputs go besides the outputs file: GitHub step outputs or AWS Secrets Manager."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from capella_deploy.outputs import Outputs

Sink = Callable[[Outputs], str]


def sink_for(target: str | None, environ: Mapping[str, str]) -> Sink | None:
    """The sink `--outputs` names (`github`, `aws-secretsmanager:PREFIX`); None for a plain path.

    A sink publishes the outputs and says in one line what it did.
    """
    from capella_deploy.outputs.github import publish_to_github
    from capella_deploy.outputs.secretstores import aws_prefix, publish_to_aws_secrets_manager

    if target == "github":

        def to_github(store: Outputs) -> str:
            publish_to_github(store, environ)
            return "Published the outputs to $GITHUB_OUTPUT (tokens masked in the log)."

        return to_github
    prefix = aws_prefix(target)
    if prefix is not None:
        return lambda store: (
            f"Wrote {len(publish_to_aws_secrets_manager(store.document(), prefix))} secret(s) under {prefix}/."
        )
    return None
