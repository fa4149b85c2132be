"""The cross-field rules: what no single field can check, such as unique names, references between models,
keys and checks, regions that must agree, scope and the provider types' credentials.

They run on plain data that may be wrong elsewhere, so every rule reads it defensively; each problem comes back
with its place in the manifest, for ``load`` to give its file and line.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from typing import Any

from capella_deploy.lease import NAME_PREFIX as LEASE_NAME_PREFIX
from capella_deploy.manifest.fields import (
    CREDENTIAL_FIELDS,
    PROVIDER_CREDENTIALS,
    REGION_PATTERN,
    S3_SETTINGS,
    SCOPE_PATTERN,
    UUID_PATTERN,
    Loc,
    admits,
    int_from_text,
)
from capella_deploy.manifest.patterns import example_outside, matches_some_name
from capella_deploy.secrets import API_TOKEN_VARIABLE


def cross_field_problems(data: Mapping[str, Any]) -> list[tuple[Loc, str]]:
    """Checks spanning several fields, on plain data that may be wrong elsewhere (so: defensively)."""
    problems: list[tuple[Loc, str]] = []
    defaults = data.get("defaults")
    written_default = defaults.get("region") if isinstance(defaults, Mapping) else None
    default_region = _region(written_default)
    models = _entries(data.get("models"))
    keys = _entries(data.get("apiKeys"))
    problems += _unique_names("models", models)
    problems += _unique_names("apiKeys", keys)
    providers = _entries(data.get("providers"))
    problems += _rename_problems("models", models)
    problems += _rename_problems("apiKeys", keys)
    problems += _rename_problems("providers", providers)
    problems += _scope_problems(data, {"models": models, "apiKeys": keys, "providers": providers})

    model_regions: dict[str, str | None] = {}
    for index, model in models:
        if model.get("region") in (None, "") and written_default in (None, ""):
            problems.append((("models", index, "region"), "no region: set region here or defaults.region"))
        name = _text(model.get("name"))
        if name is not None:
            model_regions.setdefault(name, _effective_region(model.get("region"), default_region))

    declared = ", ".join(sorted(model_regions)) or "none"
    renamed: dict[str, str] = {}
    for _, model in models:
        if (old := _text(model.get("renamedFrom"))) and (name := _text(model.get("name"))):
            renamed.setdefault(old, name)
    for index, key in keys:
        if (_text(key.get("name")) or "").startswith(LEASE_NAME_PREFIX):
            problems.append(
                (("apiKeys", index, "name"), f"names starting with {LEASE_NAME_PREFIX} are the organization lock's")
            )
        if key.get("region") in (None, "") and written_default in (None, ""):
            problems.append((("apiKeys", index, "region"), "no region: set region here or defaults.region"))
        region = _effective_region(key.get("region"), default_region)
        # Digit text (from a ${VAR}) counts as the number pydantic will make of it.
        expiry = int_from_text(key.get("expiryDays", 180))
        rotate = int_from_text(key.get("rotateBeforeDays", 0))
        if type(expiry) is int and type(rotate) is int and 1 <= expiry <= 365 and rotate >= expiry:
            problems.append(
                (
                    ("apiKeys", index, "rotateBeforeDays"),
                    f"must be less than expiryDays ({expiry}), or every plan would rotate the key",
                )
            )
        allowed = key.get("allowedModels")
        if not isinstance(allowed, (list, tuple)):
            continue
        for position, ref in enumerate(allowed):
            if not isinstance(ref, str) or ref == "*":
                continue
            loc: Loc = ("apiKeys", index, "allowedModels", position)
            if ref in renamed and ref not in model_regions:
                problems.append(
                    (loc, f"model '{ref}' is renamed to '{renamed[ref]}' (renamedFrom); name '{renamed[ref]}'")
                )
            elif ref not in model_regions:
                problems.append((loc, f"no model named '{ref}' in the manifest (models: {declared}); or use \"*\""))
            elif region is not None and model_regions[ref] is not None and model_regions[ref] != region:
                problems.append(
                    (
                        loc,
                        f"model '{ref}' is in {model_regions[ref]} but this key is for {region}; "
                        "a key works only for models of its own region",
                    )
                )
    problems += _embedding_problems(defaults if isinstance(defaults, Mapping) else {}, models)
    problems += _check_problems(_entries(data.get("checks")), models, keys, default_region)
    problems += _provider_problems(providers)
    return problems


def _provider_problems(providers: list[tuple[int, Mapping[str, Any]]]) -> list[tuple[Loc, str]]:
    """What each provider type takes: its credential fields, and the S3 settings for awsS3 alone."""
    problems = _unique_names("providers", providers)
    for index, provider in providers:
        kind = provider.get("type")
        if kind not in PROVIDER_CREDENTIALS:
            continue  # field validation reports the type
        here: Loc = ("providers", index)
        if kind == "awsS3":
            for field in ("awsRegion", "bucket"):
                if provider.get(field) in (None, ""):
                    problems.append(((*here, field), f"required for an awsS3 provider: the {_S3_WHAT[field]}"))
        else:
            for field in S3_SETTINGS:
                if provider.get(field) is not None:
                    problems.append(((*here, field), f"only an awsS3 provider has {field}; this one is {kind}"))
        credentials = provider.get("credentials")
        if not isinstance(credentials, Mapping):
            continue
        allowed, required = PROVIDER_CREDENTIALS[kind]
        for field in required:
            if credentials.get(field) is None:
                problems.append(
                    (
                        (*here, "credentials", field),
                        f"required for an {kind} provider: refer to it as {{env: VARIABLE}} or {{file: PATH}}",
                    )
                )
        for field, value in credentials.items():
            if isinstance(value, Mapping) and value.get("env") == API_TOKEN_VARIABLE:
                problems.append(
                    (
                        (*here, "credentials", field, "env"),
                        f"{API_TOKEN_VARIABLE} is the Management API token, not a credential of this provider",
                    )
                )
            if field not in allowed and field in CREDENTIAL_FIELDS and value is not None:
                problems.append(
                    (
                        (*here, "credentials", field),
                        f"an {kind} provider takes no {field}; it takes {', '.join(allowed)}",
                    )
                )
    return problems


_S3_WHAT = {"awsRegion": "bucket's AWS region, e.g. us-east-1", "bucket": "S3 bucket's name"}


_EMBEDDING = ("cache", "semantic", "embeddingModel")


def _embedding_problems(
    defaults: Mapping[str, Any], models: list[tuple[int, Mapping[str, Any]]]
) -> list[tuple[Loc, str]]:
    """A semantic cache's embeddingModel is a deployed model: one of this manifest (by name) or an id."""
    names = {name: index for index, model in models if (name := _text(model.get("name"))) is not None}
    problems: list[tuple[Loc, str]] = []
    written: list[tuple[Loc, object]] = [(("defaults", *_EMBEDDING), _dig(defaults, _EMBEDDING))]
    written += [(("models", index, *_EMBEDDING), _dig(model, _EMBEDDING)) for index, model in models]
    for loc, ref in written:
        if isinstance(ref, str) and ref not in names and not UUID_PATTERN.fullmatch(ref):
            problems.append((loc, _embedding_hint(ref, models, names)))

    # Which model each model's effective cache embeds with, and where that is written; no model may wait
    # for itself, directly or through others.
    depends: dict[str, tuple[str, Loc]] = {}
    default_cache = _mapping_at(defaults, "cache")
    for index, model in models:
        name = _text(model.get("name"))
        own = _mapping_at(model, "cache")
        kind = own.get("type", default_cache.get("type", "standard"))
        ref, loc = _dig(own, _EMBEDDING[1:]), ("models", index, *_EMBEDDING)
        if ref is None:
            ref, loc = _dig(default_cache, _EMBEDDING[1:]), ("defaults", *_EMBEDDING)
        if name is not None and kind == "semantic" and isinstance(ref, str) and ref in names:
            depends[name] = (ref, loc)
    for name, (ref, loc) in depends.items():
        path, current = [name], ref
        while current in depends and current not in path:
            path.append(current)
            current = depends[current][0]
        if current == name:
            loop = " -> ".join([*path, name])
            how = "would cache with itself" if len(path) == 1 else f"is in a loop of semantic caches ({loop})"
            problems.append(
                (
                    loc,
                    f"model '{name}' {how}: an embedding model must be ready before the model that caches "
                    "with it; give the embedding model its own cache (e.g. cache: {type: none})",
                )
            )
    return problems


def _embedding_hint(ref: str, models: list[tuple[int, Mapping[str, Any]]], names: Mapping[str, int]) -> str:
    """Why ``ref`` is not an embedding model the API takes, and what to write instead."""
    if "/" in ref:
        deploying = sorted(
            name for index, model in models if (name := _text(model.get("name"))) and model.get("catalogModel") == ref
        )
        if deploying:
            suggestion = f"; name '{deploying[0]}', the model of this manifest that deploys it"
        else:
            suggestion = "; declare a model that deploys it and name that model here"
        return (
            f"'{ref}' is a catalog model name, but the cache needs a deployed embedding model: the name of a model "
            f"of this manifest or a deployed model's id{suggestion}"
        )
    declared = ", ".join(sorted(names)) or "none"
    return (
        f"no model named '{ref}' in the manifest (models: {declared}); name a model of this manifest or give a "
        "deployed model's id (a UUID)"
    )


def _mapping_at(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _dig(data: Mapping[str, Any], path: Sequence[str]) -> object:
    current: object = data
    for part in path:
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def _check_problems(
    checks: list[tuple[int, Mapping[str, Any]]],
    models: list[tuple[int, Mapping[str, Any]]],
    keys: list[tuple[int, Mapping[str, Any]]],
    default_region: str | None,
) -> list[tuple[Loc, str]]:
    """What a check refers to must exist and be callable, and its assertions must fit its kind."""
    problems = _unique_names("checks", checks)
    model_by_name = {name: model for _, model in models if (name := _text(model.get("name"))) is not None}
    key_by_name = {name: key for _, key in keys if (name := _text(key.get("name"))) is not None}
    for index, check in checks:
        found: list[tuple[tuple[str, ...], str]] = _assertion_problems(check)
        if check.get("endpoint") is not None:
            found += _endpoint_problems(check)
        elif check.get("model") is None:
            found.append(((), "name a model of this manifest (model:) or an external API (endpoint:)"))
        else:
            found += _model_problems(check, model_by_name, key_by_name, default_region)
        problems += [(("checks", index, *where), message) for where, message in found]
    return problems


def _expect(check: Mapping[str, Any]) -> Mapping[str, Any]:
    expect = check.get("expect")
    return expect if isinstance(expect, Mapping) else {}


def _assertion_problems(check: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    kind, expect = check.get("kind"), _expect(check)
    only = {
        "contains": kind != "embedding",
        "dimensions": kind == "embedding",
        "maxFirstTokenMs": kind == "chat-stream",
    }
    return [
        (("expect", field), f"does not apply to kind: {kind}")
        for field, applies in only.items()
        if expect.get(field) is not None and not applies
    ]


def _endpoint_problems(check: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    found: list[tuple[tuple[str, ...], str]] = []
    if check.get("model") is not None:
        found.append(
            (
                ("model",),
                "give model (of this manifest) or endpoint, not both; name the endpoint's model in endpointModel",
            )
        )
    if check.get("endpointModel") is None:
        found.append(((), "endpointModel is required with endpoint: the model name to request, e.g. hy3-preview"))
    if check.get("apiKeyEnv") is None:
        found.append(((), "apiKeyEnv is required with endpoint: the environment variable holding its API key"))
    if check.get("apiKey") is not None:
        found.append((("apiKey",), "a key of this manifest works only for its own models; use apiKeyEnv"))
    if _expect(check).get("dimensions") == "declared":
        found.append((("expect", "dimensions"), '"declared" needs a model of this manifest; give the number'))
    return found


def _model_problems(
    check: Mapping[str, Any],
    model_by_name: Mapping[str, Mapping[str, Any]],
    key_by_name: Mapping[str, Mapping[str, Any]],
    default_region: str | None,
) -> list[tuple[tuple[str, ...], str]]:
    found: list[tuple[tuple[str, ...], str]] = []
    if check.get("endpointModel") is not None:
        found.append((("endpointModel",), "only with endpoint; a model of this manifest is called by its catalog name"))
    name = _text(check.get("model"))
    model = model_by_name.get(name) if name is not None else None
    if name is None or model is None:
        if name is not None:  # malformed names are reported by field validation
            declared = ", ".join(sorted(model_by_name)) or "none"
            found.append((("model",), f"no model named '{name}' in the manifest (models: {declared})"))
        return found
    if _expect(check).get("dimensions") == "declared" and model.get("dimensions") is None:
        found.append(
            (("expect", "dimensions"), f"model '{name}' declares no dimensions; declare them or give the number")
        )
    region = _effective_region(model.get("region"), default_region)
    key_name = _text(check.get("apiKey"))
    if key_name is None:
        if check.get("apiKeyEnv") is None and not any(
            _key_admits(key, name, region, default_region) for key in key_by_name.values()
        ):
            found.append(
                (
                    (),
                    f"no API key of this manifest can call model '{name}' (region {region}): add one whose "
                    "allowedModels include it, or give apiKeyEnv",
                )
            )
        return found
    if check.get("apiKeyEnv") is not None:
        found.append((("apiKeyEnv",), "give apiKey (a key of this manifest) or apiKeyEnv, not both"))
    key = key_by_name.get(key_name)
    if key is None:
        declared = ", ".join(sorted(key_by_name)) or "none"
        found.append((("apiKey",), f"no API key named '{key_name}' in the manifest (apiKeys: {declared})"))
    elif not _key_admits(key, name, region, default_region):
        found.append(
            (
                ("apiKey",),
                f"key '{key_name}' cannot call model '{name}': a key works only for models of its own region "
                "that its allowedModels list",
            )
        )
    return found


def _key_admits(key: Mapping[str, Any], model: str, region: str | None, default_region: str | None) -> bool:
    allowed = key.get("allowedModels", ["*"])
    listed = isinstance(allowed, (list, tuple)) and admits(allowed, model)
    return listed and _effective_region(key.get("region"), default_region) == region


def _entries(value: object) -> list[tuple[int, Mapping[str, Any]]]:
    if not isinstance(value, (list, tuple)):
        return []
    return [(index, item) for index, item in enumerate(value) if isinstance(item, Mapping)]


def _unique_names(section: str, entries: list[tuple[int, Mapping[str, Any]]]) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    first: dict[str, int] = {}
    for index, entry in entries:
        name = _text(entry.get("name"))
        if name is None:
            continue
        if name in first:
            message = f"'{name}' is already the name of {section}[{first[name]}]; names must be unique"
            problems.append(((section, index, "name"), message))
        else:
            first[name] = index
    return problems


def _rename_problems(section: str, entries: list[tuple[int, Mapping[str, Any]]]) -> list[tuple[Loc, str]]:
    """A former name belongs to one entry, and to no entry the manifest still declares by that name."""
    names = {name: index for index, entry in entries if (name := _text(entry.get("name"))) is not None}
    claimed: dict[str, int] = {}
    problems: list[tuple[Loc, str]] = []
    for index, entry in entries:
        old = _text(entry.get("renamedFrom"))
        if old is None:
            continue
        loc: Loc = (section, index, "renamedFrom")
        if old == _text(entry.get("name")):
            problems.append((loc, f"'{old}' is this entry's own name; remove renamedFrom"))
        elif old in names:
            problems.append(
                (
                    loc,
                    f"'{old}' is the name of {section}[{names[old]}], which the manifest still declares; a "
                    "resource is renamed from a name the manifest no longer uses",
                )
            )
        elif old in claimed:
            problems.append((loc, f"'{old}' is already the renamedFrom of {section}[{claimed[old]}]"))
        else:
            claimed[old] = index
    return problems


def _scope_problems(
    data: Mapping[str, Any], sections: Mapping[str, list[tuple[int, Mapping[str, Any]]]]
) -> list[tuple[Loc, str]]:
    """Every name the manifest declares, or renames from, is inside its scope, and so is what it prunes."""
    written = _mapping_at(data, "scope").get("match")
    listed = [written] if isinstance(written, str) else list(written) if isinstance(written, (list, tuple)) else []
    if not listed or not all(isinstance(p, str) and re.fullmatch(SCOPE_PATTERN, p) for p in listed):
        return []  # no scope, or one that field validation reports
    patterns: list[str] = listed
    problems: list[tuple[Loc, str]] = []
    for position, pattern in enumerate(patterns):
        if not matches_some_name(pattern):
            loc: Loc = ("scope", "match") if isinstance(written, str) else ("scope", "match", position)
            problems.append(
                (
                    loc,
                    f"'{pattern}' matches no name a manifest can declare (a letter or digit, then letters, "
                    "digits, '.', '_' and '-')",
                )
            )
    shown = ", ".join(patterns)
    for section, entries in sections.items():
        for index, entry in entries:
            name, old = _text(entry.get("name")), _text(entry.get("renamedFrom"))
            if name is not None and not _covered(name, patterns):
                problems.append(
                    (
                        (section, index, "name"),
                        f"'{name}' is outside the manifest's scope ({shown}): rename it to match, or widen scope.match",
                    )
                )
            if old is not None and not _covered(old, patterns):
                problems.append(
                    (
                        (section, index, "renamedFrom"),
                        f"'{old}' is outside the manifest's scope ({shown}), so no plan "
                        "of this manifest sees the resource to rename; widen scope.match",
                    )
                )
    prune = _mapping_at(data, "prune").get("match")
    if isinstance(prune, str) and prune:
        outside = example_outside(prune, patterns)
        if outside is not None:
            problems.append(
                (
                    ("prune", "match"),
                    f"'{prune}' reaches outside the manifest's scope ({shown}): it matches "
                    f"'{outside}', for one; prune acts only inside the scope, so write a pattern within it",
                )
            )
    return problems


def _covered(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _effective_region(own: object, default: str | None) -> str | None:
    return default if own in (None, "") else _region(own)


def _region(value: object) -> str | None:
    """A region fit to compare: malformed ones are reported by field validation, not compared."""
    text = _text(value)
    return text if text is not None and re.fullmatch(REGION_PATTERN, text) else None
