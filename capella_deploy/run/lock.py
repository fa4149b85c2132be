"""The organization lock: one run at a time changes an organization, whichever machine it runs on.

There is no server of ours to hold a lock, and Capella has no lock call, so the lock is kept in the organization
itself as a lease: a Model API key whose name marks it (``capella-deploy-lock-…``) and whose description says who
holds it, since when and until when (see ``capella_deploy/lease.py``). The API can neither edit a key nor refuse
a second one of a name, so the lock is taken the way a queue is joined:

1. List the leases. While another run's lease is unexpired, wait (up to ``--lock-timeout``) and list again.
2. Create a lease of our own, then list again. Our lock is taken when every other unexpired lease was asked for
   strictly later than ours (the server's ``createdAt`` of each lock's first lease key). Otherwise, or on a tie,
   delete ours and go back to 1. Two runs can each believe they are first only if one listing missed a key
   created before it, which a list that reads what was written cannot do.
3. While the run works, renew: every third of the lease a new key is created carrying the lock's first time on,
   and the previous key is deleted. A renewal that finds the lock's keys gone (``force-unlock``), or that comes
   too late to keep the lease, stops the run: it no longer holds the lock.
4. Release: delete every key of the lock. A run that dies without releasing holds the lock until its lease runs
   out; ``force-unlock`` frees it at once.

Lease times are read on this machine's wall clock, so machines sharing an organization must keep their clocks
within a small part of a lease (NTP does). The key's token is never kept: it is dropped as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import random
import secrets
import shlex
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from capella_deploy.api.client import CapellaClient
from capella_deploy.clock import Clock, SystemClock
from capella_deploy.errors import AmbiguousCreate, CapellaError
from capella_deploy.kinds.parsing import parse_time
from capella_deploy.lease import KEY_EXPIRY_DAYS, NAME_PREFIX, UNREACHABLE_CIDR, LeaseTerms, is_lease_key, parse_terms

log = logging.getLogger("capella_deploy.lock")

LEASE_SECONDS = 300.0
# A contender looks again after this long, growing by half each time up to the maximum (wall seconds).
FIRST_POLL_SECONDS = 0.5
MAX_POLL_SECONDS = 10.0
# A lock taken at the same instant by two runs is taken by neither; both back off and try again, this often
# even when told not to wait.
_TIE_ATTEMPTS = 5


class LockError(CapellaError):
    """The organization lock could not be taken, kept or removed."""


class LockHeld(LockError):
    """Another run holds the lock."""


class LockLost(LockError):
    """This run held the lock and no longer does."""


@dataclass(frozen=True)
class LockRequest:
    operation: str
    # Seconds to wait for another run's lock (``--lock-timeout``).
    timeout: float = 0.0
    environment: str | None = None
    # The region the lease key is made in; any region the organization offers will do.
    region: str = "us-east-1"
    # The exact command that frees a lock from anywhere, for the messages: given the lock id.
    unlock_command: Callable[[str], str] = lambda lock_id: f"capella-deploy force-unlock {lock_id}"
    lease_seconds: float = LEASE_SECONDS
    # The first wait between looks at a held lock, and the longest (each wait is half again the last).
    poll_seconds: tuple[float, float] = (FIRST_POLL_SECONDS, MAX_POLL_SECONDS)


@dataclass(frozen=True)
class Lease:
    """One lease key as listed."""

    key_id: str
    created_at: datetime | None
    terms: LeaseTerms | None

    @property
    def lock_id(self) -> str:
        # A key whose description this version cannot read is a lock of its own, named by the key's id.
        return self.terms.lock_id if self.terms else self.key_id

    @property
    def since(self) -> datetime | None:
        """When its lock was asked for, in the server's time: the order in which locks are given."""
        if self.terms is not None and self.terms.since is not None:
            return self.terms.since
        return self.created_at

    def expires(self, lease_seconds: float) -> datetime | None:
        if self.terms is not None:
            if self.holder_died():
                return None
            return self.terms.expires
        # Unreadable: assume a lease of the usual length from the key's creation; undated, it binds no one.
        if self.created_at is None:
            return None
        return datetime.fromtimestamp(self.created_at.timestamp() + lease_seconds, tz=timezone.utc)

    def holder_died(self) -> bool:
        """Whether the holder was a process of this machine that no longer runs: then the lease binds no one."""
        terms = self.terms
        if terms is None or terms.pid is None or terms.node is None or terms.node != node_id():
            return False
        try:
            os.kill(terms.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # it exists, under another user
        return False

    def describe(self) -> str:
        if self.terms is None:
            return f"lock {self.lock_id} (a lease key whose description cannot be read), taken at {_show(self.since)}"
        terms = self.terms
        where = f" of environment {terms.environment}" if terms.environment else ""
        return (
            f"lock {self.lock_id} held by {terms.holder} for {terms.operation}{where} since {_show(self.since)}, "
            f"its lease running until {_show(terms.expires)} unless renewed"
        )


def parse_lease(raw: dict[str, Any]) -> Lease | None:
    key_id = raw.get("keyId", raw.get("id"))
    if not is_lease_key(raw) or not isinstance(key_id, str) or not key_id:
        return None
    audit = raw.get("audit")
    created = parse_time(audit.get("createdAt")) if isinstance(audit, dict) else None
    return Lease(key_id, created, parse_terms(raw.get("description")))


async def list_leases(client: CapellaClient, org_id: str) -> list[Lease]:
    leases = (parse_lease(raw) for raw in await client.list_api_keys(org_id))
    return [lease for lease in leases if lease is not None]


class OrgLock:
    """One run's hold on an organization: take it, keep it while the run works, give it back."""

    def __init__(
        self,
        client: CapellaClient,
        org_id: str,
        request: LockRequest,
        *,
        clock: Clock | None = None,
        notify: Callable[[str], None] = lambda text: None,
        warn: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.org_id = org_id
        self._client = client
        self._request = request
        self._clock: Clock = clock or SystemClock()
        self._notify = notify
        self._warn = warn
        self._terms = LeaseTerms(
            lock_id=self.id,
            expires=self._at(0.0),
            operation=request.operation,
            holder=holder_text(),
            environment=request.environment,
            pid=os.getpid(),
            node=node_id(),
        )
        # This lock's lease keys, oldest first; ``_unsure`` when a create's answer was lost and a key may exist
        # that only a listing can find.
        self._keys: list[str] = []
        self._unsure = False
        self._expires = 0.0
        self.lost: str | None = None
        self.waited = 0.0

    # -- taking ------------------------------------------------------------------------------------

    async def acquire(self) -> None:
        started = self._clock.now()
        deadline = started + self._request.timeout
        pause, longest = self._request.poll_seconds
        ties = 0
        told = False
        while True:
            blocking = self._unexpired(await list_leases(self._client, self.org_id), foreign=True)
            if not blocking:
                await self._add_lease()
                leases = await list_leases(self._client, self.org_id)
                ahead, tie = self._ahead_of_us(leases)
                if not ahead and not tie:
                    self._terms = replace(self._terms, since=self._first_time(leases))
                    self._note_expiry(leases)
                    await self._sweep(leases)
                    self.waited = self._clock.now() - started
                    return
                await self._drop_keys(leases)
                ties += tie
                blocking = ahead
            now = self._clock.now()
            if now >= deadline and not (not blocking and ties < _TIE_ATTEMPTS):
                raise LockHeld(self._held_message(blocking))
            if blocking and not told:  # before the deadline: past it, a blocked run was refused above
                told = True
                self._notify(
                    f"Organization {self.org_id} is locked: {blocking[0].describe()}. "
                    f"Waiting up to {_seconds(deadline - now)} for it."
                )
            wait = pause * random.uniform(0.5, 1.5)
            await self._clock.sleep(min(wait, max(0.0, deadline - now)) if blocking else wait)
            pause = min(pause * 1.5, longest)

    def _unexpired(self, leases: Sequence[Lease], *, foreign: bool) -> list[Lease]:
        now = self._clock.now()
        found = []
        for lease in leases:
            expires = lease.expires(self._request.lease_seconds)
            if (lease.lock_id != self.id) is foreign and expires is not None and expires.timestamp() > now:
                found.append(lease)
        return sorted(found, key=lambda lease: (lease.since is None, lease.since or _EPOCH))

    def _ahead_of_us(self, leases: Sequence[Lease]) -> tuple[list[Lease], bool]:
        """The other runs' leases that come first, and whether one came at the same instant as ours."""
        ours = self._first_time(leases)
        ahead: list[Lease] = []
        tie = False
        for lease in self._unexpired(leases, foreign=True):
            if lease.since is None or ours is None or lease.since < ours:
                ahead.append(lease)
            elif lease.since == ours:
                tie = True
        if ours is None and not ahead and not any(lease.lock_id == self.id for lease in leases):
            tie = True  # our lease is not listed yet: nothing is known, look again
        return ahead, tie

    def _first_time(self, leases: Sequence[Lease]) -> datetime | None:
        if self._terms.since is not None:
            return self._terms.since
        times = [lease.created_at for lease in leases if lease.lock_id == self.id and lease.created_at is not None]
        return min(times) if times else None

    async def _sweep(self, leases: Sequence[Lease]) -> None:
        """Delete the leases of runs that died holding (or waiting for) the lock: they bind no one any more."""
        live = {lease.key_id for lease in self._unexpired(leases, foreign=True)}
        for lease in leases:
            if lease.lock_id != self.id and lease.key_id not in live:
                with contextlib.suppress(CapellaError):
                    await self._client.delete_api_key(self.org_id, lease.key_id)

    # -- keeping -----------------------------------------------------------------------------------

    async def keep(self, holder: asyncio.Task[Any]) -> None:
        """Renew the lease until cancelled; if the lock is lost, say why and cancel ``holder``."""
        every = self._request.lease_seconds / 3
        wait = every
        while True:
            await self._clock.sleep(wait)
            wait = every
            try:
                await self._renew()
            except LockLost as exc:
                self.lost = str(exc)
            except CapellaError as exc:
                left = self._expires - self._clock.now()
                if left > 0:
                    self._warn(f"could not renew the lock's lease ({exc}); trying again, {_seconds(left)} left")
                    wait = min(every, max(1.0, left / 4))
                    continue
                self.lost = f"the lock's lease ran out: it could not be renewed ({exc})"
            if self.lost is not None:
                holder.cancel()
                return

    async def _renew(self) -> None:
        if self._clock.now() >= self._expires:
            raise LockLost("the lock's lease ran out before it could be renewed; another run may have taken it")
        before = len(self._keys)
        earlier = set(self._keys)
        await self._add_lease()
        renewal = self._keys[before:]
        leases = await list_leases(self._client, self.org_id)
        # A key made before this renewal must still be listed. The renewal's own key proves nothing, and when its
        # answer was lost its id is unknown: it is told apart by the later end of lease it states.
        if not any(
            lease.lock_id == self.id
            and (lease.key_id in earlier or (lease.terms is not None and lease.terms.expires < self._terms.expires))
            for lease in leases
        ):
            await self._drop_keys(leases)
            raise LockLost("the lock was removed while this run held it (force-unlock?)")
        ahead, _ = self._ahead_of_us(leases)
        if ahead:
            await self._drop_keys(leases)
            raise LockLost(f"another run holds the organization now: {ahead[0].describe()}")
        self._note_expiry(leases)
        if renewal:
            for key_id in self._keys[:before]:
                await self._client.delete_api_key(self.org_id, key_id)
            self._keys = renewal

    def _note_expiry(self, leases: Sequence[Lease]) -> None:
        """Remember when the lease ends: the latest end among this lock's listed keys."""
        ends = [lease.terms.expires.timestamp() for lease in leases if lease.lock_id == self.id and lease.terms]
        self._expires = max([self._expires, *ends])

    # -- giving back -------------------------------------------------------------------------------

    async def release(self) -> None:
        """Delete every key of this lock, also after a failed or interrupted ``acquire``."""
        try:
            leases = await list_leases(self._client, self.org_id) if self._unsure else []
            await self._drop_keys(leases)
        except CapellaError as exc:
            self._warn(
                f"could not release the lock on organization {self.org_id} ({exc}); it frees itself at "
                f"{_show(self._terms.expires)}, or now with: {self._request.unlock_command(self.id)}"
            )

    # -- lease keys --------------------------------------------------------------------------------

    async def _add_lease(self) -> None:
        self._terms = replace(self._terms, expires=self._at(self._request.lease_seconds))
        body = {
            "name": NAME_PREFIX + secrets.token_hex(4),
            "description": self._terms.description(),
            "expiry": KEY_EXPIRY_DAYS,
            "allowedCIDRs": [UNREACHABLE_CIDR],
            "region": self._request.region,
        }
        # Until the answer is in, the key may exist unseen (an interrupt, a lost answer): a listing finds it by the
        # lock id in its description.
        unsure, self._unsure = self._unsure, True
        try:
            created = await self._client.create_api_key(self.org_id, body)
        except AmbiguousCreate:
            return
        self._unsure = unsure
        # The token admits no one (see lease.py) and is not kept: only the key's id is.
        self._keys.append(created.id)

    async def _drop_keys(self, leases: Sequence[Lease]) -> None:
        """Delete every key of this lock: the ones created, and any a lost answer left for a listing to find."""
        found = [lease.key_id for lease in leases if lease.lock_id == self.id]
        for key_id in dict.fromkeys([*self._keys, *found]):
            await self._client.delete_api_key(self.org_id, key_id)
        self._keys = []

    def _at(self, seconds_from_now: float) -> datetime:
        return datetime.fromtimestamp(round(self._clock.now() + seconds_from_now), tz=timezone.utc)

    def _held_message(self, blocking: Sequence[Lease]) -> str:
        if not blocking:
            return (
                f"could not take the lock on organization {self.org_id}: other runs kept asking for it at the same "
                "moment; try again"
            )
        holder = blocking[0]
        return (
            f"organization {self.org_id} is locked: {holder.describe()}. Wait for that run to finish, or pass "
            f"--lock-timeout (e.g. --lock-timeout 30m) to wait for it; if that run is dead, its lock frees itself "
            f"when the lease runs out, or free it now with: {self._request.unlock_command(holder.lock_id)}"
        )


@contextlib.asynccontextmanager
async def org_lock(
    client: CapellaClient,
    org_id: str,
    request: LockRequest,
    *,
    clock: Clock | None = None,
    notify: Callable[[str], None] = lambda text: None,
    warn: Callable[[str], None] = lambda text: None,
) -> AsyncIterator[OrgLock]:
    """Hold the organization's lock for the block; a lock lost on the way stops the block with ``LockLost``."""
    lock = OrgLock(client, org_id, request, clock=clock, notify=notify, warn=warn)
    try:
        await lock.acquire()
    except BaseException:
        # A failure or an interrupt while queueing must not leave a lease behind to block the others.
        await lock.release()
        raise
    holder = asyncio.current_task()
    assert holder is not None
    keeper = asyncio.ensure_future(lock.keep(holder))
    try:
        yield lock
    except asyncio.CancelledError:
        if lock.lost is None:
            raise
        uncancel = getattr(holder, "uncancel", None)  # Python 3.11+: the cancel was ours, not the caller's
        if uncancel is not None:
            uncancel()
        raise LockLost(f"stopped: {lock.lost}. Run plan to see where the organization stands.") from None
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        await lock.release()


async def force_unlock(client: CapellaClient, org_id: str, lock_id: str) -> list[Lease]:
    """Delete every lease key of the lock ``lock_id`` (or the lease key of that id); return what was removed."""
    leases = await list_leases(client, org_id)
    targets = [lease for lease in leases if lock_id in (lease.lock_id, lease.key_id)]
    if not targets:
        held = sorted({lease.lock_id for lease in leases})
        now = f"its lock ids now: {', '.join(held)}" if held else "it is not locked"
        raise LockError(f"organization {org_id} has no lock {lock_id}; {now}")
    for lease in targets:
        await client.delete_api_key(org_id, lease.key_id)
    return targets


def holder_text() -> str:
    """Who takes the lock, as people will read it: user, host and process, and the CI run when there is one."""
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER") or os.environ.get("GITHUB_ACTOR") or "unknown"
    text = f"{user}@{socket.gethostname()} pid {os.getpid()}"
    run_id = os.environ.get("GITHUB_RUN_ID")
    if run_id:
        text += f", GitHub run {run_id} of {os.environ.get('GITHUB_REPOSITORY', '?')}"
    return text


@functools.lru_cache(maxsize=1)
def node_id() -> str | None:
    """This process's machine and process namespace, as a digest; None where it cannot be told.

    Two containers may share a host name yet not their processes: only a process that shares the boot (Linux's
    boot id) and the process-id namespace can tell from a pid whether a holder is alive.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except (OSError, UnicodeDecodeError):
        return None
    return hashlib.sha256(f"{socket.gethostname()}|{boot}|{namespace}".encode()).hexdigest()[:16]


def unlock_command(
    org_id: str, *, sandbox_state: str | None = None, token_file: str | None = None
) -> Callable[[str], str]:
    """The force-unlock command line for this organization and target, for a given lock id."""
    flags = [f"--org {shlex.quote(org_id)}"]
    if sandbox_state is not None:
        flags.append(f"--sandbox={shlex.quote(sandbox_state)}")
    if token_file is not None:
        flags.append(f"--token-file {shlex.quote(token_file)}")
    return lambda lock_id: f"capella-deploy force-unlock {shlex.quote(lock_id)} {' '.join(flags)}"


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _show(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z") if value else "?"


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min"
