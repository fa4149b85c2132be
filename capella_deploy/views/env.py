"""`capella-deploy env`: the settings an OpenAI-compatible client needs to call one model."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any


def render_env(outputs: Mapping[str, Any], model: str, *, key_name: str | None, show_secrets: bool) -> str:
    """Lines an OpenAI client (or a shell, via eval) can use to call ``model``."""
    from capella_deploy.errors import ConfigError
    from capella_deploy.secrets import MASK

    models: Mapping[str, Any] = outputs.get("models") or {}
    entry = models.get(model)
    if not isinstance(entry, Mapping):
        known = ", ".join(sorted(models)) or "none"
        raise ConfigError(f"no model '{model}' in the outputs (models: {known})")
    connection = entry.get("connectionString")
    if not connection:
        raise ConfigError(f"the outputs have no connection string for model '{model}'; run apply first")
    name, key = _pick_key(outputs.get("apiKeys") or {}, entry.get("region"), key_name, model)
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
    return "\n".join(lines) + "\n"


def _pick_key(
    keys: Mapping[str, Any], region: object, key_name: str | None, model: str
) -> tuple[str, Mapping[str, Any]]:
    from capella_deploy.errors import ConfigError

    if key_name is not None:
        key = keys.get(key_name)
        if not isinstance(key, Mapping):
            raise ConfigError(f"no API key '{key_name}' in the outputs (keys: {', '.join(sorted(keys)) or 'none'})")
        return key_name, key
    # A key works only for the models of its own region.
    same_region = sorted(name for name, key in keys.items() if isinstance(key, Mapping) and key.get("region") == region)
    if len(same_region) == 1:
        return same_region[0], keys[same_region[0]]
    if not same_region:
        raise ConfigError(
            f"no API key of region {region} in the outputs can call model '{model}'; add one to the manifest"
        )
    raise ConfigError(
        f"several API keys of region {region} could call model '{model}'; choose one with --key: "
        + ", ".join(same_region)
    )
