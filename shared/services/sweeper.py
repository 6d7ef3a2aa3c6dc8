"""The sweeper: finds jobs whose shards stopped moving and re-drives them, or fails them with a reason."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.domain.errors import NotFound, PreconditionFailed
from shared.domain.jobs import PLAN, Job, ShardMessage, utcnow
from shared.services.dispatch import dispatch
from shared.services.outcomes import republish_unsent_event
from shared.services.platform import Platform
from shared.services.shards import ShardOutcome, finalise_if_complete, record_shard

logger = logging.getLogger(__name__)


@dataclass
class SweepReport:
    republished: int = 0
    requeued: int = 0
    failed: int = 0
    dispatched: int = 0


def sweep(platform: Platform, *, stalled_after: timedelta, max_sweeps: int) -> SweepReport:
    """One pass over jobs idle for `stalled_after`: at-least-once re-drive, bounded by `max_sweeps`."""
    report = SweepReport()
    cutoff = (datetime.now(UTC) - stalled_after).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for job in platform.jobs.list_unfinished(updated_before=cutoff):
        ids = {"tenant_id": job.tenant_id, "job_id": job.job_id}
        try:
            if job.terminal:
                republish_unsent_event(platform, job)
                report.republished += 1
            elif job.all_shards_done or job.cancel_settled:  # a worker died while finalising (or cancelling)
                finalise_if_complete(platform, job)
                report.republished += 1
            elif job.shard_count and not job.in_flight and not job.planning:
                continue  # only waiting for its tenant's turn: the dispatcher's, not stalled
            elif job.idle_sweeps >= max_sweeps:
                _give_up(platform, job, stalled_after)
                report.failed += 1
            elif _requeue(platform, job):
                report.requeued += 1
        except (PreconditionFailed, NotFound):
            logger.info("job %s moved while swept; left for the next pass", job.job_id, extra=ids)
    # Slots a failed or conflicting dispatch left unused (or that the re-drives above did not need).
    report.dispatched = dispatch(platform).granted
    if report.republished or report.requeued or report.failed:
        logger.warning("sweep: %s", report)
    return report


def _requeue(platform: Platform, job: Job) -> bool:
    job.sweeps += 1
    job.idle_sweeps += 1
    job.updated_at = utcnow()
    job = platform.jobs.replace_job(job)  # claims this sweep: a concurrent sweeper loses the ETag race
    # Only what was handed to the queue: the backlog is the dispatcher's; a plan left unfinished is read on.
    messages = [job.shard_message(index) for index in job.in_flight] if job.shard_count else []
    if job.shard_count == 0 or job.planning:
        messages.append(ShardMessage(job.tenant_id, job.job_id, 0, 0, kind=PLAN, traceparent=job.traceparent))
    platform.queue.enqueue(messages)
    logger.warning(
        "job %s stalled; re-enqueued %d shard(s) (sweep %d)",
        job.job_id,
        len(messages),
        job.sweeps,
        extra={"tenant_id": job.tenant_id, "job_id": job.job_id},
    )
    return bool(messages)


def _give_up(platform: Platform, job: Job, stalled_after: timedelta) -> None:
    reason = {
        "code": "Stalled",
        "message": f"the job made no progress for {int(stalled_after.total_seconds())}s after "
        f"{job.sweeps} re-deliveries; upload the file again to retry",
    }
    if job.shard_count == 0:  # never planned: one shard, so that recording it ends the job
        job.shard_count = 1
    job.planning = False  # what is not planned by now never will be: the job ends with what it has
    # Nothing of the job is handed out any more: its remaining shards are recorded as failed below.
    job.dispatched, job.updated_at = job.shard_count, utcnow()
    job = platform.jobs.replace_job(job)
    for message in job.shard_messages(only_missing=True):
        record_shard(platform, job.tenant_id, job.job_id, message.shard_index, ShardOutcome(error=reason))
