"""How apply makes, rotates and deletes Model API keys: the token is written before anything else happens,
an old key goes only once its successor is recorded, and a key made twice (a lost answer, a race) is resolved
by name and creation time.

Each run is in-process against the sandbox on a clock that moves only when the run waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from capella_deploy.api.client import CapellaClient, CreatedKey
from capella_deploy.apply.applier import Applier, ApplyOptions
from capella_deploy.errors import AmbiguousCreate
from capella_deploy.kinds.api_key import API_KEYS
from capella_deploy.kinds.base import CREATE_ATTEMPTS, Action, create_pause
from capella_deploy.lease import NAME_PREFIX
from capella_deploy.live import read_live
from capella_deploy.outputs import Outputs
from capella_deploy.plan import Plan
from capella_deploy.plan.planner import plan_destroy
from capella_deploy.run.settle import settle_outputs
from capella_deploy.sandbox import CONFLICTS, IN_PROCESS_BASE_URL, Faults, RouteFault
from capella_deploy.secrets import Secret
from tests.test_applier_run import CHAT, TOKEN, World, by_address, key, manifest

KEYS_PATH = "/aiServices/models/apiKeys"
KEY_POSTS = "POST /v4/organizations/*/aiServices/models/apiKeys"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def outputs(world: World) -> dict[str, Any]:
    path = world.tmp_path / "outputs.json"
    return dict(json.loads(path.read_text())["apiKeys"]) if path.exists() else {}


def key_writes(world: World) -> list[str]:
    return [method for method, path in world.wire.requests if KEYS_PATH in path and method != "GET"]


# -- rotation ----------------------------------------------------------------------------------------------------


class OutputsAtDelete(httpx.AsyncBaseTransport):
    """Notes what the outputs file says about a key at the moment its deletion is sent."""

    def __init__(self, inner: httpx.AsyncBaseTransport, path: Path) -> None:
        self.inner = inner
        self.path = path
        self.seen: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            self.seen.append(json.loads(self.path.read_text())["apiKeys"]["app"])
        return await self.inner.handle_async_request(request)


def test_a_rotation_writes_the_new_token_before_the_old_key_is_deleted(world: World) -> None:
    wanted = manifest([], [key("app")])
    world.apply(wanted)
    old = world.live_keys()["app"]
    world.wire.inner = watcher = OutputsAtDelete(world.wire.inner, world.tmp_path / "outputs.json")
    planned = world.plan(wanted, force_replace=frozenset({"apiKey.app"}))
    assert [c.action for c in planned.pending] == [Action.ROTATE]
    run = world.apply(wanted, planned)
    new = world.live_keys()["app"]
    assert run.result.ok and new.id != old.id and list(world.live_keys()) == ["app"]
    [at_delete] = watcher.seen
    assert at_delete["id"] == new.id and at_delete["token"]
    entry = outputs(world)["app"]
    assert entry["id"] == new.id and entry["region"] == "us-east-1" and entry["allowedModels"] == ["*"]
    # Thirty days from the moment it was made, to the second.
    made = world.clock.now()
    assert (
        entry["expiresAt"]
        == datetime.fromtimestamp(made + 30 * 86400, tz=timezone.utc).replace(microsecond=0).isoformat()
    )
    assert entry["expiresAt"].endswith("+00:00")
    assert by_address(run)["apiKey.app"].detail == f"created {new.id}"


def test_where_the_api_refuses_a_second_key_of_a_name_the_old_one_goes_first_and_only_once(tmp_path: Path) -> None:
    world = World(tmp_path, faults=Faults(world=CONFLICTS))
    wanted = manifest([], [key("app")])
    world.apply(wanted)
    old = world.live_keys()["app"]
    before = len(key_writes(world))
    run = world.apply(wanted, world.plan(wanted, force_replace=frozenset({"apiKey.app"})))
    assert run.result.ok, run.result.failed
    assert key_writes(world)[before:] == ["POST", "DELETE", "POST"]
    assert (
        "apiKey.app",
        "the API refuses a second key of this name; deleting the old one first",
    ) in run.progress
    new = world.live_keys()["app"]
    assert new.id != old.id and outputs(world)["app"]["id"] == new.id and outputs(world)["app"]["token"]


def test_a_key_made_by_another_run_since_the_plan_is_not_overwritten_where_names_are_unique(tmp_path: Path) -> None:
    world = World(tmp_path, faults=Faults(world=CONFLICTS))
    wanted = manifest([], [key("app")])
    planned = world.plan(wanted)
    world.apply(wanted)  # another run, in between
    theirs = world.live_keys()["app"]
    (world.tmp_path / "outputs.json").unlink()
    run = world.apply(wanted, planned)
    app = by_address(run)["apiKey.app"]
    assert not app.ok
    assert app.detail.startswith(
        "a key named 'app' already exists that this plan did not know of (made by another run?); plan again: "
    )
    assert list(world.live_keys().values()) == [theirs]


def test_a_renamed_key_whose_new_name_was_taken_since_the_plan_keeps_the_old_key(tmp_path: Path) -> None:
    world = World(tmp_path, faults=Faults(world=CONFLICTS))
    world.apply(manifest([], [key("app")]))
    old = world.live_keys()["app"]
    wanted = manifest([], [{**key("web"), "renamedFrom": "app"}])
    planned = world.plan(wanted)
    world.apply(manifest([], [key("app"), key("web")]))  # another run, in between
    run = world.apply(wanted, planned)
    web = by_address(run)["apiKey.web"]
    assert not web.ok and web.detail.startswith("a key named 'web' already exists that this plan did not know of")
    assert world.live_keys()["app"].id == old.id and outputs(world)["app"]["id"] == old.id


class AnotherRunMakesTheKeyToo(httpx.AsyncBaseTransport):
    """While this run's key create is under way, another run makes a key of the same name."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.inner = world.wire.inner
        self.theirs = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and not self.theirs:
            self.theirs = True
            client = CapellaClient(
                base_url=IN_PROCESS_BASE_URL, token=Secret(TOKEN), transport=self.inner, clock=self.world.clock
            )
            async with client:
                with contextlib.suppress(AmbiguousCreate):  # its answer is lost too; the key is made all the same
                    await client.create_api_key(self.world.sandbox.org_id, json.loads(request.content))
        return await self.inner.handle_async_request(request)


def test_a_lost_answer_with_two_new_keys_of_the_name_claims_neither(tmp_path: Path) -> None:
    world = World(tmp_path, faults=Faults(routes=[RouteFault(match=KEY_POSTS, drop_after=1.0)]))
    world.wire.inner = AnotherRunMakesTheKeyToo(world)
    run = world.apply(manifest([], [key("app")]))
    both = [k.id for k in world.sandbox.world().api_keys.values()]
    app = by_address(run)["apiKey.app"]
    assert not app.ok and len(both) == 2
    assert app.detail == (
        f"the answer to the create was lost, and keys {', '.join(both)} of this name were made since the plan "
        "(another run is making this key too); this run claims none of them: run apply again, which keeps the key "
        "whose token the outputs hold"
    )
    assert "app" not in outputs(world)


def test_a_rotation_whose_new_token_was_lost_deletes_the_new_key_and_keeps_the_old(tmp_path: Path) -> None:
    world = World(tmp_path)
    wanted = manifest([], [key("app")])
    world.apply(wanted)
    old = world.live_keys()["app"]
    token = outputs(world)["app"]["token"]
    world.sandbox.faults = Faults(routes=[RouteFault(match=KEY_POSTS, drop_after=1.0)])
    run = world.apply(wanted, world.plan(wanted, force_replace=frozenset({"apiKey.app"})))
    app = by_address(run)["apiKey.app"]
    assert not app.ok
    [deleted] = [path.rsplit("/", 1)[1] for method, path in world.wire.requests if method == "DELETE"]
    assert app.detail == (
        f"the new key's token was lost in transit, so that key ({deleted}) was deleted again; the old key and its "
        "token are kept: run apply again to rotate"
    )
    assert list(world.live_keys().values()) == [old]
    assert outputs(world)["app"]["id"] == old.id and outputs(world)["app"]["token"] == token


def test_a_create_that_never_goes_through_is_tried_again_after_growing_pauses_then_given_up(tmp_path: Path) -> None:
    world = World(tmp_path, faults=Faults(routes=[RouteFault(match=KEY_POSTS, drop_before=1.0)]))
    started = world.clock.now()
    run = world.apply(manifest([], [key("app")]))
    app = by_address(run)["apiKey.app"]
    assert not app.ok and app.detail.startswith(f"create did not go through after {CREATE_ATTEMPTS} attempts: ")
    assert key_writes(world) == ["POST"] * CREATE_ATTEMPTS
    assert world.clock.now() - started >= sum(create_pause(n) for n in range(1, CREATE_ATTEMPTS))
    assert world.live_keys() == {} and "app" not in outputs(world)


def test_a_key_created_after_a_lost_answer_is_found_by_its_name_and_recorded_without_a_token(tmp_path: Path) -> None:
    world = World(tmp_path, faults=Faults(routes=[RouteFault(match=KEY_POSTS, drop_after=1.0)]))
    other = {**key("other"), "region": "eu-west-1"}
    world.apply(manifest([], [other]))  # lost too: a key of another name, found under its own
    run = world.apply(manifest([], [{**key("app"), "region": "eu-west-1"}]))
    made = world.live_keys()["app"]
    app = by_address(run)["apiKey.app"]
    assert not app.ok and app.detail.startswith(f"key {made.id} was created but its token was lost in transit")
    assert "`capella-deploy apply --replace apiKey.app`" in app.detail
    assert outputs(world)["app"] == {"id": made.id, "region": "eu-west-1", "token": None}


# -- a delete ------------------------------------------------------------------------------------------------------


def test_a_deleted_key_leaves_the_outputs_and_says_deleted(world: World) -> None:
    world.apply(manifest([], [key("app"), key("ops")]))
    wanted = manifest([], [key("app")])
    planned = _destroying(world, "ops")
    run = world.apply(wanted, planned)
    assert by_address(run)[f"apiKey.ops[{planned.pending[0].live_id}]"].detail == "deleted"
    assert sorted(outputs(world)) == ["app"] and list(world.live_keys()) == ["app"]


def _destroying(world: World, name: str) -> Plan:
    async def planned() -> Plan:
        async with world.client() as client:
            live = await read_live(client, world.sandbox.org_id)
        return plan_destroy(manifest([], [key(name)]), live)

    return asyncio.run(planned())


# -- a rename --------------------------------------------------------------------------------------------------------


def test_a_renamed_key_is_recorded_under_its_new_name_only(world: World) -> None:
    world.apply(manifest([], [key("app")]))
    old = world.live_keys()["app"]
    wanted = manifest([], [{**key("web"), "renamedFrom": "app"}])
    run = world.apply(wanted)
    assert run.result.ok, run.result.failed
    assert list(world.live_keys()) == ["web"] and world.live_keys()["web"].id != old.id
    assert list(outputs(world)) == ["web"] and outputs(world)["web"]["token"]


# -- two runs making one key ---------------------------------------------------------------------------------------


def test_of_two_runs_making_one_key_at_once_the_oldest_key_is_kept_and_the_other_run_gives_its_up(
    world: World,
) -> None:
    wanted = manifest([], [key("app")])
    planned = world.plan(wanted)

    async def both() -> tuple[Any, Any]:
        async def one(n: int) -> Any:
            async with world.client() as client:
                store = Outputs(world.tmp_path / f"outputs-{n}.json", "json", org_id=planned.org_id)
                if n == 1:
                    world.clock.advance(1.0)  # this run's key is the younger
                applier = Applier(client, wanted, planned, store, clock=world.clock, options=ApplyOptions())
                return await applier.run()

        return await asyncio.gather(one(0), one(1))

    first, second = asyncio.run(both())
    [kept] = world.sandbox.world().api_keys.values()
    stores = [json.loads((world.tmp_path / f"outputs-{n}.json").read_text())["apiKeys"] for n in (0, 1)]
    assert first.ok and stores[0]["app"]["id"] == kept.id
    [lost] = second.results
    assert not lost.ok
    assert lost.detail.startswith(f"another run made key {kept.id} of this name first, so this run's key ")
    assert "app" not in stores[1]


class AnotherRunSharingTheOutputs(httpx.AsyncBaseTransport):
    """Another run of the same manifest and outputs file: its key is made just before this run's, and its token
    written to the file just after this run wrote its own."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.inner = world.wire.inner
        self.theirs: CreatedKey | None = None
        self.written = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        world = self.world
        if request.method == "POST" and self.theirs is None:
            client = CapellaClient(
                base_url=IN_PROCESS_BASE_URL, token=Secret(TOKEN), transport=self.inner, clock=world.clock
            )
            async with client:
                self.theirs = await client.create_api_key(world.sandbox.org_id, json.loads(request.content))
            world.clock.advance(1.0)
        elif request.method == "GET" and self.theirs is not None and not self.written:
            theirs = Outputs(world.tmp_path / "outputs.json", "json", org_id=world.sandbox.org_id)
            theirs.record_key("app", key_id=self.theirs.id, token=self.theirs.token, region="us-east-1")
            self.written = True
        return await self.inner.handle_async_request(request)


def test_a_run_giving_its_key_up_leaves_the_token_another_run_wrote_in_the_shared_outputs(world: World) -> None:
    other = AnotherRunSharingTheOutputs(world)
    world.wire.inner = other
    run = world.apply(manifest([], [key("app")]))
    assert other.theirs is not None and other.written
    [lost] = run.result.results
    assert not lost.ok and lost.detail.startswith(f"another run made key {other.theirs.id} of this name first")
    assert list(world.sandbox.world().api_keys) == [other.theirs.id]
    assert outputs(world)["app"]["id"] == other.theirs.id
    assert outputs(world)["app"]["token"] == other.theirs.token.reveal()


# -- after apply ---------------------------------------------------------------------------------------------------


def test_settling_names_each_declared_key_whose_token_the_outputs_lack(world: World) -> None:
    wanted = manifest([], [key("app"), key("gone"), key("ops"), key("web")])
    world.apply(manifest([], [key("app"), key("ops"), key("ops-old"), key("web")]))
    keys = world.live_keys()
    document = json.loads((world.tmp_path / "outputs.json").read_text())
    del document["apiKeys"]["ops"]
    (world.tmp_path / "outputs.json").write_text(json.dumps(document))

    async def settled() -> list[str]:
        async with world.client() as client:
            store = Outputs(world.tmp_path / "outputs.json", "json", org_id=world.sandbox.org_id)
            found = await settle_outputs(client, world.sandbox.org_id, wanted, store, clock=world.clock, timeout=60.0)
            return found.warnings

    [warning] = asyncio.run(settled())
    assert warning.startswith(f"apiKey.ops: the outputs hold no token for live key {keys['ops'].id}; ")
    assert warning.endswith("Rotate it with `capella-deploy apply --replace apiKey.ops`")


def test_a_keys_outputs_entry_names_the_models_its_token_may_call_by_manifest_name(world: World) -> None:
    run = world.apply(manifest([CHAT], [key("app", "chat")]))
    assert run.result.ok
    assert outputs(world)["app"]["allowedModels"] == ["chat"]


def test_a_key_is_made_without_waiting_on_the_runs_clock(world: World) -> None:
    run = world.apply(manifest([], [key("app"), key("ops")]))
    assert [r.elapsed for r in run.result.results] == [0.0, 0.0]


def test_reading_keys_passes_over_the_organization_locks_leases_wherever_they_are_listed(world: World) -> None:
    body = {"name": f"{NAME_PREFIX}lease", "expiry": 1, "allowedCIDRs": ["10.0.0.0/16"], "region": "us-east-1"}

    async def lease() -> None:
        async with world.client() as client:
            await client.create_api_key(world.sandbox.org_id, {**body, "allowedModels": ["*"]})

    async def read() -> tuple[list[str], list[str]]:
        async with world.client() as client:
            keys, warnings = await API_KEYS.read(client, world.sandbox.org_id, None)
            return [k.name for k in keys], warnings

    asyncio.run(lease())
    world.apply(manifest([], [key("app")]))
    assert asyncio.run(read()) == (["app"], [])


class LostBeforeSending(httpx.AsyncBaseTransport):
    """The first ``times`` key creates never reach the server: the connection drops before the request is read."""

    def __init__(self, inner: httpx.AsyncBaseTransport, times: int) -> None:
        self.inner = inner
        self.left = times

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and self.left:
            self.left -= 1
            raise httpx.RemoteProtocolError("connection dropped", request=request)
        return await self.inner.handle_async_request(request)


def test_a_rotation_refused_only_at_its_last_attempt_still_makes_the_new_key(tmp_path: Path) -> None:
    # Where names are unique the old key must go first; that delete is no create attempt of its own, so a
    # rotation whose earlier attempts were lost does not end with the old key gone and no new one.
    world = World(tmp_path, faults=Faults(world=CONFLICTS))
    wanted = manifest([], [key("app")])
    world.apply(wanted)
    old = world.live_keys()["app"]
    planned = world.plan(wanted, force_replace=frozenset({"apiKey.app"}))
    world.wire.inner = LostBeforeSending(world.wire.inner, CREATE_ATTEMPTS - 1)
    run = world.apply(wanted, planned)
    assert run.result.ok, run.result.failed
    new = world.live_keys()["app"]
    assert new.id != old.id and outputs(world)["app"]["id"] == new.id and outputs(world)["app"]["token"]
