"""The one rule for where a credential may travel: https, or plain http to this machine only."""

from __future__ import annotations

import ipaddress

import httpx


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine, where plain http cannot be overheard."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_problem(url: httpx.URL, what: str) -> str | None:
    """Why ``what`` (e.g. "the API token") must not be sent to ``url``, or None when it may be."""
    if url.scheme == "http" and not is_loopback(url.host):
        return (
            f"{url.scheme}://{url.host} is plain http: {what} would cross the network unencrypted; "
            "use https (plain http is allowed only for localhost)"
        )
    return None
