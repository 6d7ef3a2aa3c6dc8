"""Cancelling a job (POST /api/v1/jobs/{id}/cancel): it stops where it is and ends cancelled, with one event."""

from __future__ import annotations

import logging

from shared.domain.errors import PreconditionFailed
from shared.domain.jobs import Job, JobStatus, utcnow
from shared.services.platform import Platform
from shared.services.shards import MAX_CONFLICT_RETRIES, finalise_if_complete

logger = logging.getLogger(__name__)


class JobAlreadyFinished(PreconditionFailed):
    """A cancel of a job that ended otherwise (409): there is nothing left to stop."""

    code = "JobAlreadyFinished"


def cancel_job(platform: Platform, tenant_id: str, job_id: str) -> Job:
    """Asks a queued or running job to stop, and ends it cancelled once none of its shards is in flight.

    The request is one ETag-guarded write (`cancel_requested_at`): from then on the dispatcher hands out none
    of the job's waiting shards, a worker that receives one of its queued shards records it skipped, and a
    running shard's heartbeat sees the request and the shard stops before its next batch and records what it
    did. The last of them to be recorded ends the job (services.shards.finalise_if_complete): the output
    files of what ran, the usage of what ran, and the one AIaaS.Job.Cancelled event. A job with nothing in
    flight ends here and now.

    Idempotent: cancelling a job already cancelled (or being cancelled) answers the job as it is; only the
    writer of the terminal status publishes, so there is never a second event. A job that ended otherwise
    raises JobAlreadyFinished. Another tenant's job is NotFound (the store reads within the caller's tenant).
    """
    for _ in range(MAX_CONFLICT_RETRIES):
        job = platform.jobs.get_job(tenant_id, job_id)
        if job.status == JobStatus.CANCELLED:
            return job
        if job.terminal:
            raise JobAlreadyFinished(
                f"job {job_id} already ended {job.status.value}; only a queued or running job can be cancelled"
            )
        if not job.cancel_requested_at:
            job.cancel_requested_at = job.updated_at = utcnow()
            job.planning = False  # the planner stops at its next record: nothing it finds would run
            try:
                job = platform.jobs.replace_job(job)
            except PreconditionFailed:
                continue  # a shard was recorded (or a heartbeat beat) meanwhile: read again
            logger.info(
                "job %s cancel requested; %d shard(s) in flight",
                job_id,
                len(job.in_flight),
                extra={"tenant_id": tenant_id, "job_id": job_id},
            )
        if not job.cancel_settled:
            return job  # the last shard in flight to be recorded ends it
        try:
            return finalise_if_complete(platform, job)
        except PreconditionFailed:
            continue
    raise PreconditionFailed(f"job {job_id} kept changing while it was cancelled")
