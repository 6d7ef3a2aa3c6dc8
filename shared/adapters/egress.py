"""The one egress policy for every outbound call made on a tenant's behalf (webhooks, handshakes, remote models).

`EgressPolicy.check_url` resolves a URL's host and refuses it unless every address is global unicast (loopback
too, only with `allow_loopback`, set by AIAAS_ALLOW_LOOPBACK_ENDPOINTS in development). `EgressPolicy.client()`
is an httpx client that checks every request that way and then connects to exactly the addresses it checked (a
network backend that never resolves again, so DNS rebinding between check and connect is impossible), with the
Host header, TLS SNI and certificate verification still on the URL's name, no redirects, no proxies from the
environment and bounded timeouts. `read_bounded` reads an answer with a size cap and an overall deadline.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from shared.domain.egress import IPAddress, is_loopback_name, parse_host_literal, redact_url, refusal_reason
from shared.domain.errors import InvalidInput

logger = logging.getLogger(__name__)

# A resolver answers every address of (host, port), as socket.getaddrinfo does; tests inject their own.
Resolver = Callable[[str, int], Sequence[str]]

# One message for every refusal, whatever the reason: a tenant learns nothing about the platform's network from it.
REFUSED_MESSAGE = "the endpoint URL is not allowed: it must be an https URL of a host on the public internet"
REFUSED_CODE = "InvalidEndpoint"
# Event Grid gives a webhook 30 s to answer a delivery: the ceiling of every outbound call here.
MAX_TOTAL_SECONDS = 30.0
MAX_CONNECT_SECONDS = 10.0
# At most this many of a name's addresses are tried, so that a name with many cannot multiply the connect timeout.
MAX_ADDRESSES_TRIED = 2


class EndpointRefused(InvalidInput):
    """The policy refuses the URL; the reason is logged server-side only, never in the message."""

    code = REFUSED_CODE

    def __init__(self, reason: str) -> None:
        super().__init__(REFUSED_MESSAGE, code=REFUSED_CODE)
        self.reason = reason


class EgressRefusedError(httpx.ConnectError):
    """Raised by the policy's client for a refused request: to its callers, an endpoint that cannot be reached."""


class ResponseTooLarge(httpx.HTTPError):
    """The answer exceeded the size the caller allows."""


class DeadlineExceeded(httpx.TimeoutException):
    """The whole call (connect, send, read) took longer than its overall deadline."""


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the policy, with the addresses it was checked against (connect to these only)."""

    url: str
    scheme: str
    host: str  # as the connection pool names it: IDNA-encoded, lower case, IPv6 without brackets
    port: int
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class Timeouts:
    """Connect, per-read and overall limits of one call, each clamped to the platform's ceilings."""

    connect: float = 5.0
    read: float = 10.0
    total: float = MAX_TOTAL_SECONDS

    def clamped(self) -> Timeouts:
        total = min(max(self.total, 0.1), MAX_TOTAL_SECONDS)
        return Timeouts(
            connect=min(max(self.connect, 0.1), MAX_CONNECT_SECONDS, total),
            read=min(max(self.read, 0.1), total),
            total=total,
        )

    def httpx(self) -> httpx.Timeout:
        limits = self.clamped()
        return httpx.Timeout(limits.read, connect=limits.connect, pool=limits.connect)


# getaddrinfo has no timeout of its own (the system resolver's retries can take tens of seconds): lookups run on a
# few threads and the caller waits at most RESOLVE_SECONDS; a lookup still running then is abandoned, not awaited.
RESOLVE_SECONDS = 5.0
_RESOLVERS = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="egress-resolve")


def system_resolver(host: str, port: int) -> list[str]:
    """Every address getaddrinfo answers for (host, port), within RESOLVE_SECONDS."""
    lookup = _RESOLVERS.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=RESOLVE_SECONDS)
    except concurrent.futures.TimeoutError as err:
        lookup.cancel()
        raise OSError(f"no answer from the resolver within {RESOLVE_SECONDS:.0f}s") from err
    return [str(info[4][0]) for info in infos]


class EgressPolicy:
    """Which URLs the platform may call for a tenant: https to global unicast addresses; loopback (http or https)
    only with `allow_loopback`. Private addresses stay refused whatever the flag."""

    def __init__(self, allow_loopback: bool = False, *, resolver: Resolver | None = None) -> None:
        self.allow_loopback = allow_loopback
        self._resolve = resolver or system_resolver

    def check_url(self, url: str | httpx.URL, *, resolve: bool = True) -> CheckedUrl:
        """The URL with its checked addresses, or EndpointRefused (one generic message; the reason logged at INFO).

        With `resolve=False` only what the URL itself says is checked (scheme, credentials, a literal address,
        a localhost name): for registering an endpoint whose name is resolved again at every call anyway.
        """
        try:
            parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
            port = parsed.port
        except (httpx.InvalidURL, TypeError, ValueError) as err:
            raise _refuse(url, f"not a URL: {err}") from err
        host = parsed.raw_host.decode("ascii").lower()
        if parsed.scheme not in {"https", "http"} or not host:
            raise _refuse(url, "not an absolute http(s) URL")
        if parsed.userinfo:
            raise _refuse(url, "credentials in the URL's authority")
        if port is not None and not 0 < port < 65536:
            raise _refuse(url, f"port {port} out of range")
        port = port or (443 if parsed.scheme == "https" else 80)
        addresses = self._addresses(url, host, port, resolve=resolve)
        if parsed.scheme == "http":
            loopback = all(_is_loopback(a) for a in addresses) if addresses else is_loopback_name(host)
            if not (self.allow_loopback and loopback):
                raise _refuse(url, "plain http to a host that is not loopback")
        return CheckedUrl(url=str(parsed), scheme=parsed.scheme, host=host, port=port, addresses=tuple(addresses))

    def _addresses(self, url: object, host: str, port: int, *, resolve: bool) -> list[IPAddress]:
        try:
            literal = parse_host_literal(host)
        except ValueError as err:
            raise _refuse(url, str(err)) from err
        if literal is not None:
            candidates = [literal]
        elif is_loopback_name(host):
            if not self.allow_loopback:
                raise _refuse(url, "a localhost name")
            if not resolve:
                return []
            candidates = self._resolved(url, host, port)
        elif not resolve:
            return []
        else:
            candidates = self._resolved(url, host, port)
        for address in candidates:
            reason = refusal_reason(address, allow_loopback=self.allow_loopback)
            if reason is not None:
                raise _refuse(url, reason)
        return candidates

    def _resolved(self, url: object, host: str, port: int) -> list[IPAddress]:
        try:
            answers = self._resolve(host, port)
            addresses = [ipaddress.ip_address(answer.split("%", 1)[0]) for answer in answers]
        except (OSError, UnicodeError, ValueError) as err:
            raise _refuse(url, f"does not resolve: {err}") from err
        if not addresses:
            raise _refuse(url, "resolves to no address")
        return list(dict.fromkeys(addresses))

    def client(
        self,
        timeouts: Timeouts | None = None,
        *,
        connector: httpcore.NetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> httpx.Client:
        """An httpx client under this policy: no redirects, no environment proxies, pinned connections.

        `connector` replaces the socket layer (tests: a stub that records where it was asked to connect);
        `ssl_context` the trust store (tests: a throwaway CA; it must verify, see PinnedTransport).
        """
        return httpx.Client(
            transport=PinnedTransport(self, connector=connector, ssl_context=ssl_context),
            timeout=(timeouts or Timeouts()).httpx(),
            follow_redirects=False,
            trust_env=False,
        )


def default_policy() -> EgressPolicy:
    """The process's policy: loopback allowed only when the settings say so (AIAAS_ALLOW_LOOPBACK_ENDPOINTS, which
    the settings refuse outside development); strict when there are no valid settings."""
    from shared.config import get_settings

    try:
        allow = get_settings().allow_loopback_endpoints
    except ValueError:  # pydantic's ValidationError: no usable settings here, so nothing but public addresses
        allow = False
    return EgressPolicy(allow)


def _is_loopback(address: IPAddress) -> bool:
    return address.is_loopback and not (isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped)


def _refuse(url: object, reason: str) -> EndpointRefused:
    logger.info("egress refused for %s: %s", redact_url(url), reason)
    return EndpointRefused(reason)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects (host, port) only to the addresses the transport checked for it in this thread; never resolves."""

    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.SyncBackend()
        self._local = threading.local()

    @contextlib.contextmanager
    def pinned(self, checked: CheckedUrl) -> Iterator[None]:
        previous = getattr(self._local, "pin", None)
        self._local.pin = checked
        try:
            yield
        finally:
            self._local.pin = previous

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        checked: CheckedUrl | None = getattr(self._local, "pin", None)
        if checked is None or (checked.host, checked.port) != (host.lower(), port):
            # The pool would connect somewhere this request was not checked for: refuse rather than resolve.
            raise httpcore.ConnectError("egress: no checked address for this connection")
        error: Exception | None = None
        for address in checked.addresses[:MAX_ADDRESSES_TRIED]:
            try:
                return self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                error = err
        assert error is not None
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("egress: no unix sockets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's own transport over a connection pool whose sockets go only to the checked addresses."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        connector: httpcore.NetworkBackend | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(trust_env=False, retries=0)
        self._policy = policy
        self._backend = _PinnedBackend(connector)
        # The URL keeps its name, so TLS sends it as SNI and checks the certificate against it (check_hostname).
        context = ssl_context or httpx.create_ssl_context(trust_env=False)
        if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
            raise ValueError("the egress client always verifies certificates against the URL's name")
        default_pool = self._pool
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=20,
            max_keepalive_connections=10,
            keepalive_expiry=5.0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=self._backend,
        )
        default_pool.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            checked = self._policy.check_url(request.url)
        except EndpointRefused as err:
            raise EgressRefusedError(f"egress refused: {err.reason}", request=request) from err
        with self._backend.pinned(checked):
            return super().handle_request(request)


@dataclass(frozen=True)
class BoundedResponse:
    """Status, headers and at most `max_bytes` of body of one call."""

    status_code: int
    headers: httpx.Headers
    content: bytes


def send_bounded(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    max_bytes: int,
    total_seconds: float = MAX_TOTAL_SECONDS,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
    truncate: bool = False,
) -> BoundedResponse:
    """One request whose answer is read with a size cap and an overall deadline (both raise httpx errors).

    With `truncate` an answer over the cap is cut there instead (for callers that only look at the status)."""
    deadline = time.monotonic() + min(total_seconds, MAX_TOTAL_SECONDS)
    # Identity encoding: a compressed answer could inflate far past the cap inside a single chunk.
    sent = {"accept-encoding": "identity", **(headers or {})}
    with client.stream(method, url, content=content, headers=sent) as response:
        declared = response.headers.get("content-length")
        if not truncate and declared and declared.isdigit() and int(declared) > max_bytes:
            raise ResponseTooLarge(f"answer of {declared} bytes exceeds {max_bytes}")
        body = bytearray()
        for chunk in response.iter_bytes():
            body.extend(chunk)
            if len(body) > max_bytes:
                if truncate:
                    del body[max_bytes:]
                    break
                raise ResponseTooLarge(f"answer exceeds {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"answer took longer than {total_seconds:.0f}s", request=response.request)
        return BoundedResponse(response.status_code, response.headers, bytes(body))
