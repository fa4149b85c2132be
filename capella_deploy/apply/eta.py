"""How long model transitions take, and how long the rest of an apply should take: pure arithmetic, no I/O.

Capella documents no durations for deploying, pausing, resuming or destroying a model. A run starts from
assumed durations and replaces them with what it sees: every status poll tells, for each model it waits for,
either "still under way after x seconds" (the transition takes longer than x) or "done by y seconds" (it
takes at most y). Models of one kind take about as long as each other, so those bounds, gathered over all
the models of a run, close in on the duration within a few polls of the first completion.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# Guesses of the right order: the API documents no durations, and the official Terraform provider's waits speak of
# minutes. A run's own observations replace them as soon as it has any.
ASSUMED_SECONDS: Mapping[str, float] = {
    "deploying": 300.0,
    "pausing": 60.0,
    "resuming": 120.0,
    "destroying": 60.0,
}
# A transition that Capella does not name (an unknown status): as long as a deployment.
_FALLBACK = "deploying"


@dataclass
class _Bounds:
    longer_than: float = 0.0  # some transition of this kind was still under way after this many seconds
    done_within: list[tuple[float, float]] = field(default_factory=list)  # (still under way after, done by)


class Durations:
    """Learned durations of model transitions, by the status a model shows while in them."""

    def __init__(self, assumed: Mapping[str, float] = ASSUMED_SECONDS) -> None:
        self._assumed = dict(assumed)
        self._bounds: dict[str, _Bounds] = {}

    def still(self, kind: str, elapsed: float) -> None:
        """A transition of ``kind`` was still under way ``elapsed`` seconds after it began."""
        bounds = self._bounds.setdefault(kind, _Bounds())
        bounds.longer_than = max(bounds.longer_than, elapsed)

    def done(self, kind: str, still_after: float, done_by: float) -> None:
        """A transition of ``kind`` was last seen under way after ``still_after`` s and seen done by ``done_by`` s."""
        bounds = self._bounds.setdefault(kind, _Bounds())
        bounds.done_within.append((min(still_after, done_by), done_by))
        bounds.longer_than = max(bounds.longer_than, still_after)

    def learned(self, kind: str) -> bool:
        bounds = self._bounds.get(kind)
        return bounds is not None and bool(bounds.done_within)

    def expected(self, kind: str) -> float:
        """The expected duration of a transition of ``kind``, in seconds."""
        assumed = self._assumed.get(kind, self._assumed.get(_FALLBACK, 0.0))
        bounds = self._bounds.get(kind)
        if bounds is None:
            return assumed
        if not bounds.done_within:
            # Nothing finished yet: the assumption, unless something has already outlasted it.
            return max(assumed, bounds.longer_than)
        shortest_done = min(done_by for _, done_by in bounds.done_within)
        if bounds.longer_than <= shortest_done:
            # One duration fits every observation: it lies between these two.
            return (bounds.longer_than + shortest_done) / 2
        # Durations differ from model to model: the typical one.
        return statistics.median((low + high) / 2 for low, high in bounds.done_within)


def remaining_seconds(
    now: float,
    *,
    completions: Iterable[float],
    writes_left: int,
    deploys_left: int,
    writes_per_second: float,
    deploy_seconds: float,
    notice_seconds: float,
) -> float:
    """Seconds until an apply is expected to be done.

    ``completions``: when each transition being waited for is expected to end (clock times).
    ``writes_left``: creates, updates and deletes not yet sent, of which ``deploys_left`` create a model that must
    then deploy; they go out at ``writes_per_second``, model creates first (the plan lists models first).
    ``notice_seconds``: how long after a transition ends the apply sees it (about one status poll).
    """
    rate = max(writes_per_second, 1e-9)
    end = now + writes_left / rate
    if deploys_left:
        end = max(end, now + deploys_left / rate + deploy_seconds + notice_seconds)
    for completion in completions:
        end = max(end, max(completion, now) + notice_seconds)
    return end - now
