"""Metering: one usage record per finished job, and the usage report (GET /api/v1/usage) over them."""

from __future__ import annotations

import logging
from typing import Any

from shared.domain.jobs import Job
from shared.domain.usage import UsageRecord, aggregate, time_range
from shared.services.platform import Platform
from shared.services.quotas import quota_status

logger = logging.getLogger(__name__)


def record_usage(platform: Platform, job: Job) -> UsageRecord:
    """Writes the ended job's usage record (an upsert by job id: a retry, redelivery or sweep writes it again,
    the same, and it counts once). Called before the job's terminal event goes out, so that no event is seen
    for a job that was not metered."""
    record = UsageRecord.of_job(job)
    platform.usage.put_usage(record)
    logger.info(
        "usage of job %s: %d records, %.3f s compute",
        job.job_id,
        record.records,
        record.compute_seconds,
        extra={"tenant_id": job.tenant_id, "job_id": job.job_id},
    )
    return record


def usage_report(
    platform: Platform, tenant_id: str, *, start: str | None, end: str | None, group_by: str
) -> dict[str, Any]:
    """The tenant's usage of jobs that ended in [from, to), grouped by model or by day, its totals, its quota."""
    ended_from, ended_before = time_range(start, end)
    records = platform.usage.list_usage(tenant_id, ended_from=ended_from, ended_before=ended_before)
    items, totals = aggregate(records, group_by)
    return {
        "from": ended_from,
        "to": ended_before,
        "groupBy": group_by,
        "items": items,
        "totals": totals,
        "quota": quota_status(platform, tenant_id),
    }
