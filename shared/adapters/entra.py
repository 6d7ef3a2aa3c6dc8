"""Entra ID v2 access tokens: RS256 signatures checked against the authority's JWKS, chosen by `kid`, cached."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx
import jwt
import orjson

from shared.domain.errors import Unauthorized
from shared.domain.tenants import ENTRA_TENANT_PATTERN

logger = logging.getLogger(__name__)

ALGORITHM = "RS256"
REQUIRED_CLAIMS = ["exp", "nbf", "iss", "aud", "tid"]
# A tenant's keys are fetched again on an unknown kid at most this often, so tokens with random kids cannot make
# the platform flood the authority's key endpoint; a failed fetch waits as long.
REFRESH_SECONDS = 60.0
# At most this many tenants (tids) not seen before may cause a first fetch per minute, and so many are kept:
# random tids cannot flood the key endpoint or this process's memory either.
NEW_TENANTS_PER_MINUTE = 20
MAX_TENANTS = 1000
# Entra's metadata and key documents are a few KB; anything far bigger is not theirs.
MAX_DOCUMENT_BYTES = 256 * 1024
# The clock skew tolerated on exp and nbf (Microsoft.IdentityModel's default is 5 minutes; a minute is enough
# between Azure hosts).
LEEWAY_SECONDS = 60


@dataclass(frozen=True)
class EntraIdentity:
    tid: str
    actor_id: str
    roles: tuple[str, ...]


class _FetchFailed(Exception):
    pass


@dataclass
class _TenantKeys:
    lock: threading.Lock = field(default_factory=threading.Lock)
    keys: dict[str, Any] | None = None  # kid -> public key, None until a fetch succeeded
    fetched_at: float | None = None


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


def claimed_tid(token: str) -> str | None:
    """The tid a token claims, unverified: only to file a refused attempt under the tenant it names."""
    try:
        tid = jwt.decode(token, options={"verify_signature": False}).get("tid")
    except jwt.PyJWTError:
        return None
    return tid if isinstance(tid, str) and ENTRA_TENANT_PATTERN.fullmatch(tid) else None


class EntraTokenVerifier:
    """Checks a token as the contract says: RS256 only, a key of `<authority>/<tid>/v2.0`'s JWKS by kid,
    `iss` = `<authority>/<tid>/v2.0` for the token's own tid, `aud`, `exp`, `nbf`, `tid` required.

    The metadata and keys are fetched from the configured authority only: the platform's own call, not one on a
    tenant's behalf, with bounded timeouts and no redirects; the key endpoint must be on the authority's host.
    """

    def __init__(
        self,
        authority: str,
        audience: str,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.authority = authority.rstrip("/")
        self.audience = audience
        self._origin = _origin(self.authority)
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(5.0, connect=3.0), follow_redirects=False, trust_env=False
        )
        self._clock = clock
        self._tenants: dict[str, _TenantKeys] = {}
        self._lock = threading.Lock()
        self._new_tenant_times: list[float] = []

    def verify(self, token: str) -> EntraIdentity:
        """The verified identity; Unauthorized (with the reason, for the log only) for anything else."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as err:
            raise Unauthorized(f"malformed token ({type(err).__name__})") from None
        if header.get("alg") != ALGORITHM:
            raise Unauthorized(f"token algorithm {str(header.get('alg'))[:20]!r} refused (RS256 only)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 200:
            raise Unauthorized("token without a kid")
        tid = unverified.get("tid")
        if not isinstance(tid, str) or not ENTRA_TENANT_PATTERN.fullmatch(tid):
            raise Unauthorized("token without a valid tid")
        key = self._key(tid, kid)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=f"{self.authority}/{tid}/v2.0",
                leeway=LEEWAY_SECONDS,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as err:
            raise Unauthorized(f"token refused ({type(err).__name__}: {err})") from None
        raw_roles = claims.get("roles")
        roles = tuple(r for r in raw_roles if isinstance(r, str)) if isinstance(raw_roles, list) else ()
        actor = claims.get("oid") or claims.get("sub") or ""
        return EntraIdentity(tid=tid, actor_id=str(actor)[:128], roles=roles)

    def _key(self, tid: str, kid: str) -> Any:
        entry = self._entry(tid)
        with entry.lock:  # one fetch per tenant at a time; the others wait for its keys
            if entry.keys is None or kid not in entry.keys:
                now = self._clock()
                if entry.fetched_at is None or now - entry.fetched_at >= REFRESH_SECONDS:
                    entry.fetched_at = now
                    try:
                        entry.keys = self._fetch(tid)
                    except _FetchFailed as err:  # cached keys, if any, keep working
                        logger.warning("could not fetch the Entra keys of tenant %s: %s", tid, err)
            key = entry.keys.get(kid) if entry.keys else None
        if key is None:
            raise Unauthorized(f"no key {kid[:64]!r} for Entra tenant {tid}")
        return key

    def _entry(self, tid: str) -> _TenantKeys:
        with self._lock:
            entry = self._tenants.get(tid)
            if entry is not None:
                return entry
            now = self._clock()
            self._new_tenant_times = [t for t in self._new_tenant_times if now - t < 60.0]
            if len(self._new_tenant_times) >= NEW_TENANTS_PER_MINUTE:
                raise Unauthorized(f"too many new Entra tenants this minute; {tid} not fetched")
            self._new_tenant_times.append(now)
            if len(self._tenants) >= MAX_TENANTS:
                # Tenants whose keys never loaded go first, then the longest known.
                for stale in [t for t, e in self._tenants.items() if e.keys is None] or [next(iter(self._tenants))]:
                    del self._tenants[stale]
            entry = self._tenants[tid] = _TenantKeys()
            return entry

    def _fetch(self, tid: str) -> dict[str, Any]:
        issuer = f"{self.authority}/{tid}/v2.0"
        metadata = self._get_json(f"{issuer}/.well-known/openid-configuration")
        jwks_uri = metadata.get("jwks_uri")
        if not isinstance(jwks_uri, str) or _origin(jwks_uri) != self._origin:
            raise _FetchFailed("the metadata names no jwks_uri on the authority's host")
        if metadata.get("issuer") != issuer:
            raise _FetchFailed("the metadata names another issuer")
        keys: dict[str, Any] = {}
        for jwk in self._get_json(jwks_uri).get("keys") or []:
            if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig":
                continue
            if not isinstance(jwk.get("kid"), str):
                continue
            try:
                keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm=ALGORITHM).key
            except jwt.PyJWTError:
                logger.warning("skipped an unusable key %r of Entra tenant %s", jwk["kid"][:64], tid)
        logger.info("fetched %d Entra keys of tenant %s", len(keys), tid)
        return keys

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            with self._http.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    raise _FetchFailed(f"{url} answered {response.status_code}")
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise _FetchFailed(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
        except httpx.HTTPError as err:
            raise _FetchFailed(f"{url}: {type(err).__name__}") from err
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            raise _FetchFailed(f"{url} answered no JSON") from err
        if not isinstance(document, dict):
            raise _FetchFailed(f"{url} answered no JSON object")
        return document


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = urlparse(url)
    return parsed.scheme, (parsed.hostname or "").lower(), parsed.port
