"""Taking the organization lock: who gets it, who waits, for how long, and what each is told.

Every run here is in-process against the sandbox, on a clock that moves only when the lock waits, so a wait of
minutes takes no wall time and every moment is exact.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from lock_support import (
    START,
    Network,
    ScriptedClock,
    at,
    client_of,
    iso,
    lease_body,
    lease_keys,
    other_run,
    sandbox_on,
)

from capella_deploy.errors import CapellaError
from capella_deploy.lease import KEY_EXPIRY_DAYS, UNREACHABLE_CIDR, parse_terms
from capella_deploy.run.lock import (
    _TIE_ATTEMPTS,
    LEASE_SECONDS,
    Lease,
    LockHeld,
    LockRequest,
    OrgLock,
    holder_text,
    list_leases,
    node_id,
    org_lock,
    parse_lease,
)
from capella_deploy.sandbox import Faults, RouteFault, Sandbox


@pytest.fixture
def clock() -> ScriptedClock:
    return ScriptedClock()


@pytest.fixture
def sandbox(clock: ScriptedClock, tmp_path: Path) -> Sandbox:
    return sandbox_on(clock, tmp_path)


def unlock(lock_id: str) -> str:
    return f"capella-deploy force-unlock {lock_id} --org the-org"


def request(operation: str = "apply", **extra: object) -> LockRequest:
    return LockRequest(operation, unlock_command=unlock, **extra)  # type: ignore[arg-type]


def dead_pid() -> int:
    """The id of a process of this machine that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- a free organization -------------------------------------------------------------------------------------


def test_a_free_organization_is_locked_at_once_by_one_lease_key_that_says_who_holds_it(
    clock: ScriptedClock, sandbox: Sandbox
) -> None:
    notes: list[str] = []

    async def scenario() -> None:
        async with client_of(sandbox) as client:
            lock = OrgLock(
                client,
                sandbox.org_id,
                request("destroy", environment="staging", region="eu-west-1"),
                clock=clock,
                notify=notes.append,
            )
            await lock.acquire()
            assert lock.waited == 0.0 and clock.sleeps == []
            [key] = lease_keys(sandbox)
            record = sandbox.world().api_keys[key["id"]]
            # A key that admits no one, lives a day at most, in the region asked for.
            assert record.allowed_cidrs == [UNREACHABLE_CIDR] and record.expiry_days == KEY_EXPIRY_DAYS
            assert record.region == "eu-west-1"
            terms = parse_terms(record.description)
            assert terms is not None
            assert terms.lock_id == lock.id and terms.operation == "destroy" and terms.environment == "staging"
            assert terms.holder == holder_text() and terms.pid == os.getpid() and terms.node == node_id()
            assert terms.expires == at(START + LEASE_SECONDS)
            [lease] = await list_leases(client, sandbox.org_id)
            assert lease.lock_id == lock.id and lease.key_id == key["id"] and lease.since == at(START)
            await lock.release()
            assert lease_keys(sandbox) == []

    asyncio.run(scenario())
    assert notes == []


def test_an_organization_with_other_api_keys_is_free(clock: ScriptedClock, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            app = {"name": "app", "expiry": 30, "allowedCIDRs": ["10.0.0.0/16"], "region": "us-east-1"}
            made = await client.create_api_key(sandbox.org_id, app)
            async with org_lock(client, sandbox.org_id, request(), clock=clock) as lock:
                assert [lease["lock"] for lease in lease_keys(sandbox)] == [lock.id]
            assert list(sandbox.world().api_keys) == [made.id], "the lock leaves keys that are not leases alone"

    asyncio.run(scenario())


# -- a held organization ---------------------------------------------------------------------------------------


def test_a_lock_held_by_a_live_run_is_refused_at_once_naming_the_holder_and_the_command_that_frees_it(
    clock: ScriptedClock, sandbox: Sandbox
) -> None:
    notes: list[str] = []

    async def scenario() -> None:
        async with client_of(sandbox) as client:
            holder = OrgLock(client, sandbox.org_id, request("destroy", environment="prod"), clock=clock)
            await holder.acquire()
            clock.advance(42.0)
            rival = OrgLock(client, sandbox.org_id, request(), clock=clock, notify=notes.append)
            with pytest.raises(LockHeld) as refused:
                await rival.acquire()
            assert str(refused.value) == (
                f"organization {sandbox.org_id} is locked: lock {holder.id} held by {holder_text()} for destroy "
                f"of environment prod since 2026-01-01T00:00:00Z, its lease running until 2026-01-01T00:05:00Z "
                "unless renewed. Wait for that run to finish, or pass --lock-timeout (e.g. --lock-timeout 30m) to "
                "wait for it; if that run is dead, its lock frees itself when the lease runs out, or free it now "
                f"with: {unlock(holder.id)}"
            )
            assert clock.now() == START + 42.0, "told at once: no waiting without --lock-timeout"
            assert [lease["lock"] for lease in lease_keys(sandbox)] == [holder.id], "the refused run left nothing"

    asyncio.run(scenario())
    assert notes == []


def test_a_run_told_to_wait_says_so_once_and_takes_the_lock_when_the_holder_lets_go(
    clock: ScriptedClock, sandbox: Sandbox
) -> None:
    notes: list[str] = []

    async def scenario() -> None:
        async with client_of(sandbox) as client:
            holder = OrgLock(client, sandbox.org_id, request(), clock=clock)
            await holder.acquire()
            clock.at(START + 40.0, holder.release)
            waiter = OrgLock(client, sandbox.org_id, request(timeout=90.0), clock=clock, notify=notes.append)
            await waiter.acquire()
            # It looked again soon after the holder let go: within the longest wait between looks.
            assert 40.0 <= waiter.waited <= 40.0 + 1.5 * waiter._request.poll_seconds[1]
            assert waiter.waited == clock.now() - START
            assert [lease["lock"] for lease in lease_keys(sandbox)] == [waiter.id]
            [lease] = await list_leases(client, sandbox.org_id)
            assert lease.since == at(clock.now()), "its place in line is its own, not the holder's"

    asyncio.run(scenario())
    [note] = notes
    assert note.startswith(f"Organization {sandbox.org_id} is locked: lock ")
    assert note.endswith(
        "since 2026-01-01T00:00:00Z, its lease running until 2026-01-01T00:05:00Z unless renewed. "
        "Waiting up to 90 s for it."
    )


@pytest.mark.parametrize(("timeout", "said"), [(119.0, "119 s"), (120.0, "2 min"), (3600.0, "60 min")])
def test_the_wait_is_announced_in_seconds_or_minutes(
    timeout: float, said: str, clock: ScriptedClock, sandbox: Sandbox
) -> None:
    notes: list[str] = []

    async def scenario() -> None:
        async with client_of(sandbox) as client:
            holder = OrgLock(client, sandbox.org_id, request(), clock=clock)
            await holder.acquire()
            clock.at(START + 1.0, holder.release)
            await OrgLock(client, sandbox.org_id, request(timeout=timeout), clock=clock, notify=notes.append).acquire()

    asyncio.run(scenario())
    [note] = notes
    assert note.endswith(f"Waiting up to {said} for it.")


def test_a_run_that_waits_in_vain_gives_up_exactly_when_its_timeout_runs_out(
    clock: ScriptedClock, sandbox: Sandbox
) -> None:
    network = Network(sandbox.transport())

    async def scenario() -> None:
        async with client_of(sandbox, network) as client:
            holder = OrgLock(client, sandbox.org_id, request(), clock=clock)
            await holder.acquire()
            looks_before = network.count("GET")
            waiter = OrgLock(client, sandbox.org_id, request(timeout=100.0, poll_seconds=(2.0, 8.0)), clock=clock)
            with pytest.raises(LockHeld, match=f"is locked: lock {holder.id} held by "):
                await waiter.acquire()
            assert clock.now() == START + 100.0
            assert network.count("POST") == 1, "a waiter makes no lease of its own while the lock is held"
            assert [lease["lock"] for lease in lease_keys(sandbox)] == [holder.id]
            # It looked first after about 2 s, then less and less often, but never less than every 8 s or so.
            waits = clock.sleeps
            assert 1.0 <= waits[0] <= 3.0 and max(waits) <= 12.0
            assert sum(waits) == pytest.approx(100.0)
            assert network.count("GET") - looks_before == len(waits) + 1
            assert 100.0 / 12.0 <= len(waits) <= 100.0 / 4.0

    asyncio.run(scenario())


def test_a_timeout_shorter_than_one_look_is_kept_to(clock: ScriptedClock, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            await OrgLock(client, sandbox.org_id, request(), clock=clock).acquire()
            waiter = OrgLock(client, sandbox.org_id, request(timeout=0.5, poll_seconds=(2.0, 8.0)), clock=clock)
            with pytest.raises(LockHeld):
                await waiter.acquire()
            assert clock.now() == START + 0.5

    asyncio.run(scenario())


def test_the_waits_between_looks_grow_by_half_up_to_the_longest(clock: ScriptedClock, sandbox: Sandbox) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            await OrgLock(client, sandbox.org_id, request(), clock=clock).acquire()
            waiter = OrgLock(client, sandbox.org_id, request(timeout=250.0, poll_seconds=(1.0, 20.0)), clock=clock)
            with pytest.raises(LockHeld):
                await waiter.acquire()

    asyncio.run(scenario())
    # Each wait is its step of 1, 1.5, 2.25, ... (at most 20) with a jitter of half either way; the last is cut short
    # at the deadline.
    steps = [min(1.0 * 1.5**n, 20.0) for n in range(len(clock.sleeps))]
    for wait, step in zip(clock.sleeps[:-1], steps, strict=False):
        assert 0.5 * step <= wait <= 1.5 * step
    assert 0 < clock.sleeps[-1] <= 1.5 * steps[len(clock.sleeps) - 1]
    # Jittered, so that runs that met at one moment do not keep meeting.
    assert len({round(wait / step, 6) for wait, step in zip(clock.sleeps[:-1], steps, strict=False)}) > 1


# -- leases that bind no one ----------------------------------------------------------------------------------


def test_an_expired_lease_binds_no_one_from_the_moment_it_ends_and_is_swept(
    clock: ScriptedClock, sandbox: Sandbox
) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            stale = await client.create_api_key(sandbox.org_id, lease_body(other_run(expires=START + 60.0)))
            clock.advance(59.0)
            with pytest.raises(LockHeld, match="lock other-run held by ci@runner-7 pid 4242 for apply since"):
                await OrgLock(client, sandbox.org_id, request(), clock=clock).acquire()
            clock.advance(1.0)
            lock = OrgLock(client, sandbox.org_id, request(), clock=clock)
            await lock.acquire()
            assert [(lease["lock"]) for lease in lease_keys(sandbox)] == [lock.id]
            assert stale.id not in sandbox.world().api_keys

    asyncio.run(scenario())


def test_a_lease_whose_description_cannot_be_read_binds_for_one_lease_from_its_creation(
    clock: ScriptedClock, sandbox: Sandbox
) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            odd = await client.create_api_key(sandbox.org_id, lease_body("written by a later version", "odd"))
            clock.advance(LEASE_SECONDS - 1)
            with pytest.raises(LockHeld) as refused:
                await OrgLock(client, sandbox.org_id, request(), clock=clock).acquire()
            assert (
                f"is locked: lock {odd.id} (a lease key whose description cannot be read), taken at "
                f"{iso(START)}. Wait for that run" in str(refused.value)
            )
            assert str(refused.value).endswith(f"free it now with: {unlock(odd.id)}")
            clock.advance(1.0)
            lock = OrgLock(client, sandbox.org_id, request(), clock=clock)
            await lock.acquire()
            assert [lease["lock"] for lease in lease_keys(sandbox)] == [lock.id], "the unreadable lease was swept"

    asyncio.run(scenario())


def test_a_lease_held_by_a_process_of_this_machine_that_ended_binds_no_one(
    clock: ScriptedClock, sandbox: Sandbox
) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            pid = dead_pid()
            terms = other_run(expires=START + LEASE_SECONDS, pid=pid, node=node_id())
            await client.create_api_key(sandbox.org_id, lease_body(terms))
            lock = OrgLock(client, sandbox.org_id, request(), clock=clock)
            await lock.acquire()
            assert [lease["lock"] for lease in lease_keys(sandbox)] == [lock.id], "the dead run's lease was swept"

    asyncio.run(scenario())


@pytest.fixture
def live_child() -> Iterator[subprocess.Popen[bytes]]:
    """A process of this machine that runs for the length of the test."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield child
    finally:
        child.kill()
        child.wait()


@pytest.fixture
def live_process(live_child: subprocess.Popen[bytes]) -> int:
    return live_child.pid


@pytest.mark.parametrize(
    "where",
    ["another machine", "this machine, no process named", "this machine, a live process"],
)
def test_a_lease_binds_unless_its_holder_is_known_to_have_ended(
    where: str, live_process: int, clock: ScriptedClock, sandbox: Sandbox
) -> None:
    pid, node = {
        "another machine": (dead_pid(), "0123456789abcdef"),
        "this machine, no process named": (None, node_id()),
        "this machine, a live process": (live_process, node_id()),
    }[where]

    async def scenario() -> None:
        async with client_of(sandbox) as client:
            terms = other_run(expires=START + LEASE_SECONDS, pid=pid, node=node)
            other = await client.create_api_key(sandbox.org_id, lease_body(terms))
            with pytest.raises(LockHeld):
                await OrgLock(client, sandbox.org_id, request(), clock=clock).acquire()
            assert [lease["id"] for lease in lease_keys(sandbox)] == [other.id]

    asyncio.run(scenario())


def test_looking_whether_a_holder_lives_never_disturbs_it(
    live_child: subprocess.Popen[bytes], clock: ScriptedClock, sandbox: Sandbox
) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            terms = other_run(expires=START + LEASE_SECONDS, pid=live_child.pid, node=node_id())
            await client.create_api_key(sandbox.org_id, lease_body(terms))
            for _ in range(3):
                with pytest.raises(LockHeld):
                    await OrgLock(client, sandbox.org_id, request(), clock=clock).acquire()

    asyncio.run(scenario())
    # A signal would end the child (it handles none); a zombie still answers kill(pid, 0), so ask its parent.
    assert live_child.poll() is None, f"the holder was signalled: exit status {live_child.returncode}"


# What another user's process looks like from here: it exists, but this user may not signal it.
def test_a_holder_this_user_may_not_signal_is_taken_to_be_alive() -> None:
    # Process 1 always runs and belongs to root: unprivileged, a look at it is refused, which proves it exists.
    lease = Lease("k-1", None, other_run(expires=START + LEASE_SECONDS, pid=1, node=node_id()))
    if os.geteuid() != 0:
        assert lease.holder_died() is False
        return
    # Root may signal anyone: look as "nobody" for a moment, keeping root as the saved id to come back to.
    os.setresuid(65534, 65534, 0)
    try:
        died = lease.holder_died()
    finally:
        os.setresuid(0, 0, 0)
    assert died is False


# -- two runs asking at once ------------------------------------------------------------------------------------


def test_a_run_whose_lease_came_second_withdraws_it_and_names_the_first(clock: ScriptedClock, sandbox: Sandbox) -> None:
    network = Network(sandbox.transport())

    async def scenario() -> None:
        async with client_of(sandbox, network) as client:
            # A lease from long ago, long expired, lies about too: it puts no one ahead of anyone.
            await client.create_api_key(sandbox.org_id, lease_body(other_run("old-run", expires=START + 60.0)))
            clock.advance(1000.0)

            async def first_in_line() -> None:
                # Another run's lease reaches the API a moment before ours: it asked first.
                await client.create_api_key(sandbox.org_id, lease_body(other_run(expires=clock.now() + 300.0)))
                clock.advance(0.001)
                network.before_create = None

            network.before_create = first_in_line
            with pytest.raises(LockHeld, match="is locked: lock other-run held by "):
                await OrgLock(client, sandbox.org_id, request(), clock=clock).acquire()
            assert "other-run" in [lease["lock"] for lease in lease_keys(sandbox)]
            assert len(lease_keys(sandbox)) == 2, "ours was withdrawn"
            assert clock.sleeps == [], "told at once: no waiting without --lock-timeout"

    asyncio.run(scenario())


def test_a_run_whose_lease_came_first_keeps_the_lock_and_leaves_the_later_lease_to_its_run(
    clock: ScriptedClock, sandbox: Sandbox
) -> None:
    network = Network(sandbox.transport())

    async def scenario() -> None:
        async with client_of(sandbox, network) as client:

            async def second_in_line() -> None:
                # Another run, having found the organization free too, makes its lease just after ours.
                clock.advance(0.001)
                await client.create_api_key(sandbox.org_id, lease_body(other_run(expires=clock.now() + 300)))
                network.after_create = None

            network.after_create = second_in_line
            lock = OrgLock(client, sandbox.org_id, request(), clock=clock)
            await lock.acquire()
            # The later lease belongs to a run that is queueing, not to a dead one: its run withdraws it.
            assert sorted(lease["lock"] for lease in lease_keys(sandbox)) == sorted([lock.id, "other-run"])
            [ours] = [lease for lease in await list_leases(client, sandbox.org_id) if lease.lock_id == lock.id]
            assert ours.since == at(START)

    asyncio.run(scenario())


def test_runs_asking_at_the_same_instant_both_step_back_and_try_again(clock: ScriptedClock, sandbox: Sandbox) -> None:
    network = Network(sandbox.transport())

    async def scenario(rival_rounds: int) -> OrgLock:
        async with client_of(sandbox, network) as client:
            rival_keys: list[str] = []

            async def at_the_same_instant() -> None:
                if len(rival_keys) < rival_rounds:
                    terms = other_run(expires=clock.now() + LEASE_SECONDS)
                    rival_keys.append((await client.create_api_key(sandbox.org_id, lease_body(terms))).id)

            async def steps_back_too(key_id: str) -> None:
                if rival_keys and rival_keys[-1] in sandbox.world().api_keys:
                    await client.delete_api_key(sandbox.org_id, rival_keys[-1])

            network.before_create, network.before_delete = at_the_same_instant, steps_back_too
            lock = OrgLock(client, sandbox.org_id, request(), clock=clock)
            await lock.acquire()
            return lock

    # A tie is no refusal, even for a run told not to wait: it tries again, and takes the lock once the other
    # run stops asking at the same moment.
    lock = asyncio.run(scenario(rival_rounds=3))
    assert [lease["lock"] for lease in lease_keys(sandbox)] == [lock.id]
    assert network.count("POST") == 3 * 2 + 1 and len(clock.sleeps) == 3
    assert lock.waited == pytest.approx(sum(clock.sleeps)) and lock.waited > 0

    sandbox.reset()
    network.requests.clear()
    clock.sleeps.clear()
    with pytest.raises(LockHeld) as refused:
        asyncio.run(scenario(rival_rounds=1000))
    assert str(refused.value) == (
        f"could not take the lock on organization {sandbox.org_id}: other runs kept asking for it at the same "
        "moment; try again"
    )
    assert network.count("POST") // 2 == _TIE_ATTEMPTS, "a few tries, then it gives up"
    assert lease_keys(sandbox) == [], "every lease of the tries was withdrawn"


# -- failures while queueing -------------------------------------------------------------------------------------


def test_an_interrupt_while_queueing_leaves_no_lease_behind(clock: ScriptedClock, sandbox: Sandbox) -> None:
    network = Network(sandbox.transport())

    async def scenario() -> None:
        async with client_of(sandbox, network) as client:
            holder = OrgLock(client, sandbox.org_id, request(), clock=clock)

            async def holder_first() -> None:
                await holder.acquire()
                clock.advance(0.001)
                network.before_create = None

            async def interrupted(key_id: str) -> None:
                network.before_delete = None
                raise KeyboardInterrupt

            # Our lease is made, found second, and the interrupt comes as it is being withdrawn.
            network.before_create, network.before_delete = holder_first, interrupted
            with pytest.raises(KeyboardInterrupt):
                async with org_lock(client, sandbox.org_id, request(), clock=clock):
                    raise AssertionError("never taken")
            assert [lease["lock"] for lease in lease_keys(sandbox)] == [holder.id]

    asyncio.run(scenario())


def test_a_failure_after_the_lease_was_made_withdraws_it(clock: ScriptedClock, sandbox: Sandbox) -> None:
    network = Network(sandbox.transport())

    async def scenario() -> None:
        async with client_of(sandbox, network) as client:

            async def listings_fail() -> None:
                sandbox.faults = Faults(routes=[RouteFault(match="GET /v4/**", error_rate=1.0, error_status=500)])

            network.after_create = listings_fail
            with pytest.raises(CapellaError, match="500"):
                async with org_lock(client, sandbox.org_id, request(), clock=clock):
                    raise AssertionError("never taken")

    asyncio.run(scenario())
    assert lease_keys(sandbox) == []


def test_of_several_runs_holding_or_queueing_the_one_named_is_the_first_in_line(
    clock: ScriptedClock, sandbox: Sandbox
) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            queued = other_run("queued-run", expires=START + 300.0)
            await client.create_api_key(sandbox.org_id, lease_body(queued, "q"))
            clock.advance(10.0)
            # Listed after the other, but renewed from a lock taken before it: first in line.
            renewed = other_run("holding-run", expires=START + 400.0, since=START - 200.0)
            await client.create_api_key(sandbox.org_id, lease_body(renewed, "h"))
            with pytest.raises(LockHeld, match=f"is locked: lock holding-run held by .* since {iso(START - 200.0)},"):
                await OrgLock(client, sandbox.org_id, request(), clock=clock).acquire()

    asyncio.run(scenario())


# -- lost answers and failures ---------------------------------------------------------------------------------


def test_a_lease_create_that_made_nothing_is_not_taken_for_a_lock(clock: ScriptedClock, sandbox: Sandbox) -> None:
    network = Network(sandbox.transport())
    refused_once = Faults(routes=[RouteFault(match="POST /v4/**", error_rate=1.0, error_status=500)])

    async def scenario() -> None:
        async with client_of(sandbox, network) as client:

            async def heal() -> None:
                sandbox.faults = Faults()

            # A dead run's lease lies about: it is no lease of ours.
            await client.create_api_key(sandbox.org_id, lease_body(other_run(expires=START - 1.0)))
            sandbox.faults = refused_once
            clock.at(START, heal)
            lock = OrgLock(client, sandbox.org_id, request(), clock=clock)
            await lock.acquire()
            # The answer was a 500: no lease of ours was listed, so it looked again and made one.
            assert network.count("POST") == 3 and len(clock.sleeps) == 1
            assert [lease["lock"] for lease in lease_keys(sandbox)] == [lock.id]

    asyncio.run(scenario())


def test_a_lease_create_that_made_nothing_while_another_run_queued_leaves_the_lock_to_it(
    clock: ScriptedClock, sandbox: Sandbox
) -> None:
    network = Network(sandbox.transport())

    async def scenario() -> None:
        async with client_of(sandbox, network) as client:

            async def other_first_then_refused() -> None:
                await client.create_api_key(sandbox.org_id, lease_body(other_run(expires=START + 300.0)))
                sandbox.faults = Faults(routes=[RouteFault(match="POST /v4/**", error_rate=1.0, error_status=500)])
                network.before_create = None

            network.before_create = other_first_then_refused
            with pytest.raises(LockHeld, match="is locked: lock other-run held by "):
                await OrgLock(client, sandbox.org_id, request(), clock=clock).acquire()
            assert [lease["lock"] for lease in lease_keys(sandbox)] == ["other-run"]

    asyncio.run(scenario())


def test_a_dead_runs_lease_that_cannot_be_deleted_does_not_keep_anyone_from_the_lock(
    clock: ScriptedClock, sandbox: Sandbox
) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            stale = await client.create_api_key(sandbox.org_id, lease_body(other_run(expires=START + 1.0)))
            clock.advance(5.0)
            sandbox.faults = Faults(routes=[RouteFault(match="DELETE /v4/**", error_rate=1.0, error_status=500)])
            lock = OrgLock(client, sandbox.org_id, request(), clock=clock)
            await lock.acquire()
            assert sorted(lease["lock"] for lease in lease_keys(sandbox)) == sorted(["other-run", lock.id])
            sandbox.faults = Faults()
            await lock.release()
            assert [lease["id"] for lease in lease_keys(sandbox)] == [stale.id]

    asyncio.run(scenario())


@pytest.fixture
def far_from_utc() -> Iterator[None]:
    """This machine's zone is not UTC."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_times_in_messages_are_utc_whatever_the_machines_zone(
    far_from_utc: None, clock: ScriptedClock, sandbox: Sandbox
) -> None:
    async def scenario() -> None:
        async with client_of(sandbox) as client:
            holder = OrgLock(client, sandbox.org_id, request(), clock=clock)
            await holder.acquire()
            with pytest.raises(
                LockHeld, match=" since 2026-01-01T00:00:00Z, its lease running until 2026-01-01T00:05:00Z "
            ):
                await OrgLock(client, sandbox.org_id, request(), clock=clock).acquire()

    asyncio.run(scenario())


# -- reading a listing -----------------------------------------------------------------------------------------


def test_a_lease_key_is_read_from_the_listing_by_its_name_id_and_creation() -> None:
    described = other_run("lock-1", expires=START + 300.0).description()
    created = {"createdAt": "2026-01-01T00:00:00.250000Z"}
    lease = parse_lease({"name": "capella-deploy-lock-1a2b", "keyId": "k1", "description": described, "audit": created})
    assert lease is not None and lease.key_id == "k1" and lease.lock_id == "lock-1"
    assert lease.created_at == datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=timezone.utc) == lease.since
    # An API answer that names the key ``id`` (as a create answer does) is read too.
    by_id = parse_lease({"name": "capella-deploy-lock-1a2b", "id": "k2", "description": described})
    assert by_id is not None and by_id.key_id == "k2" and by_id.created_at is None
    # Not a lease, or no id to delete it by: nothing to take into account.
    assert parse_lease({"name": "app", "keyId": "k3", "description": described}) is None
    for key_id in ("", 7, None):
        assert parse_lease({"name": "capella-deploy-lock-1a2b", "keyId": key_id, "description": described}) is None


def test_an_unreadable_lease_without_a_creation_time_binds_no_one_and_says_so() -> None:
    lease = parse_lease({"name": "capella-deploy-lock-zz", "keyId": "k9", "description": "?"})
    assert lease is not None and lease.lock_id == "k9" and lease.since is None
    assert lease.expires(LEASE_SECONDS) is None
    assert lease.describe() == "lock k9 (a lease key whose description cannot be read), taken at ?"


def test_a_listing_without_creation_times_still_gives_the_lock_and_names_the_first_in_line(
    clock: ScriptedClock, sandbox: Sandbox
) -> None:
    network = Network(sandbox.transport())
    network.without_audit = True

    async def scenario() -> None:
        async with client_of(sandbox, network) as client:
            lock = OrgLock(client, sandbox.org_id, request(), clock=clock)
            await lock.acquire()
            assert [lease["lock"] for lease in lease_keys(sandbox)] == [lock.id]
            await lock.release()
            # One lease says since when its lock is held; the other, a first key, says nothing of it.
            await client.create_api_key(sandbox.org_id, lease_body(other_run("queued-run", expires=START + 300.0)))
            holding = other_run("holding-run", expires=START + 300.0, since=START - 60.0)
            await client.create_api_key(sandbox.org_id, lease_body(holding))
            with pytest.raises(LockHeld, match="is locked: lock holding-run held by "):
                await OrgLock(client, sandbox.org_id, request(), clock=clock).acquire()

    asyncio.run(scenario())
