"""Per-tenant quotas and the request rate limit, checked against counts kept in the store (every process sees them)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from shared.domain.errors import InvalidInput, QuotaExceeded, RateLimited
from shared.domain.jobs import Job
from shared.domain.usage import QUOTA_FIELDS, Quota, rate_window, seconds_to_next_day, time_range
from shared.services.platform import Platform

logger = logging.getLogger(__name__)

# When a job slot may be free again: a guess (jobs take seconds to hours), short enough not to waste the caller's time.
CONCURRENT_RETRY_SECONDS = 30
# A file over the size limit never fits by waiting: a day stands for "after the operator raised the limit".
FILE_SIZE_RETRY_SECONDS = 24 * 3600


def quota_of(platform: Platform, tenant_id: str) -> Quota:
    """The tenant's limits: its own where the operator set them, the platform's defaults elsewhere."""
    return platform.default_quota.with_overrides(platform.usage.get_quota(tenant_id))


def ended_records_today(platform: Platform, tenant_id: str, now: datetime) -> int:
    """Records of the tenant's jobs that ended today (UTC), from their usage records."""
    day = now.date().isoformat()
    start, end = time_range(day, day)
    return platform.usage.records_ended(tenant_id, ended_from=start, ended_before=end)


def check_admission(platform: Platform, tenant_id: str, size: int) -> QuotaExceeded | None:
    """Why a new job of `size` bytes is over one of the tenant's quotas, or None. Before any record is read.

    The counts come from the store (unfinished jobs, usage records), so every process sees the same ones;
    two admissions at the same instant may both see the last free slot (see README, "Quotas").
    """
    quota = quota_of(platform, tenant_id)
    if quota.max_file_bytes and size > quota.max_file_bytes:
        return QuotaExceeded(
            f"the file is {size} bytes, over the tenant's limit of {quota.max_file_bytes} bytes per file",
            retry_after_seconds=FILE_SIZE_RETRY_SECONDS,
        )
    if not (quota.concurrent_jobs or quota.records_per_day):
        return None
    activity = platform.usage.activity(tenant_id)
    if quota.concurrent_jobs and activity.unfinished_jobs >= quota.concurrent_jobs:
        return QuotaExceeded(
            f"the tenant's limit of {quota.concurrent_jobs} concurrent jobs is reached",
            retry_after_seconds=CONCURRENT_RETRY_SECONDS,
        )
    if quota.records_per_day:
        now = datetime.now(UTC)
        # Records of jobs that ended today and of those under way: a job's own records are not known before
        # it runs, so the last job admitted under the limit may take the day's count over it (README, "Quotas").
        used = ended_records_today(platform, tenant_id, now) + activity.records_in_flight
        if used >= quota.records_per_day:
            return QuotaExceeded(
                f"the tenant's limit of {quota.records_per_day} records per day is reached ({used} records today, UTC)",
                retry_after_seconds=seconds_to_next_day(now),
            )
    return None


def check_slot_after_create(platform: Platform, job: Job) -> QuotaExceeded | None:
    """For a job just created: whether it lost the tenant's last job slot to one created at the same time.

    Two admissions (on two instances) can both pass check_admission when one slot is left; once both jobs
    are stored, every process orders the tenant's unfinished jobs the same way (createdAt, then id), and a job
    with `concurrent_jobs` others ahead of it is over the limit.
    """
    limit = quota_of(platform, job.tenant_id).concurrent_jobs
    if not limit or platform.usage.activity(job.tenant_id).ahead_of(job.created_at, job.job_id) < limit:
        return None
    return QuotaExceeded(
        f"the tenant's limit of {limit} concurrent jobs is reached", retry_after_seconds=CONCURRENT_RETRY_SECONDS
    )


def check_request_rate(platform: Platform, tenant_id: str, *, now: datetime | None = None) -> None:
    """Count one authenticated request of the tenant; raise RateLimited when over its requests-per-minute limit.

    One conditional write to the store per request (the counter of the tenant's current minute); the
    quota itself is read once a minute, by the request that starts the minute's counter.
    """
    window, seconds_left = rate_window(now or datetime.now(UTC))
    if platform.usage.count_request(tenant_id, window, lambda: quota_of(platform, tenant_id).requests_per_minute):
        return
    raise RateLimited(
        f"the tenant's limit of requests per minute is reached; retry in {seconds_left} s",
        retry_after_seconds=seconds_left,
    )


def set_quota(
    platform: Platform, tenant_id: str, *, now: datetime | None = None, **limits: int | None
) -> dict[str, int | None]:
    """The operator's per-tenant limits (camelCase names of QUOTA_FIELDS; 0: no limit, None: unchanged)."""
    platform.tenants.get_tenant(tenant_id)  # NotFound for a tenant the platform does not know
    overrides: dict[str, int | None] = {}
    for name, value in limits.items():
        if name not in QUOTA_FIELDS:
            raise InvalidInput(f"no quota named {name}", code="InvalidQuota")
        if value is None:
            continue
        if value < 0:
            raise InvalidInput(f"{name} must be 0 (no limit) or more", code="InvalidQuota")
        overrides[name] = value
    platform.usage.put_quota(tenant_id, overrides)
    quota = quota_of(platform, tenant_id)
    if "requestsPerMinute" in overrides:  # the minute under way too, not only the next one
        window, _ = rate_window(now or datetime.now(UTC))
        platform.usage.set_rate_limit(tenant_id, window, quota.requests_per_minute)
    logger.info("quota of tenant %s set: %s", tenant_id, overrides, extra={"tenant_id": tenant_id})
    return quota_view(quota)


def quota_view(quota: Quota) -> dict[str, int | None]:
    """Each limit by its API name; None for no limit."""
    return {name: getattr(quota, attr) or None for name, attr in QUOTA_FIELDS.items()}


def quota_status(platform: Platform, tenant_id: str) -> dict[str, Any]:
    """Each limit with what is used and left of it now (`limit` and `remaining` None: no limit)."""
    quota = quota_of(platform, tenant_id)
    now = datetime.now(UTC)
    activity = platform.usage.activity(tenant_id)
    ended_today = ended_records_today(platform, tenant_id, now)
    window, _ = rate_window(now)

    def status(limit: int, used: int) -> dict[str, int | None]:
        return {"limit": limit or None, "used": used, "remaining": max(0, limit - used) if limit else None}

    return {
        "recordsPerDay": status(quota.records_per_day, ended_today + activity.records_in_flight),
        "concurrentJobs": status(quota.concurrent_jobs, activity.unfinished_jobs),
        "maxFileBytes": {"limit": quota.max_file_bytes or None},
        "requestsPerMinute": status(quota.requests_per_minute, platform.usage.requests_in(tenant_id, window)),
    }
