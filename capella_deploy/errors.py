"""The errors this tool raises on purpose.

Every one of them is safe to print: the client builds them from text it has already scrubbed of the
API token, and none keeps a reference to the HTTP request (whose headers carry the token).
"""

from __future__ import annotations


class CapellaError(Exception):
    """Base of every error raised on purpose; the CLI prints these without a traceback."""


class ConfigError(CapellaError):
    """The tool is not set up to run: missing token, bad URL… The message says what to set."""


class APIError(CapellaError):
    """An error answer of the Management API, with the API's own message and hint."""

    def __init__(
        self,
        *,
        status: int,
        code: int,
        message: str,
        hint: str,
        method: str,
        path: str,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.hint = hint
        self.method = method
        self.path = path
        # The server's Retry-After, in seconds, when it sent one (429 and 503 do).
        self.retry_after = retry_after
        super().__init__(f"{method} {path}: {status} {message} (hint: {hint})")


class BadRequest(APIError):
    """400"""


class Unauthorized(APIError):
    """401"""


class Forbidden(APIError):
    """403"""


class NotFound(APIError):
    """404"""


class Conflict(APIError):
    """409: the resource is in a state that does not allow the call, or the name is taken."""


class PreconditionFailed(APIError):
    """412: the If-Match version no longer matches."""


class Unprocessable(APIError):
    """422"""


class RateLimited(APIError):
    """429: too many requests; ``retry_after`` says how long the server asked to wait."""


class ServerError(APIError):
    """5xx with the API's error body."""


class UnexpectedResponse(APIError):
    """An answer that is not the API's: not JSON, not the error shape, code 0, a proxy's HTML page…"""


class TransportError(CapellaError):
    """No answer at all: connection refused or dropped, or a timeout, after the retries allowed."""

    def __init__(
        self, *, method: str, path: str, detail: str, sent: bool, transient: bool = True, attempts: int = 1
    ) -> None:
        self.method = method
        self.path = path
        self.detail = detail
        # Whether the request may have reached the server; False only when the connection never opened.
        self.sent = sent
        # Whether another attempt might succeed (a timeout might; a malformed URL never will).
        self.transient = transient
        self.attempts = attempts
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{method} {path}: no answer from the API{tries}: {detail}")


class AmbiguousCreate(CapellaError):
    """A create whose outcome is unknown: the resource may or may not exist.

    Raised instead of retrying, because a second POST could make a duplicate. Callers re-read the
    organization by ``name`` before deciding to create again.
    """

    def __init__(self, *, kind: str, name: str, reason: str) -> None:
        self.kind = kind
        self.name = name
        self.reason = reason
        super().__init__(
            f"creating {kind} {name!r}: outcome unknown ({reason}); it may or may not exist, "
            "look it up by name before creating it again"
        )


class WaitFailed(CapellaError):
    """A resource waited for reached a failed status, disappeared, or could not be watched."""

    def __init__(self, message: str, resource: object | None = None) -> None:
        super().__init__(message)
        self.resource = resource


class WaitTimedOut(WaitFailed):
    """A resource waited for was not where it should be when the wait's time ran out."""
