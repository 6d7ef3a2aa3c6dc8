"""Tenant use cases: create a tenant with its container, first key and Entra mapping; manage and check keys."""

from __future__ import annotations

import logging
import random
import time

from shared.domain.errors import AlreadyExists, Forbidden, InvalidInput, NotFound, PreconditionFailed, Unauthorized
from shared.domain.jobs import utcnow
from shared.domain.tenants import (
    ADMIN,
    KEY_NAME_PATTERN,
    MAX_KEYS_PER_TENANT,
    ROLES,
    ApiKey,
    Tenant,
    container_for,
    new_api_key,
    parse_api_key,
    validate_entra_tenant,
    validate_tenant_id,
)
from shared.services.platform import Platform

logger = logging.getLogger(__name__)

# A tenant document replaced by two writers at once (a key created while another is revoked): re-read and retry,
# after a short random pause so that the writers do not collide again in step.
_WRITE_ATTEMPTS = 10


def _pause(attempt: int) -> None:
    time.sleep(random.uniform(0, 0.02 * (attempt + 1)))


def create_tenant(platform: Platform, tenant_id: str, *, entra_tenant: str | None = None) -> str:
    """Creates the tenant's container, record and Entra mapping; returns its first key (AIaaS.Admin), stored
    only as a hash."""
    validate_tenant_id(tenant_id)
    tid = validate_entra_tenant(entra_tenant) if entra_tenant else None
    if tid:  # refused before anything is created: a tid acts for one tenant only
        try:
            taken_by = platform.identities.tenant_for(tid)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"Entra tenant {tid} already acts for tenant {taken_by}")
    key, api_key = new_api_key(tenant_id, "initial", ADMIN, utcnow())
    platform.blobs.ensure_container(container_for(tenant_id))
    platform.tenants.create_tenant(Tenant(tenant_id=tenant_id, created_at=utcnow(), keys=[key], entra_tenant=tid))
    if tid:
        map_entra_tenant(platform, tid, tenant_id)
    logger.info("created tenant %s", tenant_id, extra={"tenant_id": tenant_id})
    return api_key


def map_entra_tenant(platform: Platform, tid: str, tenant_id: str) -> None:
    """Tokens of Entra tenant `tid` act for `tenant_id` from now on; a tid already mapped stays as it is."""
    try:
        platform.identities.map_tenant(tid, tenant_id)
    except AlreadyExists:
        if platform.identities.tenant_for(tid) != tenant_id:
            raise AlreadyExists(f"Entra tenant {tid} already acts for another tenant") from None


def _validate_key_request(name: str, role: str) -> None:
    if not KEY_NAME_PATTERN.fullmatch(name or ""):
        raise InvalidInput(
            "a key name is 1-64 characters of letters, digits, space, '.', '_' and '-'", code="InvalidKeyName"
        )
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", code="InvalidRole")


def create_key(platform: Platform, tenant_id: str, name: str, role: str) -> tuple[ApiKey, str]:
    """A new key of the tenant with that role: what is stored, and the key (shown once)."""
    _validate_key_request(name, role)
    for attempt in range(_WRITE_ATTEMPTS):
        tenant = platform.tenants.get_tenant(tenant_id)
        if len(tenant.keys) >= MAX_KEYS_PER_TENANT:
            raise InvalidInput(f"a tenant has at most {MAX_KEYS_PER_TENANT} keys; revoke one first", code="TooManyKeys")
        key, api_key = new_api_key(tenant_id, name, role, utcnow())
        tenant.keys.append(key)
        try:
            platform.tenants.replace_tenant(tenant)
        except PreconditionFailed:
            _pause(attempt)
            continue
        logger.info("created key %s (%s) of tenant %s", key.key_id, role, tenant_id, extra={"tenant_id": tenant_id})
        return key, api_key
    raise PreconditionFailed(f"tenant {tenant_id} kept changing; try again")


def list_keys(platform: Platform, tenant_id: str) -> list[ApiKey]:
    return list(platform.tenants.get_tenant(tenant_id).keys)


def revoke_key(platform: Platform, tenant_id: str, key_id: str) -> None:
    """Removes the key: from the next request on, on every process, it is refused. NotFound if it is not one."""
    for attempt in range(_WRITE_ATTEMPTS):
        tenant = platform.tenants.get_tenant(tenant_id)
        kept = [key for key in tenant.keys if key.key_id != key_id]
        if len(kept) == len(tenant.keys):
            raise NotFound(f"key {key_id[:64]} not found")
        tenant.keys = kept
        try:
            platform.tenants.replace_tenant(tenant)
        except PreconditionFailed:
            _pause(attempt)
            continue
        logger.info("revoked key %s of tenant %s", key_id, tenant_id, extra={"tenant_id": tenant_id})
        return
    raise PreconditionFailed(f"tenant {tenant_id} kept changing; try again")


def authenticate(platform: Platform, api_key: str) -> tuple[Tenant, ApiKey]:
    """The tenant and key an API key is, from one point read (no cache: a revoked key fails at once on every
    process); the same Unauthorized for a wrong key, an unknown or suspended tenant (its reason for the log)."""
    parts = parse_api_key(api_key)
    if parts is None:
        raise Unauthorized("not shaped like an API key")
    try:
        tenant = platform.tenants.get_tenant(parts.tenant_id)
    except NotFound:
        raise Unauthorized(f"API key of unknown tenant {parts.tenant_id}", code="UnknownTenant") from None
    key = tenant.key_for(api_key)
    if key is None:
        raise Unauthorized(f"wrong or revoked API key {parts.key_id} of tenant {parts.tenant_id}")
    if not tenant.active:
        raise Unauthorized(f"API key of suspended tenant {parts.tenant_id}")
    return tenant, key


def tenant_of_entra(platform: Platform, tid: str) -> Tenant:
    """The active tenant a verified token's tid acts for: Forbidden (403) when none does."""
    try:
        tenant = platform.tenants.get_tenant(platform.identities.tenant_for(tid))
    except NotFound:
        raise Forbidden(f"Entra tenant {tid} acts for no tenant") from None
    if not tenant.active:
        raise Forbidden(f"Entra tenant {tid} acts for suspended tenant {tenant.tenant_id}")
    return tenant
