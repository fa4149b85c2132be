"""Cursor pagination and list filters of the Management API."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from sandbox_support import CHAT_MODEL, EMBED_MODEL

from capella_deploy.sandbox import IN_PROCESS_BASE_URL


def test_pages_walk_the_whole_list_in_creation_order(api) -> None:
    names = [f"m-{i:02d}" for i in range(25)]
    for name in names:
        api.deploy(name)
    seen, page, cursors = [], 1, []
    while page:
        body = api.get(api.models_url, params={"page": page, "perPage": 10}).json()
        seen += [item["model"]["name"] for item in body["data"]]
        cursors.append(body["cursor"]["pages"])
        page = body["cursor"]["pages"]["next"]
    assert seen == names
    assert cursors == [
        {"last": 3, "next": 2, "page": 1, "perPage": 10, "previous": 0, "totalItems": 25},
        {"last": 3, "next": 3, "page": 2, "perPage": 10, "previous": 1, "totalItems": 25},
        {"last": 3, "next": 0, "page": 3, "perPage": 10, "previous": 2, "totalItems": 25},
    ]


def test_hrefs_are_absolute_and_can_be_followed(api) -> None:
    for i in range(5):
        api.deploy(f"m-{i}")
    first = api.get(api.models_url, params={"perPage": 2}).json()["cursor"]["hrefs"]
    assert first["previous"] == ""
    assert first["first"] == f"{IN_PROCESS_BASE_URL}{api.models_url}?page=1&perPage=2"
    assert first["last"] == f"{IN_PROCESS_BASE_URL}{api.models_url}?page=3&perPage=2"
    middle = api.get(first["next"]).json()
    assert [i["model"]["name"] for i in middle["data"]] == ["m-2", "m-3"]
    assert middle["cursor"]["hrefs"]["previous"] == first["first"]
    end = api.get(first["last"]).json()["cursor"]["hrefs"]
    assert parse_qs(urlsplit(end["next"]).query) == {"page": ["0"], "perPage": ["2"]}  # as the documentation shows


def test_defaults_and_limits_of_page_parameters(api) -> None:
    for i in range(12):
        api.deploy(f"m-{i}")
    default = api.get(api.models_url).json()
    assert len(default["data"]) == 10 and default["cursor"]["pages"]["perPage"] == 10
    assert len(api.get(api.models_url, params={"perPage": 100}).json()["data"]) == 12
    beyond = api.get(api.models_url, params={"page": 9}).json()
    assert beyond["data"] == [] and beyond["cursor"]["pages"]["next"] == 0
    for bad in ({"perPage": 101}, {"perPage": 0}, {"page": 0}, {"page": -1}):
        response = api.get(api.models_url, params=bad)
        assert response.status_code == 422, bad
        assert response.json()["code"] == 1005
    # A value that is not a number cannot be decoded: 400, which listing models lists.
    assert api.get(api.models_url, params={"page": "two"}).json()["code"] == 1000


def test_empty_list(api) -> None:
    body = api.get(api.models_url).json()
    assert body["data"] == []
    assert body["cursor"]["pages"] == {
        "last": 1,
        "next": 0,
        "page": 1,
        "perPage": 10,
        "previous": 0,
        "totalItems": 0,
    }


def test_model_filters_and_filters_survive_in_hrefs(api, clock) -> None:
    api.deploy("chat", CHAT_MODEL)
    api.deploy("embed", EMBED_MODEL, gpu_memory=24)
    clock.advance(300)
    api.deploy("late", CHAT_MODEL)

    def names(**params: str) -> list[str]:
        return [i["model"]["name"] for i in api.get(api.models_url, params=params).json()["data"]]

    assert names(modelStatus="healthy") == ["chat", "embed"]
    assert names(modelStatus="deploying") == ["late"]
    assert names(modelKind="embedding-generation") == ["embed"]
    assert names(modelKind="text-generation", modelStatus="healthy") == ["chat"]
    filtered = api.get(api.models_url, params={"modelKind": "text-generation"}).json()
    assert filtered["cursor"]["pages"]["totalItems"] == 2
    assert "modelKind=text-generation" in filtered["cursor"]["hrefs"]["first"]
    assert api.get(api.models_url, params={"modelStatus": "asleep"}).status_code == 422
    assert api.get(api.models_url, params={"modelKind": "vision"}).status_code == 422


def test_api_keys_sort_filter_and_page(api, clock) -> None:
    api.create_key("b-key", expiry=10)
    clock.advance(1)
    api.create_key("a-key", expiry=300, region="eu-west-1")
    clock.advance(1)
    api.create_key("c-key", expiry=100)

    def names(**params: str) -> list[str]:
        response = api.get(api.keys_url, params=params)
        assert response.status_code == 200, response.text
        return [k["name"] for k in response.json()["data"]]

    assert names() == ["b-key", "a-key", "c-key"]
    assert names(sortBy="name") == ["a-key", "b-key", "c-key"]
    assert names(sortBy="expiry", sortDirection="desc") == ["a-key", "c-key", "b-key"]
    assert names(sortBy="createdAt", sortDirection="desc") == ["c-key", "a-key", "b-key"]
    assert names(filterBy="region:eq:us-east-1") == ["b-key", "c-key"]
    assert names(filterBy="region:eq:eu-west-1", perPage="1") == ["a-key"]
    assert names(sortBy="name", perPage="2", page="2") == ["c-key"]


@pytest.mark.parametrize(
    "params",
    [
        {"sortBy": "color"},
        {"sortDirection": "up"},
        {"filterBy": "region=us-east-1"},
        {"filterBy": "name:eq:x"},
        {"perPage": "0"},
        {"page": "0"},
        {"perPage": "101"},
        {"page": "two"},  # listing keys lists no 400: even what cannot be decoded is a 422
    ],
)
def test_bad_key_list_parameters_are_422(api, params) -> None:
    response = api.get(api.keys_url, params=params)
    assert response.status_code == 422
    assert response.json()["httpStatusCode"] == 422 and response.json()["code"] == 1005
