"""What runs that share an organization without a lock use to agree: one shared look, one rule of who keeps what.

An API that accepts several models or keys of one name leaves it to the runs that made them to settle which one
stays. Each run looks at what exists (several callers of one run sharing one call) and keeps the oldest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import asyncio

    from capella_deploy.clock import Clock

T = TypeVar("T")


class SharedCall(Generic[T]):
    """One call serving every caller that asks within ``gather`` seconds of the first (or in the same moment); it
    is made after the last of them asked, so each gets an answer at least as fresh as its question."""

    def __init__(self, call: Callable[[], Awaitable[T]], clock: Clock, gather: float) -> None:
        self._call = call
        self._clock = clock
        self._gather = gather
        self._pending: asyncio.Future[T] | None = None

    async def get(self) -> T:
        import asyncio  # here, not at the top: validate loads the kinds and has no loop to run

        if self._pending is None:
            self._pending = asyncio.ensure_future(self._gathered())
        return await asyncio.shield(self._pending)

    async def _gathered(self) -> T:
        await self._clock.sleep(self._gather)
        self._pending = None  # who asks from now on waits for the next call
        return await self._call()


def oldest(created: Iterable[datetime | None]) -> int:
    """The position of the earliest creation time; the first listed among equals (or when none is known)."""
    times = [t.timestamp() if t is not None else float("inf") for t in created]
    return times.index(min(times))
