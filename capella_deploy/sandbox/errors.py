"""The two error dialects the sandbox speaks.

The Management API answers every failure with ``{"code", "hint", "httpStatusCode", "message"}`` (all four
always present, codes as the Management API reference lists them). The Model Service API and the gateway are
OpenAI-compatible, so they answer ``{"error": {"message", "type", "param", "code"}}``: that is the body the
``openai`` SDK reads to raise its usual exceptions.
"""

from __future__ import annotations

from typing import Any, Literal

MANAGEMENT_CODES = {
    400: 1000,
    401: 1001,
    403: 1002,
    404: 3000,
    409: 1010,
    412: 1012,
    422: 1005,
    429: 1004,
    500: 10000,
    503: 1007,
}

_MANAGEMENT_MESSAGES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Access Denied",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    412: "Precondition Failed",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def management_code(status: int) -> int:
    # Undocumented statuses (405, 502, 504) reuse their class's code so the body never carries code 0,
    # which a client treats as an "unexpected" (non-Capella) error.
    return MANAGEMENT_CODES.get(status) or MANAGEMENT_CODES[500 if status >= 500 else 400]


def management_body(status: int, message: str, hint: str) -> dict[str, Any]:
    return {"code": management_code(status), "hint": hint, "httpStatusCode": status, "message": message}


def default_message(status: int) -> str:
    return _MANAGEMENT_MESSAGES.get(status, "Error")


def openai_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    error_type = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class ManagementError(Exception):
    """A Management API failure; the app renders it as the Capella error body."""

    def __init__(self, status: int, message: str, hint: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint or message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return management_body(self.status, self.message, self.hint)


# Why the Management API refuses a request; the operation's listed statuses and the world's rules turn it into
# a status (see ``operations.Operation.status_for``).
RefusalKind = Literal["invalid", "undecodable", "state", "duplicate"]
INVALID: RefusalKind = "invalid"  # the request asks for something the operation does not accept (validation)
UNDECODABLE: RefusalKind = "undecodable"  # the body cannot be read as the operation's JSON at all
STATE: RefusalKind = "state"  # the resource's status does not allow the operation now
DUPLICATE: RefusalKind = "duplicate"  # the name is taken (refused only in the conflicts world)


class Refusal(Exception):
    """A Management API refusal whose status the operation decides."""

    def __init__(self, kind: RefusalKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def invalid(message: str) -> Refusal:
    return Refusal(INVALID, message)


def undecodable(message: str) -> Refusal:
    return Refusal(UNDECODABLE, message)


class ServiceError(Exception):
    """A Model Service API or gateway failure; the app renders it as an OpenAI-style error body."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return openai_body(self.status, self.message, self.code, self.param)
