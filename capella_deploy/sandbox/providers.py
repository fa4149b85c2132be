"""AI provider integrations: organization-level credentials for outside AI services and storage.

Types and their configuration, as the official spec has them (create requires the fields marked *; an update
may send any of its type's fields, each optional)::

    openAI      apiKey*
    awsBedrock  accessKeyId*, secretAccessKey*
    awsS3       accessKeyId*, secretAccessKey*, sessionToken, awsRegion*, bucket*, folderPath

Credentials are write-only: reads show ``{}`` for openAI and awsBedrock and ``{awsRegion, bucket, folderPath}``
for awsS3, and the state keeps only each credential's SHA-256. The name (at most 50 characters) and the type
cannot change. Duplicate names are accepted in the spec world and refused with 409 in the conflicts world.
The S3 region and bucket name rules are AWS's; the sandbox ASSUMES Capella checks them.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from capella_deploy.sandbox import operations, views
from capella_deploy.sandbox.bodies import Reader
from capella_deploy.sandbox.errors import DUPLICATE, Refusal, invalid
from capella_deploy.sandbox.http import base_url, management_json, org_sandbox
from capella_deploy.sandbox.management import check_version, if_match_version, not_found
from capella_deploy.sandbox.state import Audit, ProviderRecord

NAME_MAX = 50
_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class ProviderType:
    name: str
    credentials: tuple[str, ...]  # write-only
    settings: tuple[str, ...] = ()  # shown by reads
    optional: tuple[str, ...] = ()  # fields create does not require

    @property
    def fields(self) -> tuple[str, ...]:
        return self.credentials + self.settings


TYPES = {
    t.name: t
    for t in (
        ProviderType("openAI", ("apiKey",)),
        ProviderType("awsBedrock", ("accessKeyId", "secretAccessKey")),
        ProviderType(
            "awsS3",
            ("accessKeyId", "secretAccessKey", "sessionToken"),
            ("awsRegion", "bucket", "folderPath"),
            optional=("sessionToken", "folderPath"),
        ),
    )
}


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class Configuration:
    settings: dict[str, str]
    credential_sha256: dict[str, str]


def parse_configuration(body: Reader, kind: ProviderType, *, creating: bool) -> Configuration:
    config = body.child("configuration", required=True)
    assert config is not None
    config.only(kind.fields)
    values: dict[str, str] = {}
    for field in kind.fields:
        required = creating and field not in kind.optional
        value = config.string(field, required=required)
        if value is None:
            continue
        if not value.strip() and field != "folderPath":  # an empty folderPath is the bucket's root
            raise invalid(f"configuration.{field} must not be empty")
        values[field] = value
    if "awsRegion" in values and not _AWS_REGION.match(values["awsRegion"]):
        raise invalid(f"configuration.awsRegion {values['awsRegion']!r} is not an AWS region name (e.g. us-east-1)")
    if "bucket" in values and not _BUCKET.match(values["bucket"]):
        raise invalid(
            f"configuration.bucket {values['bucket']!r} is not an S3 bucket name "
            "(3 to 63 lowercase letters, digits, dots and hyphens)"
        )
    if creating and "awsRegion" in kind.settings:
        values.setdefault("folderPath", "")
    return Configuration(
        settings={k: v for k, v in values.items() if k in kind.settings},
        credential_sha256={k: digest(v) for k, v in values.items() if k in kind.credentials},
    )


def provider_view(provider: ProviderRecord, *, with_id: bool) -> dict[str, Any]:
    view: dict[str, Any] = {"id": provider.id} if with_id else {}
    view.update(
        name=provider.name,
        type=provider.type,
        configuration=dict(provider.settings),
        audit=views.audit_view(provider.audit),
    )
    return view


async def list_providers(request: Request) -> Response:
    sandbox = org_sandbox(request)
    wanted = request.query_params.get("providerType") or None
    if wanted is not None and wanted not in TYPES:
        raise invalid(f"providerType must be one of {', '.join(TYPES)}; got {wanted!r}")
    shown = [p for p in sandbox.world().providers.values() if wanted is None or p.type == wanted]
    url = base_url(request) + request.url.path
    page, cursor = views.paginate(shown, url, request.query_params, max_per_page=sandbox.faults.max_per_page)
    return JSONResponse({"cursor": cursor, "data": [provider_view(p, with_id=True) for p in page]})


async def create_provider(request: Request) -> Response:
    sandbox = org_sandbox(request)
    body = Reader(await management_json(request), "")
    body.only(("name", "type", "configuration"))
    name = body.string("name", required=True, max_len=NAME_MAX)
    kind = TYPES[body.choice("type", tuple(TYPES), required=True)]
    assert name is not None
    config = parse_configuration(body, kind, creating=True)
    with sandbox.mutate() as world:
        if sandbox.rules == operations.CONFLICTS and any(p.name == name for p in world.providers.values()):
            raise Refusal(DUPLICATE, f"A provider named {name!r} already exists in this organization.")
        provider = ProviderRecord(
            id=str(uuid.uuid4()),
            name=name,
            type=kind.name,
            settings=config.settings,
            credential_sha256=config.credential_sha256,
            audit=Audit.new(world.actor_id, sandbox.now()),
        )
        world.providers[provider.id] = provider
    return JSONResponse({"id": provider.id}, status_code=201)


async def get_provider(request: Request) -> Response:
    sandbox = org_sandbox(request)
    provider = sandbox.world().providers.get(request.path_params["providerId"])
    if provider is None:
        raise not_found("Provider", request.path_params["providerId"])
    # The spec's ETag spelling; If-Match accepts it back as well as the bare version.
    headers = {"ETag": f"Version: {provider.audit.version}"}
    return JSONResponse(provider_view(provider, with_id=False), headers=headers)


async def update_provider(request: Request) -> Response:
    sandbox = org_sandbox(request)
    body = Reader(await management_json(request), "")
    body.only(("configuration",))
    expected = if_match_version(request)
    provider_id = request.path_params["providerId"]
    with sandbox.mutate() as world:
        provider = world.providers.get(provider_id)
        if provider is None:
            raise not_found("Provider", provider_id)
        config = parse_configuration(body, TYPES[provider.type], creating=False)
        check_version(expected, provider.audit, "provider")
        provider.settings.update(config.settings)
        provider.credential_sha256.update(config.credential_sha256)
        provider.audit.touch(world.actor_id, sandbox.now())
    return Response(status_code=204)


async def delete_provider(request: Request) -> Response:
    sandbox = org_sandbox(request)
    with sandbox.mutate() as world:
        if world.providers.pop(request.path_params["providerId"], None) is None:
            raise not_found("Provider", request.path_params["providerId"])
    return Response(status_code=204)


def routes() -> list[Route]:
    return [
        operations.LIST_PROVIDERS.route(list_providers),
        operations.CREATE_PROVIDER.route(create_provider),
        operations.GET_PROVIDER.route(get_provider),
        operations.UPDATE_PROVIDER.route(update_provider),
        operations.DELETE_PROVIDER.route(delete_provider),
    ]
