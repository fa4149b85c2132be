"""`capella-deploy env`: the settings an OpenAI-compatible client needs to call one model."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from capella_deploy.errors import ConfigError
from capella_deploy.manifest import admits


@dataclass(frozen=True)
class EnvSettings:
    text: str
    # Said on stderr: things the user should know about the key that was picked.
    warnings: tuple[str, ...] = ()


def render_env(
    outputs: Mapping[str, Any],
    model: str,
    *,
    key_name: str | None,
    show_secrets: bool,
    declared_allowed: Mapping[str, Sequence[str]] | None = None,
) -> EnvSettings:
    """Lines an OpenAI client (or a shell, via eval) can use to call ``model``.

    The key is one of the model's region whose ``allowedModels`` admits the model, as the outputs record it,
    else as ``declared_allowed`` (the manifest's keys, by name) says.
    """
    from capella_deploy.secrets import MASK

    models: Mapping[str, Any] = outputs.get("models") or {}
    entry = models.get(model)
    if not isinstance(entry, Mapping):
        known = ", ".join(sorted(models)) or "none"
        raise ConfigError(f"no model '{model}' in the outputs (models: {known})")
    connection = entry.get("connectionString")
    if not connection:
        raise ConfigError(f"the outputs have no connection string for model '{model}'; run apply first")
    name, key, warnings = _pick_key(
        outputs.get("apiKeys") or {}, entry.get("region"), key_name, model, declared_allowed
    )
    token = key.get("token")
    if not token:
        raise ConfigError(
            f"the outputs hold no token for key '{name}'; rotate it with `capella-deploy apply --replace apiKey.{name}`"
        )
    lines = [
        f"# model {model} ({entry.get('region') or 'unknown region'}), key {name}",
        f"OPENAI_BASE_URL={shlex.quote(str(connection).rstrip('/') + '/v1')}",
        f"OPENAI_API_KEY={shlex.quote(str(token)) if show_secrets else MASK}",
    ]
    headers = entry.get("headers") or {}
    if headers:
        lines.append("# Send these headers with each request for the declared routing and cache:")
        lines += [f"# {header}: {value}" for header, value in sorted(headers.items())]
    return EnvSettings("\n".join(lines) + "\n", tuple(warnings))


def _allowed(name: str, key: Mapping[str, Any], declared: Mapping[str, Sequence[str]] | None) -> Sequence[str] | None:
    recorded = key.get("allowedModels")
    if isinstance(recorded, list):
        return [str(item) for item in recorded]
    if declared is not None and name in declared:
        return declared[name]
    return None  # outputs written before keys recorded their models, and no manifest to ask


def _pick_key(
    keys: Mapping[str, Any],
    region: object,
    key_name: str | None,
    model: str,
    declared: Mapping[str, Sequence[str]] | None,
) -> tuple[str, Mapping[str, Any], list[str]]:
    if key_name is not None:
        key = keys.get(key_name)
        if not isinstance(key, Mapping):
            raise ConfigError(f"no API key '{key_name}' in the outputs (keys: {', '.join(sorted(keys)) or 'none'})")
        problem = _refusal(key_name, key, region, model, declared)
        if problem:
            raise ConfigError(problem)
        return key_name, key, []
    # A key works only for the models of its own region, and of those only the ones its allowedModels names.
    same_region = {name: key for name, key in keys.items() if isinstance(key, Mapping) and key.get("region") == region}
    admitting = sorted(name for name, key in same_region.items() if _admits(_allowed(name, key, declared), model))
    if len(admitting) == 1:
        name = admitting[0]
        warnings = []
        if _allowed(name, same_region[name], declared) is None:
            warnings.append(
                f"the outputs do not say which models key '{name}' may call (written by an older apply); "
                "pass -f MANIFEST to check it"
            )
        return name, same_region[name], warnings
    if not admitting:
        if same_region:
            raise ConfigError(
                f"no API key in the outputs may call model '{model}': the keys of region {region} "
                f"({', '.join(sorted(same_region))}) do not list it in allowedModels; add it to one of them, "
                "or declare a key for it, and apply"
            )
        raise ConfigError(
            f"no API key of region {region} in the outputs can call model '{model}'; add one to the manifest"
        )
    raise ConfigError(
        f"several API keys of region {region} may call model '{model}'; choose one with --key: " + ", ".join(admitting)
    )


def _admits(allowed: Sequence[str] | None, model: str) -> bool:
    return allowed is None or admits(allowed, model)


def _refusal(
    name: str, key: Mapping[str, Any], region: object, model: str, declared: Mapping[str, Sequence[str]] | None
) -> str | None:
    if key.get("region") != region:
        return f"key '{name}' is of region {key.get('region')}, and model '{model}' of {region}: it cannot call it"
    if not _admits(_allowed(name, key, declared), model):
        return f"key '{name}' may not call model '{model}': its allowedModels does not list it"
    return None
