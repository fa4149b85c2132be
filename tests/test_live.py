"""Reading the API's answers into a snapshot: both vocabularies, timestamps with any zone, bad entries."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from capella_deploy.api.client import CapellaClient
from capella_deploy.clock import ManualClock
from capella_deploy.kinds.api_key import parse_key
from capella_deploy.kinds.model import LiveModel, allows, parse_model
from capella_deploy.live import LiveState, read_live
from capella_deploy.manifest import Scope
from capella_deploy.secrets import Secret
from tests.planning_support import live_key, live_model


def test_key_creation_times_keep_their_zone() -> None:
    base = {"keyId": "k", "name": "app", "expiry": 30, "allowedCIDRs": ["10.0.0.0/8"]}
    east = parse_key({**base, "audit": {"createdAt": "2026-01-01T10:00:00.123-05:00"}})
    utc = parse_key({**base, "audit": {"createdAt": "2026-01-01T15:00:00.123456789Z"}})
    assert east.created_at == datetime(2026, 1, 1, 15, 0, 0, 123000, tzinfo=timezone.utc)
    assert utc.created_at == datetime(2026, 1, 1, 15, 0, 0, 123456, tzinfo=timezone.utc)
    assert east.expires_at == east.created_at + timedelta(days=30)  # type: ignore[operator]
    assert parse_key({**base, "audit": {"createdAt": "yesterday"}}).created_at is None


def test_both_action_vocabularies_and_wrapped_items() -> None:
    seed = parse_model(
        {"model": {"id": "m", "name": "chat", "status": "healthy", "actions": ["pause", "destroy", "edit"]}}
    )
    spec = parse_model({"id": "m", "name": "chat", "status": "healthy", "actions": ["pause", "delete"]})
    assert seed.actions == {"pause", "delete", "edit"}
    assert spec.actions == {"pause", "delete"}


def test_key_expiry_is_a_number_of_days_read_as_the_lifetime_given() -> None:
    created = datetime(2026, 1, 1, tzinfo=timezone.utc)
    base = {"keyId": "k", "name": "app", "allowedCIDRs": ["10.0.0.0/8"], "audit": {"createdAt": "2026-01-01T00:00:00Z"}}
    now = created + timedelta(days=12, hours=6)
    assert parse_key({**base, "expiry": 30.5}).expiry_days == 30.5
    assert parse_key({**base, "expiry": 30}, now).expiry_days == 30  # as given at creation
    remaining = parse_key({**base, "expiry": 17.75}, now + timedelta(minutes=3))  # read a little before "now"
    assert remaining.expiry_days == 30 and remaining.expires_at == created + timedelta(days=30)
    assert parse_key({**base, "expiry": 17.6}, now).expiry_days == 17.6  # neither: taken as read
    for garbage in (True, "30", float("nan"), -1, 1e9):
        assert parse_key({**base, "expiry": garbage}).expiry_days is None


def test_what_a_model_allows_comes_from_its_actions_else_from_its_status() -> None:
    def model(status: str, actions: list[str] | None = None) -> LiveModel:
        return parse_model({"id": "m", "name": "chat", "status": status, "actions": actions})

    assert allows(model("healthy", ["pause", "destroy", "edit"]), "edit")
    assert not allows(model("healthy", ["destroy"]), "pause")  # the model says no, whatever its status
    assert allows(model("healthy", ["pause", "delete"]), "edit")  # the spec's list never names edits
    assert not allows(model("deploying", ["delete"]), "edit")
    assert allows(model("paused"), "resume") and not allows(model("pausing"), "resume")
    assert allows(model("paused", ["unknown-word"]), "edit")


# -- the snapshot --------------------------------------------------------------------------------------------

ORG = "0b4e7c52-3f1a-4d6e-9a8b-2c5d7e9f1a3b"
LISTS = f"/v4/organizations/{ORG}/aiServices"


def serve(keys: list[dict[str, Any]]) -> httpx.MockTransport:
    """An API that lists no models and no providers, and these keys."""

    def answer(request: httpx.Request) -> httpx.Response:
        listed = {f"{LISTS}/models": [], f"{LISTS}/models/apiKeys": keys, f"{LISTS}/providers": []}
        if request.url.path not in listed:
            return httpx.Response(404, json={"code": 404, "message": "not found"})
        return httpx.Response(200, json={"data": listed[request.url.path]})

    return httpx.MockTransport(answer)


def read(keys: list[dict[str, Any]], now: datetime | None) -> LiveState:
    async def main() -> LiveState:
        client = CapellaClient(
            base_url="https://api.live.test", token=Secret("cb-live-test"), transport=serve(keys), clock=ManualClock()
        )
        async with client:
            return await read_live(client, ORG, now=now)

    return asyncio.run(main())


def test_a_snapshot_reads_a_keys_days_remaining_as_its_lifetime_at_the_time_of_the_reading() -> None:
    created = datetime(2026, 1, 1, tzinfo=timezone.utc)
    key = {"keyId": "k", "name": "app", "expiry": 17.75, "allowedCIDRs": ["10.0.0.0/8"]}
    key["audit"] = {"createdAt": "2026-01-01T00:00:00Z"}
    [read_then] = read([key], now=created + timedelta(days=12, hours=6)).keys
    assert read_then.expiry_days == 30
    [unknown_time] = read([key], now=None).keys
    assert unknown_time.expiry_days == 17.75


def test_a_fingerprint_does_not_depend_on_the_order_a_listing_gives() -> None:
    models = (live_model(), live_model(id="m-2", name="other"))
    keys = (live_key(), live_key(id="k-2", name="second"))
    listed = LiveState("org", models, keys)
    reversed_listing = LiveState("org", models[::-1], keys[::-1])
    assert listed.fingerprint() == reversed_listing.fingerprint()
    assert listed.fingerprint() == listed.fingerprint(listed.digests())
    assert listed.fingerprint() != LiveState("org", models[:1], keys).fingerprint()


def test_narrowing_a_snapshot_to_a_scope_keeps_what_the_reading_warned_of() -> None:
    live = LiveState("org", (live_model(), live_model(id="m-2", name="team-b")), warnings=("page 3 was cut short",))
    narrowed = live.within(Scope(match=["chat"]))
    assert [m.name for m in narrowed.models] == ["chat"]
    assert narrowed.warnings == ("page 3 was cut short",)
