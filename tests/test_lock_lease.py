"""Keeping the organization lock while a run works, giving it back, and freeing it from anywhere.

The lock is held inside ``org_lock`` on a clock only the test moves: each step of time wakes the lease's keeper,
lets it finish what it does, and returns once it waits again, so every renewal happens at an exact moment.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from pathlib import Path

import pytest
from lock_support import (
    START,
    GatedClock,
    Network,
    client_of,
    iso,
    lease_body,
    lease_keys,
    other_run,
    sandbox_on,
    settle,
)

from capella_deploy.run.lock import (
    LEASE_SECONDS,
    LockError,
    LockHeld,
    LockLost,
    LockRequest,
    OrgLock,
    force_unlock,
    holder_text,
    org_lock,
    unlock_command,
)
from capella_deploy.sandbox import Faults, RouteFault, Sandbox

FAILING_READS = Faults(routes=[RouteFault(match="GET /v4/**", error_rate=1.0, error_status=500)])
FAILING_DELETES = Faults(routes=[RouteFault(match="DELETE /v4/**", error_rate=1.0, error_status=500)])


@pytest.fixture
def clock() -> GatedClock:
    return GatedClock()


@pytest.fixture
def sandbox(clock: GatedClock, tmp_path: Path) -> Sandbox:
    return sandbox_on(clock, tmp_path)


def unlock(lock_id: str) -> str:
    return f"capella-deploy force-unlock {lock_id} --org the-org"


def request(**extra: object) -> LockRequest:
    return LockRequest("apply", unlock_command=unlock, **extra)  # type: ignore[arg-type]


async def keeper_waits(clock: GatedClock) -> None:
    await settle(lambda: clock.sleeping() >= 1)


# -- keeping ------------------------------------------------------------------------------------------------------


def test_a_held_lock_is_renewed_every_third_of_its_lease_and_keeps_its_place_in_line(
    clock: GatedClock, sandbox: Sandbox
) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            async with org_lock(client, sandbox.org_id, request(), clock=clock) as lock:
                await keeper_waits(clock)
                [first] = lease_keys(sandbox)
                await clock.advance(LEASE_SECONDS / 3 - 0.5)
                assert lease_keys(sandbox) == [first], "not renewed before a third of the lease has passed"
                for renewal in range(1, 7):
                    await clock.advance(0.5 if renewal == 1 else LEASE_SECONDS / 3)
                    [lease] = lease_keys(sandbox)
                    now = START + renewal * LEASE_SECONDS / 3
                    # A new key each time, the old one deleted; it carries the lock's first moment on.
                    assert lease["id"] != first["id"] and lease["lock"] == lock.id
                    assert lease["created"] == now and lease["expires"] == iso(now + LEASE_SECONDS)
                    assert lease["since"] == iso(START)
                    first = lease
                # Long after it was taken, a run asking now is still behind it, and told since when it is held.
                rival = OrgLock(client, sandbox.org_id, request(), clock=clock)
                with pytest.raises(LockHeld, match=f"lock {lock.id} held by .* since {iso(START)}, its lease "):
                    await rival.acquire()
                assert lock.lost is None
            assert lease_keys(sandbox) == []

    asyncio.run(scenario())


def test_a_shorter_lease_is_renewed_as_often_as_its_length_asks(clock: GatedClock, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with (
            client_of(sandbox) as client,
            org_lock(client, sandbox.org_id, request(lease_seconds=60.0), clock=clock),
        ):
            await keeper_waits(clock)
            [first] = lease_keys(sandbox)
            assert first["expires"] == iso(START + 60.0)
            await clock.advance(19.5)
            assert lease_keys(sandbox) == [first]
            await clock.advance(0.5)
            [renewed] = lease_keys(sandbox)
            assert renewed["id"] != first["id"] and renewed["expires"] == iso(START + 80.0)

    asyncio.run(scenario())


def test_a_renewal_that_fails_is_tried_again_sooner_with_a_warning_and_the_run_goes_on(
    clock: GatedClock, sandbox: Sandbox
) -> None:
    warnings: list[str] = []

    async def scenario() -> None:
        async with client_of(sandbox) as client:
            async with org_lock(client, sandbox.org_id, request(), clock=clock, warn=warnings.append) as lock:
                await keeper_waits(clock)
                sandbox.faults = FAILING_READS
                await clock.advance(100.0)
                [warning] = warnings
                assert re.fullmatch(r"could not renew the lock's lease \(.*500.*\); trying again, 3 min left", warning)
                # A quarter of the time left, then a quarter of what is left then.
                await clock.advance(49.5)
                assert len(warnings) == 1
                await clock.advance(0.5)
                assert len(warnings) == 2 and warnings[1].endswith("trying again, 2 min left")
                sandbox.faults = Faults()
                await clock.advance(37.5)
                assert len(warnings) == 2 and lock.lost is None
                [lease] = lease_keys(sandbox)
                assert lease["lock"] == lock.id and lease["expires"] == iso(round(START + 187.5 + LEASE_SECONDS))
                # Renewed, it goes back to renewing every third of the lease.
                await clock.advance(99.5)
                assert lease_keys(sandbox) == [lease]
                await clock.advance(0.5)
                assert [k["expires"] for k in lease_keys(sandbox)] == [iso(round(START + 287.5 + LEASE_SECONDS))]
            assert lease_keys(sandbox) == []

    asyncio.run(scenario())


def test_a_lease_that_cannot_be_renewed_in_time_stops_the_run_when_it_ends(clock: GatedClock, sandbox: Sandbox) -> None:
    tries: list[float] = []
    stopped_at: list[float] = []

    async def scenario() -> None:
        async with client_of(sandbox) as client:
            with pytest.raises(LockLost) as lost:
                async with org_lock(
                    client, sandbox.org_id, request(), clock=clock, warn=lambda text: tries.append(clock.now())
                ):
                    await keeper_waits(clock)
                    await clock.advance(LEASE_SECONDS / 3)
                    # Another run queues behind this one: its lease, longer than ours, is no lease of ours.
                    behind = other_run(expires=START + 1000.0, since=START + 100.0)
                    await client.create_api_key(sandbox.org_id, lease_body(behind))
                    await clock.advance(LEASE_SECONDS / 3)
                    sandbox.faults = FAILING_READS
                    try:
                        while (wake := clock.next_wake()) is not None:
                            await clock.advance(wake - clock.now())
                    finally:
                        stopped_at.append(clock.now())
            assert str(lost.value) == (
                "stopped: the lock's lease ran out before it could be renewed; another run may have taken it. "
                "Run plan to see where the organization stands."
            )

    asyncio.run(scenario())
    # From the failed renewal on, it tried again after a quarter of the time the lease had left (never sooner than
    # a second apart), and stopped the run at the first try after the lease, renewed last at 200 s, had run out.
    ends = START + 200.0 + LEASE_SECONDS
    expected, at = [], START + 300.0
    while at < ends:
        expected.append(at)
        at += min(LEASE_SECONDS / 3, max(1.0, (ends - at) / 4))
    assert tries == pytest.approx(expected)
    assert stopped_at == [pytest.approx(at)]


@pytest.mark.parametrize("lease", [3.0, 9.0])
def test_a_lease_is_lost_at_the_very_moment_it_ends(lease: float, clock: GatedClock, sandbox: Sandbox) -> None:
    warnings: list[str] = []

    async def scenario() -> None:
        async with client_of(sandbox) as client:
            with pytest.raises(LockLost, match="ran out before it could be renewed"):
                async with org_lock(
                    client, sandbox.org_id, request(lease_seconds=lease), clock=clock, warn=warnings.append
                ):
                    await keeper_waits(clock)
                    sandbox.faults = FAILING_READS
                    while (wake := clock.next_wake()) is not None:
                        assert clock.now() < START + lease, "still held after its lease ended"
                        await clock.advance(wake - clock.now())

    asyncio.run(scenario())
    assert warnings and all(w.endswith(" s left") for w in warnings)


def test_a_renewal_that_fails_after_the_lease_ended_stops_the_run(clock: GatedClock, sandbox: Sandbox) -> None:
    network = Network(sandbox.transport())

    async def scenario() -> None:
        async with client_of(sandbox, network) as client:
            with pytest.raises(LockLost) as lost:
                async with org_lock(client, sandbox.org_id, request(), clock=clock):
                    await keeper_waits(clock)

                    async def slow_and_failing() -> None:
                        # The renewal goes out in time; its answers come as the lease ends, and fail.
                        clock.pass_time(LEASE_SECONDS - LEASE_SECONDS / 3)
                        sandbox.faults = FAILING_READS

                    network.after_create = slow_and_failing
                    await clock.advance(LEASE_SECONDS / 3)
            assert re.fullmatch(
                r"stopped: the lock's lease ran out: it could not be renewed \(.*500.*\)\. "
                r"Run plan to see where the organization stands\.",
                str(lost.value),
            ), lost.value

    asyncio.run(scenario())


def test_a_lease_key_whose_answer_was_lost_is_given_back_even_after_renewals(
    clock: GatedClock, sandbox: Sandbox
) -> None:
    lost_answer = Faults(routes=[RouteFault(match="POST /v4/**", drop_after=1.0)])

    async def scenario() -> None:
        async with client_of(sandbox) as client:
            sandbox.faults = lost_answer
            async with org_lock(client, sandbox.org_id, request(), clock=clock) as lock:
                sandbox.faults = Faults()
                await keeper_waits(clock)
                [unanswered] = lease_keys(sandbox)
                for _ in range(2):
                    await clock.advance(LEASE_SECONDS / 3)
                assert [lease["lock"] for lease in lease_keys(sandbox)] == [lock.id] * 2
                assert unanswered in lease_keys(sandbox)
            assert lease_keys(sandbox) == []

    asyncio.run(scenario())


def test_a_renewal_that_finds_another_run_ahead_stops_the_run_and_withdraws_its_lease(
    clock: GatedClock, sandbox: Sandbox
) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            with pytest.raises(LockLost) as lost:
                async with org_lock(client, sandbox.org_id, request(), clock=clock):
                    await keeper_waits(clock)
                    # A run whose clock runs behind: it took the lock believing it came before us.
                    terms = other_run(expires=START + 400.0, since=START - 5.0, environment="prod")
                    await client.create_api_key(sandbox.org_id, lease_body(terms))
                    await clock.advance(LEASE_SECONDS / 3)
                    await settle(lambda: False)
            assert str(lost.value).startswith(
                "stopped: another run holds the organization now: lock other-run held by ci@runner-7 pid 4242 for "
                f"apply of environment prod since {iso(START - 5.0)}"
            )
            assert str(lost.value).endswith(". Run plan to see where the organization stands.")
            assert [lease["lock"] for lease in lease_keys(sandbox)] == ["other-run"], "every key of ours is gone"

    asyncio.run(scenario())


def test_a_lock_lost_to_force_unlock_stops_the_run_and_leaves_nothing(clock: GatedClock, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            with pytest.raises(LockLost, match=r"^stopped: the lock was removed while this run held it"):
                async with org_lock(client, sandbox.org_id, request(), clock=clock) as lock:
                    await keeper_waits(clock)
                    await force_unlock(client, sandbox.org_id, lock.id)
                    await clock.advance(LEASE_SECONDS / 3)
                    await settle(lambda: False)
            assert lease_keys(sandbox) == [], "the renewal's own key was withdrawn too"

    asyncio.run(scenario())


def test_a_lock_lost_to_force_unlock_is_noticed_even_when_the_renewals_answer_is_lost(
    clock: GatedClock, sandbox: Sandbox
) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            with pytest.raises(LockLost, match=r"^stopped: the lock was removed while this run held it"):
                async with org_lock(client, sandbox.org_id, request(), clock=clock) as lock:
                    await keeper_waits(clock)
                    await force_unlock(client, sandbox.org_id, lock.id)
                    # The renewal's key is made, but its answer never comes back: a key of this lock is listed
                    # again, and it is not one that outlived the force-unlock.
                    sandbox.faults = Faults(routes=[RouteFault(match="POST /v4/**", drop_after=1.0)])
                    await clock.advance(LEASE_SECONDS / 3)
                    await settle(lambda: False)
            assert lease_keys(sandbox) == [], "the renewal's own key was withdrawn too"

    asyncio.run(scenario())


def test_a_block_that_fails_on_its_own_gives_the_lock_back_and_keeps_its_error(
    clock: GatedClock, sandbox: Sandbox
) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            with pytest.raises(ValueError, match="the run's own failure"):
                async with org_lock(client, sandbox.org_id, request(), clock=clock):
                    await keeper_waits(clock)
                    raise ValueError("the run's own failure")
            assert lease_keys(sandbox) == []
            # Cancelled from outside (not by a lost lock), the block stays cancelled.
            task = asyncio.ensure_future(hold(client))
            await settle(lambda: len(lease_keys(sandbox)) == 1 and clock.sleeping() >= 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert lease_keys(sandbox) == []

    async def hold(client: object) -> None:
        async with org_lock(client, sandbox.org_id, request(), clock=clock):  # type: ignore[arg-type]
            await asyncio.get_running_loop().create_future()

    asyncio.run(scenario())


# -- giving back ---------------------------------------------------------------------------------------------------


def test_a_lock_that_cannot_be_given_back_says_when_it_frees_itself_and_how_to_free_it_now(
    clock: GatedClock, sandbox: Sandbox
) -> None:
    warnings: list[str] = []

    async def scenario() -> None:
        async with client_of(sandbox) as client:
            async with org_lock(client, sandbox.org_id, request(), clock=clock, warn=warnings.append) as lock:
                await keeper_waits(clock)
                await clock.advance(LEASE_SECONDS / 3)
                sandbox.faults = FAILING_DELETES
            [warning] = warnings
            assert re.fullmatch(
                rf"could not release the lock on organization {sandbox.org_id} \(.*500.*\); it frees itself at "
                rf"{iso(START + 100 + LEASE_SECONDS)}, or now with: {unlock(lock.id)}",
                warning,
            ), warning
            assert [lease["lock"] for lease in lease_keys(sandbox)] == [lock.id]

    asyncio.run(scenario())


# -- freeing from anywhere ------------------------------------------------------------------------------------------


def test_force_unlock_removes_every_key_of_a_lock_or_one_key_and_says_what_it_removed(
    clock: GatedClock, sandbox: Sandbox
) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            org = sandbox.org_id
            with pytest.raises(LockError, match=f"^organization {org} has no lock nothing; it is not locked$"):
                await force_unlock(client, org, "nothing")
            # One lock caught halfway through a renewal (two keys), and another one's key.
            first = await client.create_api_key(org, lease_body(other_run("lock-b", expires=START + 300.0), "b1"))
            second = await client.create_api_key(org, lease_body(other_run("lock-b", expires=START + 400.0), "b2"))
            third = await client.create_api_key(org, lease_body(other_run("lock-a", expires=START + 300.0), "a1"))
            with pytest.raises(
                LockError, match=f"^organization {org} has no lock lock-c; its lock ids now: lock-a, lock-b$"
            ):
                await force_unlock(client, org, "lock-c")
            removed = await force_unlock(client, org, "lock-b")
            assert sorted(lease.key_id for lease in removed) == sorted([first.id, second.id])
            assert [lease["id"] for lease in lease_keys(sandbox)] == [third.id]
            [by_key] = await force_unlock(client, org, third.id)
            assert by_key.lock_id == "lock-a"
            assert lease_keys(sandbox) == []

    asyncio.run(scenario())


def test_the_unlock_command_names_the_organization_and_target_quoted_for_a_shell() -> None:
    command = unlock_command("org-1", sandbox_state="/tmp/my state.json", token_file="/run/token file")
    assert command("lock 1") == (
        "capella-deploy force-unlock 'lock 1' --org org-1 --sandbox='/tmp/my state.json' --token-file '/run/token file'"
    )
    assert unlock_command("org-1")("abc") == "capella-deploy force-unlock abc --org org-1"


def test_the_holder_is_the_login_else_the_user_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    host = socket.gethostname()
    monkeypatch.delenv("GITHUB_RUN_ID", raising=False)
    monkeypatch.setattr(os, "getlogin", lambda: "alice")
    assert holder_text() == f"alice@{host} pid {os.getpid()}"

    def no_terminal() -> str:
        raise OSError(6, "No such device or address")

    # Without a terminal (a CI job, a container) there is no login name: the environment's user names it.
    monkeypatch.setattr(os, "getlogin", no_terminal)
    monkeypatch.setenv("USER", "bob")
    monkeypatch.setenv("GITHUB_ACTOR", "octocat")
    assert holder_text().startswith(f"bob@{host} ")
    monkeypatch.delenv("USER")
    assert holder_text().startswith(f"octocat@{host} ")
    monkeypatch.delenv("GITHUB_ACTOR")
    assert holder_text().startswith(f"unknown@{host} ")


def test_the_holder_names_the_ci_run_it_belongs_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_RUN_ID", raising=False)
    plain = holder_text()
    assert "GitHub" not in plain and plain.endswith(f" pid {os.getpid()}")
    monkeypatch.setenv("GITHUB_RUN_ID", "9001")
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/models")
    assert holder_text() == f"{plain}, GitHub run 9001 of acme/models"
    monkeypatch.delenv("GITHUB_REPOSITORY")
    assert holder_text() == f"{plain}, GitHub run 9001 of ?"
