"""The baseline: what a user would script by hand from the Capella API docs.

It reads an organization the obvious way (list a collection to learn the ids, then GET each resource for
its details) and deploys models one after another: create, poll that model's GET until it is healthy,
then the next. Synchronous httpx, no concurrency, no retries: a faithful first script, written from
the public API documentation alone. The benchmark runs it side by side with capella-deploy.

Standalone use (against the real API or a served sandbox)::

    CAPELLA_API_URL=http://127.0.0.1:8099 CAPELLA_API_TOKEN=... CAPELLA_ORG_ID=... \\
        python bench/baseline.py read
    ... python bench/baseline.py deploy bodies.json      # a JSON list of model create bodies
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx

JSON = dict[str, Any]


class Response(Protocol):
    def raise_for_status(self) -> Any: ...

    def json(self) -> Any: ...


class Http(Protocol):
    """What the script needs of its HTTP client: an ``httpx.Client`` with the base URL and token set."""

    def get(self, url: str, *, params: Any = None) -> Response: ...

    def post(self, url: str, *, json: Any = None) -> Response: ...


class DeployFailed(RuntimeError):
    pass


def models_path(org_id: str) -> str:
    return f"/v4/organizations/{org_id}/aiServices/models"


def keys_path(org_id: str) -> str:
    return f"/v4/organizations/{org_id}/aiServices/models/apiKeys"


def providers_path(org_id: str) -> str:
    return f"/v4/organizations/{org_id}/aiServices/providers"


def list_all(http: Http, path: str, per_page: int) -> list[JSON]:
    """Every item of a collection, page by page (the docs: stop when cursor.pages.next is 0 or absent)."""
    items: list[JSON] = []
    page = 1
    while True:
        response = http.get(path, params={"page": page, "perPage": per_page})
        response.raise_for_status()
        body = response.json()
        items.extend(body["data"])
        next_page = body.get("cursor", {}).get("pages", {}).get("next")
        if not next_page:
            return items
        page = int(next_page)


def read_everything(http: Http, org_id: str, per_page: int = 100) -> tuple[list[JSON], list[JSON], list[JSON]]:
    """Every model, API key and provider with its details: one list per collection, then one GET per resource."""
    models: list[JSON] = []
    for item in list_all(http, models_path(org_id), per_page):
        model_id = item.get("model", item)["id"]
        response = http.get(f"{models_path(org_id)}/{model_id}")
        response.raise_for_status()
        models.append(response.json()["model"])
    keys: list[JSON] = []
    for item in list_all(http, keys_path(org_id), per_page):
        response = http.get(f"{keys_path(org_id)}/{item['keyId']}")
        response.raise_for_status()
        keys.append(response.json())
    providers: list[JSON] = []
    for item in list_all(http, providers_path(org_id), per_page):
        response = http.get(f"{providers_path(org_id)}/{item['id']}")
        response.raise_for_status()
        providers.append(response.json())
    return models, keys, providers


def deploy_sequentially(
    http: Http,
    org_id: str,
    bodies: Sequence[JSON],
    *,
    poll_every: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Create each model and wait for it to be healthy before creating the next; returns the ids."""
    ids: list[str] = []
    for body in bodies:
        response = http.post(models_path(org_id), json=body)
        response.raise_for_status()
        model_id = str(response.json()["id"])
        while True:
            response = http.get(f"{models_path(org_id)}/{model_id}")
            response.raise_for_status()
            status = response.json()["model"]["status"]
            if status == "healthy":
                break
            if status == "deployFailed":
                raise DeployFailed(f"model {body['name']} failed to deploy")
            sleep(poll_every)
        ids.append(model_id)
    return ids


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("read", help="read every model, key and provider, one GET each")
    deploy = commands.add_parser("deploy", help="create the models in a JSON file, one at a time")
    deploy.add_argument("bodies", type=Path)
    deploy.add_argument("--poll-every", type=float, default=10.0, help="seconds between status checks")
    args = parser.parse_args(argv)

    url = os.environ.get("CAPELLA_API_URL", "https://cloudapi.cloud.couchbase.com")
    headers = {"Authorization": f"Bearer {os.environ['CAPELLA_API_TOKEN']}"}
    org_id = os.environ["CAPELLA_ORG_ID"]
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        if args.command == "read":
            models, keys, providers = read_everything(http, org_id)
            print(f"{len(models)} models, {len(keys)} API keys, {len(providers)} providers")
        else:
            ids = deploy_sequentially(http, org_id, json.loads(args.bodies.read_text()), poll_every=args.poll_every)
            print(f"deployed {len(ids)} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
