"""Secrets: a string that refuses to show itself, and the values this process masks wherever it writes text.

API tokens and Model API key tokens travel through the tool wrapped in ``Secret`` so that an
accidental ``print``, f-string, log call, repr or exception message shows a mask, never the value.
Only code that must send or store the value calls ``reveal()``.

A value can still reach text by another road: a manifest variable that holds the same value, a server
that echoes it in a header, a description someone set to it. So every secret value the process comes to
know (each ``Secret`` made, and the token in the environment) is remembered here, and every place text
leaves the process masks them: log records (from any logger, as they are made), the CLI's stdout and
stderr (``masked_output``), and the files and reports the tool saves (``redact``). Only the commands that
exist to show a key token (``--show-secrets``, GitHub's ``::add-mask::``) print inside ``revealed()``.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

MASK = "********"
# The environment variable that holds the Management API token; a manifest may never interpolate it.
API_TOKEN_VARIABLE = "CAPELLA_API_TOKEN"
# Masking a shorter value would blank out ordinary words; real tokens are far longer.
MIN_MASKED_LENGTH = 8


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a secret is a string")
        self._value = value
        remember(value)

    def reveal(self) -> str:
        return self._value

    def fingerprint(self) -> str:
        """A short, non-reversible tag to tell two secrets apart in output."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("secrets are not pickled")


# -- the values to mask ----------------------------------------------------------------------------------

_lock = threading.Lock()
_known: set[str] = set()
# Every spelling of every known value, longest first, so a value inside another is masked whole.
_spellings: tuple[str, ...] = ()
_revealing: contextvars.ContextVar[bool] = contextvars.ContextVar("revealing", default=False)


def remember(value: object) -> None:
    """Mask ``value`` (a string) from now on wherever this process writes text."""
    global _spellings
    if not isinstance(value, str) or len(value) < MIN_MASKED_LENGTH or value in _known:
        return
    with _lock:
        _known.add(value)
        spellings = set(_spellings)
        # As written, inside a JSON string, and inside a URL (a redirect Location, a query).
        spellings.update({value, json.dumps(value)[1:-1]})
        spellings.update(encode(value, safe=safe) for encode in (quote, quote_plus) for safe in ("", "/"))
        _spellings = tuple(sorted(spellings, key=len, reverse=True))
    _mask_log_records()


def redact(text: str) -> str:
    """``text`` with every known secret value masked."""
    for spelling in _spellings:
        if spelling in text:
            text = text.replace(spelling, MASK)
    return text


@contextlib.contextmanager
def revealed() -> Iterator[None]:
    """Let what is printed inside pass unmasked: only for output whose purpose is to show a key token."""
    reset = _revealing.set(True)
    try:
        yield
    finally:
        _revealing.reset(reset)


# -- where text leaves the process -------------------------------------------------------------------------

_log_factory_installed = False


def _mask_log_records() -> None:
    """Mask secrets in every log record as it is made, whichever library logs it and whoever handles it.

    A record factory rather than a handler filter: the HTTP libraries log response headers at debug level,
    and a filter on our own handler would miss the handlers of whoever embeds or tests the tool.
    """
    global _log_factory_installed
    with _lock:
        if _log_factory_installed:
            return
        _log_factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _spellings:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: logging reports it itself when the record is emitted
                return record
            masked = redact(message)
            if masked != message:
                record.msg, record.args = masked, ()
        return record

    logging.setLogRecordFactory(factory)


class _MaskedStream(io.TextIOBase):
    """A text stream that masks known secrets in what is written to it, outside ``revealed()``."""

    def __init__(self, inner: TextIO) -> None:
        super().__init__()
        self._inner = inner

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._inner.write(text if _revealing.get() else redact(text))
        return len(text)

    def flush(self) -> None:
        self._inner.flush()

    def isatty(self) -> bool:
        return self._inner.isatty()

    def fileno(self) -> int:
        return self._inner.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._inner.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self._inner.errors


@contextlib.contextmanager
def masked_output() -> Iterator[None]:
    """Mask known secrets in everything written to stdout and stderr inside, however it is written."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _MaskedStream(saved[0]), _MaskedStream(saved[1])
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
