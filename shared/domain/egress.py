"""Which network addresses the platform may call on a tenant's behalf: a pure classifier over address literals."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from shared.domain.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# One answer for every subscription endpoint that fails, whatever the platform saw on the network (a refused
# address, a closed port, a TLS error, a 500): the handshake must not tell a tenant what lies behind the platform.
ENDPOINT_VALIDATION_FAILED = "EndpointValidationFailed"
ENDPOINT_VALIDATION_MESSAGE = (
    "the endpoint did not complete the validation handshake: it must be an https URL of a host on the public "
    "internet that answers the Event Grid validation event (or the CloudEvents OPTIONS request) within 30 seconds"
)

# Refused although `is_global` calls them global: cloud metadata and platform services reachable from a VM.
_DENIED = (
    ipaddress.ip_network("168.63.129.16/32"),  # Azure wire server (DHCP, health probes, the VM agent)
    ipaddress.ip_network("169.254.0.0/16"),  # link-local, incl. 169.254.169.254 (IMDS on Azure, AWS, GCP)
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT (RFC 6598)
    ipaddress.ip_network("192.88.99.0/24"),  # the deprecated 6to4 relay anycast (RFC 7526)
    ipaddress.ip_network("fd00:ec2::/32"),  # AWS's IPv6 IMDS (fd00:ec2::254), inside fc00::/7 anyway
    ipaddress.ip_network("2001::/32"),  # Teredo: tunnels to an IPv4 address the policy cannot see
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215)
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix: the last 32 bits are the IPv4 target
_LOOPBACK_NAME = re.compile(r"^(?:.+\.)?localhost$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


def endpoint_validation_failed() -> InvalidInput:
    """The single error a tenant sees when a subscription endpoint is refused or fails its handshake."""
    return InvalidInput(ENDPOINT_VALIDATION_MESSAGE, code=ENDPOINT_VALIDATION_FAILED)


def refusal_reason(address: IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Why the platform must not connect to this address, or None when it may (global unicast only).

    IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by that IPv4 address too,
    since a dual-stack socket or a translator delivers the packets there.
    """
    if allow_loopback and (address in _V4_LOOPBACK or address == _V6_LOOPBACK):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = refusal_reason(embedded)
            if inner is not None:
                return f"{address} carries {embedded}: {inner}"
            if address.ipv4_mapped is not None or address in _NAT64:
                return None  # the packets go to a global IPv4 address
    for name in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{name}"):
            return f"{address} is {name.replace('_', '-')}"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return f"{address} is site-local"
    for network in _DENIED:
        if address.version == network.version and address in network:
            return f"{address} is in {network}"
    if not address.is_global:
        return f"{address} is not a global address"
    return None


_V4_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_V6_LOOPBACK = ipaddress.IPv6Address("::1")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    packed = address.packed
    if address in _NAT64 or (packed[:12] == bytes(12) and int(address) > 1):  # NAT64, or IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed[12:])
    return None


def redact_url(url: object) -> str:
    """The URL for a log line: no credentials, query or fragment (a webhook's query often carries its secret, as
    a Logic App callback's `sig` does)."""
    text = str(url)
    try:
        parts = urlsplit(text)
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        return "<not a URL>"
    hidden = "?..." if parts.query or parts.fragment else ""
    return f"{parts.scheme}://{netloc}{parts.path}{hidden}" if parts.scheme else "<not an absolute URL>"


def is_loopback_name(host: str) -> bool:
    """`localhost` and its subdomains (RFC 6761), which resolvers answer with loopback without asking DNS."""
    return bool(_LOOPBACK_NAME.match(host.rstrip(".").lower()))


def parse_host_literal(host: str) -> IPAddress | None:
    """The address a host names by itself, read as resolvers and URL parsers read it, or None for a name.

    Besides dotted quads and IPv6 (with or without brackets) this reads the forms inet_aton and the WHATWG URL
    parser accept: `2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1` (all 127.0.0.1). A host whose last label is
    numeric but that is no valid address raises ValueError: a resolver might still read it as one.
    """
    name = host.strip("[]").rstrip(".").lower()
    if ":" in name:
        if "%" in name:  # a zone id names an interface: only link-local addresses take one
            raise ValueError(f"{host!r} carries a zone id")
        return ipaddress.IPv6Address(name)
    labels = name.split(".")
    if not labels or not _NUMERIC_LABEL.match(labels[-1]):
        return None
    if not all(_NUMERIC_LABEL.match(label) for label in labels) or len(labels) > 4:
        raise ValueError(f"{host!r} looks numeric but is not an IPv4 address")
    values = [_label_value(label) for label in labels]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        raise ValueError(f"{host!r} has a part out of range")
    number = last
    for index, value in enumerate(head):
        number += value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _label_value(label: str) -> int:
    if label.startswith("0x"):
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        return int(label, 8)
    return int(label)
