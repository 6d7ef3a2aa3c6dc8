"""Tenant use cases: create a tenant with its container and first API key; authenticate a key."""

from __future__ import annotations

import logging

from shared.domain.errors import NotFound, Unauthorized
from shared.domain.jobs import utcnow
from shared.domain.tenants import (
    Tenant,
    container_for,
    hash_key,
    new_api_key,
    tenant_of_key,
    validate_tenant_id,
)
from shared.services.platform import Platform

logger = logging.getLogger(__name__)


def create_tenant(platform: Platform, tenant_id: str) -> str:
    """Creates the tenant's container and record; returns its API key, which is stored only as a hash."""
    validate_tenant_id(tenant_id)
    api_key = new_api_key(tenant_id)
    platform.blobs.ensure_container(container_for(tenant_id))
    platform.tenants.create_tenant(Tenant(tenant_id=tenant_id, created_at=utcnow(), key_hashes=[hash_key(api_key)]))
    logger.info("created tenant %s", tenant_id, extra={"tenant_id": tenant_id})
    return api_key


def authenticate(platform: Platform, api_key: str) -> Tenant:
    """The tenant a key belongs to; the same Unauthorized for a wrong key, an unknown tenant or a suspended one."""
    tenant_id = tenant_of_key(api_key)
    if tenant_id is None:
        raise Unauthorized("the API key is not valid")
    try:
        tenant = platform.tenants.get_tenant(tenant_id)
    except NotFound:
        raise Unauthorized("the API key is not valid") from None
    if not tenant.accepts_key(api_key) or not tenant.active:
        raise Unauthorized("the API key is not valid")
    return tenant
