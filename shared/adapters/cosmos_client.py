"""Build an azure-cosmos CosmosClient that works against both the local stand-in and real Azure."""

from __future__ import annotations

import ipaddress
import logging
import warnings
from typing import Any
from urllib.parse import urlsplit

from azure.cosmos import CosmosClient

logger = logging.getLogger(__name__)

# urllib3's InsecureRequestWarning text is "Unverified HTTPS request is being made to host 'HOST'. ...".
# The filter below only matches loopback hosts, so a misconfigured remote endpoint still warns.
_LOOPBACK_WARNING_RE = r"Unverified HTTPS request is being made to host '(localhost|127\.[0-9.]+|::1|\[::1\])'"


def is_loopback_endpoint(endpoint: str) -> bool:
    """True when the endpoint's host is localhost, 127.0.0.0/8 or ::1."""
    host = urlsplit(endpoint).hostname
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _silence_loopback_tls_warning() -> None:
    """Ignore urllib3's InsecureRequestWarning for loopback hosts only (idempotent: no duplicate filters)."""
    try:
        from urllib3.exceptions import InsecureRequestWarning
    except ImportError:  # pragma: no cover - urllib3 ships with azure-core's requests transport
        return
    warnings.filterwarnings("ignore", message=_LOOPBACK_WARNING_RE, category=InsecureRequestWarning)


# Installed at import too, so that frameworks which reset warning filters around each call or test
# (pytest does) keep it for clients created earlier.
_silence_loopback_tls_warning()

# Throttled requests (429) are retried by the SDK itself (its ResourceThrottleRetryPolicy), each one after the
# x-ms-retry-after-ms the service sent, until this many retries or this much waiting in all. These are the SDK's
# defaults, passed explicitly because without them the loopback branch's quick connection retries (retry_total,
# retry_backoff_max) would cut throttle retries too. A 503 is the SDK's to retry as well, but only with endpoint
# discovery on (once more, in the next region or the same one, after 500 ms); once either gives up, the adapter
# raises ServiceUnavailable with the service's retry-after.
THROTTLE_RETRIES = 9
THROTTLE_MAX_WAIT_SECONDS = 30


def make_cosmos_client(
    endpoint: str,
    key: str | None,
    *,
    credential: object | None = None,
    throttle_retries: int = THROTTLE_RETRIES,
    throttle_max_wait_seconds: int = THROTTLE_MAX_WAIT_SECONDS,
) -> CosmosClient:
    """Return a CosmosClient for ``endpoint``.

    * Loopback endpoint (the local stand-in): TLS verification off (its certificate is self-signed and
      expired), endpoint discovery off (the client talks to exactly the URL given, whatever the
      stand-in advertises as its regional endpoint), few quick connection retries, and urllib3's
      InsecureRequestWarning silenced for loopback hosts only.
    * Any other endpoint: SDK defaults (TLS verified, endpoint discovery on).

    Both: throttled requests retried as the service asks (``throttle_retries`` at most, >= 1), and item
    writes sent as compact UTF-8, so that a body is as long as the item's UTF-8 JSON (the length Cosmos DB's
    2 MB limit counts and the result store measures), not up to six times that with non-ASCII text escaped.

    ``key`` is the account key; when it is None, ``credential`` (e.g. DefaultAzureCredential) is used.
    """
    auth: Any = key if key is not None else credential
    if auth is None:
        raise ValueError("make_cosmos_client needs either a key or a credential")
    if throttle_retries < 1 or throttle_max_wait_seconds < 1:
        raise ValueError("throttle_retries and throttle_max_wait_seconds must be at least 1")
    kwargs: dict[str, Any] = {
        "retry_throttle_total": throttle_retries,
        "retry_throttle_backoff_max": throttle_max_wait_seconds,
        "enable_compact_utf8_item_writes": True,
    }
    if is_loopback_endpoint(endpoint):
        _silence_loopback_tls_warning()
        kwargs.update(
            connection_verify=False,
            enable_endpoint_discovery=False,
            connection_timeout=10,
            retry_total=3,
            retry_backoff_max=1,
            retry_backoff_factor=0.1,
        )
        logger.debug("cosmos client for local stand-in %s (TLS verification off)", endpoint)
    else:
        logger.debug("cosmos client for %s", endpoint)
    return CosmosClient(endpoint, credential=auth, **kwargs)
