"""Name patterns (fnmatch, case-sensitive) over the names a manifest can declare, and whether one pattern stays
inside others.

A manifest's ``scope`` is a set of patterns; its ``prune.match`` must stay inside them, or the manifest would
believe it prunes names it cannot see. Whether every name one glob matches is matched by another is a question
about two small automata: both are run side by side over the characters a name may hold, breadth first, so the
answer comes with the shortest name that proves it wrong.
"""

from __future__ import annotations

import fnmatch
import string
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

# A manifest name: a letter or digit, then letters, digits, '.', '_' and '-' (manifest NAME_PATTERN).
_FIRST = string.ascii_letters + string.digits
_REST = _FIRST + "._-"
_LONGEST = 128


@dataclass(frozen=True)
class _Token:
    """One step of a glob: ``*`` (any run of characters), or one character that ``text`` matches."""

    text: str
    star: bool = False

    def takes(self, char: str) -> bool:
        # Each one-character token is matched by fnmatch itself, so classes ([a-c], [!x]) mean what fnmatch says.
        return fnmatch.fnmatchcase(char, self.text)


def _tokens(pattern: str) -> tuple[_Token, ...]:
    """The glob's steps, split where fnmatch splits them (an unclosed ``[`` is a literal character)."""
    tokens: list[_Token] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            if not tokens or not tokens[-1].star:
                tokens.append(_Token("*", star=True))
        elif char == "?":
            tokens.append(_Token("?"))
        elif char == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                tokens.append(_Token("[[]"))
            else:
                tokens.append(_Token(pattern[i - 1 : j + 1]))
                i = j + 1
        else:
            tokens.append(_Token(_literal(char)))
    return tuple(tokens)


def _literal(char: str) -> str:
    return f"[{char}]" if char in "*?[" else char


_State = frozenset[int]


def _closure(tokens: tuple[_Token, ...], positions: set[int]) -> _State:
    """The positions reachable without reading a character: past any ``*``, which may match nothing."""
    found = set(positions)
    for position in sorted(positions):
        while position < len(tokens) and tokens[position].star:
            position += 1
            found.add(position)
    return frozenset(found)


def _step(tokens: tuple[_Token, ...], state: _State, char: str) -> _State:
    after: set[int] = set()
    for position in state:
        if position < len(tokens):
            token = tokens[position]
            if token.star:
                after.add(position)
            elif token.takes(char):
                after.add(position + 1)
    return _closure(tokens, after)


def example_outside(pattern: str, within: Sequence[str]) -> str | None:
    """The shortest name ``pattern`` matches that no pattern of ``within`` matches; None when there is none.

    Only names a manifest can declare count: a pattern is not faulted for names no resource of it can have.
    """
    mine = _tokens(pattern)
    theirs = [_tokens(p) for p in within]
    # The states, with whether a character was read yet: the first of a name is drawn from fewer characters.
    start = (_closure(mine, {0}), tuple(_closure(t, {0}) for t in theirs), False)
    seen = {start}
    queue: deque[tuple[tuple[_State, tuple[_State, ...], bool], str]] = deque([(start, "")])
    while queue:
        (state, others, _), name = queue.popleft()
        if name and len(mine) in state and not any(len(t) in o for t, o in zip(theirs, others, strict=True)):
            return name
        if len(name) >= _LONGEST:
            continue
        for char in _FIRST if not name else _REST:
            after = _step(mine, state, char)
            if not after:
                continue
            following = (after, tuple(_step(t, o, char) for t, o in zip(theirs, others, strict=True)), True)
            if following not in seen:
                seen.add(following)
                queue.append((following, name + char))
    return None


def matches_some_name(pattern: str) -> bool:
    """Whether any name a manifest can declare matches ``pattern``."""
    return example_outside(pattern, ()) is not None
