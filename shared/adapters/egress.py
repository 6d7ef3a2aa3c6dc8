"""The one egress policy for every outbound call made on a tenant's behalf (webhooks, handshakes, remote models)."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.domain.errors import InvalidInput

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# A resolver answers every address of (host, port), as socket.getaddrinfo does; tests inject their own.
Resolver = Callable[[str, int], Sequence[str]]

# One message for every refusal, whatever the reason: a tenant learns nothing about the platform's network from it.
REFUSED_MESSAGE = "the endpoint URL is not allowed: it must be an https URL of a host on the public internet"
REFUSED_CODE = "InvalidEndpoint"


class EndpointRefused(InvalidInput):
    """The policy refuses the URL; the reason is logged server-side only, never in the message."""

    code = REFUSED_CODE

    def __init__(self, reason: str) -> None:
        super().__init__(REFUSED_MESSAGE, code=REFUSED_CODE)
        self.reason = reason


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the policy, with the addresses it was checked against (connect to these only)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address getaddrinfo answers for (host, port)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class EgressPolicy:
    """Which URLs the platform may call for a tenant: https to global unicast addresses (loopback only if allowed)."""

    def __init__(self, allow_loopback: bool = False, *, resolver: Resolver | None = None) -> None:
        self.allow_loopback = allow_loopback
        self._resolve = resolver or system_resolver

    def check_url(self, url: str) -> CheckedUrl:
        """The URL with its checked addresses, or EndpointRefused (one generic message; the reason logged)."""
        parts = urlsplit(url or "")
        host = parts.hostname
        if not host or parts.scheme not in {"https", "http"}:
            raise _refuse(url, "not an absolute http(s) URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = tuple(ipaddress.ip_address(a.split("%", 1)[0]) for a in self._resolve(host, port))
        except (OSError, ValueError) as err:
            raise _refuse(url, f"does not resolve: {err}") from err
        if not addresses:
            raise _refuse(url, "resolves to no address")
        return CheckedUrl(url=url, scheme=parts.scheme, host=host, port=port, addresses=addresses)


def _refuse(url: str, reason: str) -> EndpointRefused:
    logger.info("egress refused for %s: %s", url, reason)
    return EndpointRefused(reason)
