"""A job's terminal event: recorded on the job with its terminal status, then published, then marked sent."""

from __future__ import annotations

import logging

from shared.domain.errors import PreconditionFailed
from shared.domain.events import terminal_event
from shared.domain.jobs import Job
from shared.services.platform import Platform

logger = logging.getLogger(__name__)


def publish_terminal_event(platform: Platform, job: Job) -> Job:
    """Publishes the job's one terminal event (same id on every retry) and records that it went out."""
    if job.event_published or not job.terminal:
        return job
    platform.events.publish([terminal_event(job, platform.api_url)])
    logger.info(
        "job %s ended %s; event published",
        job.job_id,
        job.status.value,
        extra={"tenant_id": job.tenant_id, "job_id": job.job_id},
    )
    for _ in range(10):
        job.event_published = True
        try:
            return platform.jobs.replace_job(job)
        except PreconditionFailed:
            job = platform.jobs.get_job(job.tenant_id, job.job_id)
            if job.event_published:
                return job
    raise PreconditionFailed(f"job {job.job_id} kept changing while its event was marked sent")
