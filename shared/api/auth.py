"""Who is calling and what they may do: one dependency turns the Authorization header into a caller and checks
the route's role; failed authentications are throttled per source before any store is asked."""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Header, Request

from shared.adapters.entra import EntraTokenVerifier, claimed_tid, looks_like_jwt
from shared.domain.audit import PLATFORM_PARTITION
from shared.domain.errors import Forbidden, NotFound, RateLimited, Unauthorized, WrongRegion
from shared.domain.tenants import ADMIN, API_KEY_PREFIX, READER, ROLES, SUBMITTER, parse_api_key
from shared.services import quotas, regions, tenants
from shared.services.platform import Platform

logger = logging.getLogger(__name__)

__all__ = ["ADMIN", "READER", "ROLES", "SUBMITTER", "Caller", "requires"]
# Each role holds every right of the roles before it.
_RANK = {role: rank for rank, role in enumerate(ROLES)}
# Far above any API key (~90 characters) or Entra access token (a few KB); anything longer is refused unread.
MAX_CREDENTIAL_CHARS = 16 * 1024
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Caller:
    """The credential, resolved once per request: whose tenant, which actor, which role."""

    tenant_id: str
    role: str
    actor_kind: str  # "key" or "entra"
    actor_id: str

    def may(self, role: str) -> bool:
        return _RANK.get(self.role, -1) >= _RANK[role]


@dataclass(frozen=True)
class Refusal:
    """A refused authentication, for the audit log: the tenant the credential claimed (else the platform's
    partition, which no tenant reads) and the actor it claimed to be."""

    tenant_id: str
    actor_kind: str
    actor_id: str


# How the app turns a request's Authorization header into a Caller (set by create_app on app.state).
AuthenticatorFn = Callable[[Request, str | None], Caller]


def _dependency(role: str) -> Callable[..., Caller]:
    def authorize(request: Request, authorization: Annotated[str | None, Header()] = None) -> Caller:
        authenticate: AuthenticatorFn = request.app.state.authenticate
        caller = authenticate(request, authorization)
        request.state.caller = caller
        if not caller.may(role):
            raise Forbidden(f"{caller.actor_kind} {caller.actor_id} of {caller.tenant_id} ({caller.role}) needs {role}")
        return caller

    authorize.required_role = role  # type: ignore[attr-defined]  # what the route-coverage test reads
    return authorize


_MARKERS: dict[str, Any] = {role: Depends(_dependency(role)) for role in ROLES}


def requires(role: str) -> Any:
    """The Depends() marker of a route that needs `role`; the same marker for every route of that role."""
    return _MARKERS[role]


def required_role(dependency: Callable[..., Any]) -> str | None:
    return getattr(dependency, "required_role", None)


# The markers as module-level values, for routes that take them as parameter defaults.
AS_READER, AS_SUBMITTER, AS_ADMIN = (requires(role) for role in ROLES)


@dataclass(frozen=True)
class AuthOptions:
    """What the API needs to know about credentials (from Settings; the defaults: no Entra, no proxy)."""

    entra_authority: str = "https://login.microsoftonline.com"
    entra_audience: str | None = None
    behind_trusted_proxy: bool = False
    failure_limit: int = 20
    failure_window_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Any) -> AuthOptions:
        return cls(
            entra_authority=settings.entra_authority,
            entra_audience=settings.entra_audience,
            behind_trusted_proxy=settings.behind_trusted_proxy,
            failure_limit=settings.auth_failure_limit,
            failure_window_seconds=settings.auth_failure_window_seconds,
        )


class FailedAuthThrottle:
    """Failed authentications per source in a fixed window; a source over the limit is refused (429) before
    its credential is even looked at, so guessing keys or forging tokens costs the guesser, not the database.

    In-process: each API instance counts its own sources (a guesser spread over N instances gets N times the
    limit), which still bounds the store reads per source; successes never count.
    """

    MAX_SOURCES = 100_000

    def __init__(self, limit: int, window_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window = limit, window_seconds
        self._clock = clock
        self._sources: OrderedDict[str, tuple[float, int]] = OrderedDict()  # source -> (window start, failures)
        self._lock = threading.Lock()

    def retry_after(self, source: str) -> int | None:
        """Seconds until the source may try again, or None when it may now."""
        now = self._clock()
        with self._lock:
            start, failures = self._sources.get(source, (now, 0))
        if failures >= self.limit and now - start < self.window:
            return max(1, math.ceil(self.window - (now - start)))
        return None

    def failed(self, source: str) -> None:
        now = self._clock()
        with self._lock:
            start, failures = self._sources.pop(source, (now, 0))
            if now - start >= self.window:
                start, failures = now, 0
            self._sources[source] = (start, failures + 1)
            while len(self._sources) > self.MAX_SOURCES:  # the oldest windows go first
                self._sources.popitem(last=False)


def client_address(request: Request, *, behind_trusted_proxy: bool) -> str:
    """The caller's address: behind a trusted front end (Azure Functions), the last X-Forwarded-For entry, the
    one that front end appended (the entries before it are whatever the client sent); else the peer."""
    peer = request.client.host if request.client else ""
    if behind_trusted_proxy:
        forwarded = request.headers.get("x-forwarded-for", "")
        if forwarded:
            return _address(forwarded.rsplit(",", 1)[-1].strip()) or peer
    return peer


def _address(value: str) -> str | None:
    """An address, with the port the front end may add ("203.0.113.5:51234", "[2001:db8::1]:443") cut off."""
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


class Authenticator:
    """Turns `Authorization: Bearer <API key or Entra ID token>` into a Caller, in this order: the source's
    failure throttle (no store read), the credential (one tenant read for a key; for a token its signature, then
    the tid map and the tenant), then the tenant's request rate (services.quotas)."""

    def __init__(self, platform_factory: Callable[[], Platform], options: AuthOptions) -> None:
        self._platform = platform_factory
        self.options = options
        self.throttle = FailedAuthThrottle(options.failure_limit, options.failure_window_seconds)
        self.verifier = (
            EntraTokenVerifier(options.entra_authority, options.entra_audience) if options.entra_audience else None
        )
        self.homes = regions.HomeCache()

    def __call__(self, request: Request, authorization: str | None) -> Caller:
        source = client_address(request, behind_trusted_proxy=self.options.behind_trusted_proxy)
        wait = self.throttle.retry_after(source)
        if wait is not None:
            logger.info("authentication from %s throttled for %d s", source, wait)
            raise RateLimited(
                f"too many failed authentications from your address; try again in {wait} s",
                retry_after_seconds=wait,
            )
        scheme, _, credential = (authorization or "").partition(" ")
        credential = credential.strip()
        try:
            caller = self._authenticate(scheme, credential)
        except WrongRegion:
            # Counted like a failure (it names a tenant this stamp does not serve), and never audited here: the
            # tenant's audit log lives in its home stamp, and nothing of it may be written in this one.
            self.throttle.failed(source)
            raise
        except (Unauthorized, Forbidden) as err:
            self.throttle.failed(source)
            try:
                request.state.refused = self._refusal(credential, err)
            except Exception:  # the store is busy: the refusal still stands, filed where no tenant claims it
                logger.warning("could not tell whose refusal this is", exc_info=True)
                request.state.refused = Refusal(PLATFORM_PARTITION, "anonymous", "")
            raise
        quotas.check_request_rate(self._platform(), caller.tenant_id)
        return caller

    def _authenticate(self, scheme: str, credential: str) -> Caller:
        if scheme.lower() != "bearer" or not credential:
            raise Unauthorized("no bearer credential")
        if len(credential) > MAX_CREDENTIAL_CHARS:
            raise Unauthorized(f"a credential of {len(credential)} characters")
        if credential.startswith(API_KEY_PREFIX):
            # The home first: a key of a tenant of another stamp is in no store of this one. The key's tenant id
            # is no secret (its container, event subjects and URLs carry it), and which region serves a tenant
            # is told to whoever names it; the key itself is checked only by the home stamp.
            parts = parse_api_key(credential)
            if parts is not None:
                regions.check_home(self._platform(), parts.tenant_id, self.homes)
            tenant, key = tenants.authenticate(self._platform(), credential)
            return Caller(tenant.tenant_id, key.role, "key", key.key_id)
        if not looks_like_jwt(credential):
            raise Unauthorized("neither an API key nor a token")
        if self.verifier is None:
            raise Unauthorized("a token, and Entra ID is not configured (AIAAS_ENTRA_AUDIENCE)")
        identity = self.verifier.verify(credential)
        try:
            tenant = tenants.tenant_of_entra(self._platform(), identity.tid)
        except Forbidden:  # its tid acts for no tenant here: perhaps for one in another stamp
            regions.check_entra_home(self._platform(), identity.tid, self.homes)
            raise
        regions.check_home(self._platform(), tenant.tenant_id, self.homes)
        roles = [role for role in ROLES if role in identity.roles]
        if not roles:
            raise Forbidden(f"token of {identity.actor_id} in {identity.tid} carries no AIaaS role")
        return Caller(tenant.tenant_id, roles[-1], "entra", identity.actor_id)

    def _refusal(self, credential: str, err: Exception) -> Refusal:
        """Whose log a refused attempt goes to: the tenant a key names (when it exists) or a token's tid maps to."""
        if credential.startswith(API_KEY_PREFIX):
            parts = parse_api_key(credential)
            known = parts is not None and getattr(err, "code", "") != "UnknownTenant"
            return Refusal(
                parts.tenant_id if known and parts else PLATFORM_PARTITION, "key", parts.key_id if parts else ""
            )
        tid = claimed_tid(credential) if self.verifier is not None and looks_like_jwt(credential) else None
        if tid is None:
            return Refusal(PLATFORM_PARTITION, "anonymous", "")
        try:
            tenant_id = self._platform().identities.tenant_for(tid)
        except NotFound:
            tenant_id = PLATFORM_PARTITION
        return Refusal(tenant_id, "entra", _claimed_actor(credential))


def _claimed_actor(token: str) -> str:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return ""
    actor = claims.get("oid") or claims.get("sub")
    return actor if isinstance(actor, str) and _SAFE_ID.fullmatch(actor) else ""
