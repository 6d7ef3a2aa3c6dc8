"""A job's terminal event: recorded on the job with its terminal status, then published, then marked sent."""

from __future__ import annotations

import logging

from shared import telemetry
from shared.domain.errors import PreconditionFailed
from shared.domain.events import terminal_event
from shared.domain.jobs import Job, utcnow
from shared.services.drift import drift_events
from shared.services.events import publish_events
from shared.services.platform import Platform
from shared.services.usage import record_usage

logger = logging.getLogger(__name__)


def publish_terminal_event(platform: Platform, job: Job) -> Job:
    """Publishes the job's one terminal event (same id on every retry) and records that it went out.

    Only the writer of the job's terminal status calls this (it won that write, so no one else publishes);
    an event whose publisher died before recording it is the sweeper's, through republish_unsent_event.
    Event Grid delivers whatever is published, duplicates included: publishing once is ours to get right.
    """
    if job.event_published or not job.terminal:
        return job
    # Metered before the event goes out: a subscriber never sees a job end that billing has not (an upsert by
    # job id, so this publisher's retry, or the sweeper's re-drive, writes the same record again).
    record_usage(platform, job)
    # Into the event log, then to Event Grid (the sweeper re-drives an event whose publish failed: same id).
    # A drifted job's AIaaS.Model.DriftDetected rides with it, after it: a re-drive publishes both, same ids.
    events = [terminal_event(job, platform.api_url), *drift_events(job)]
    # In the job's trace (the finaliser's shard run, or the sweeper's re-drive from another process).
    with telemetry.span(
        "publish events",
        kind="producer",
        parent=job.traceparent,
        attributes={
            **telemetry.job_attributes(job),
            "messaging.system": telemetry.EVENTS_SYSTEM,
            "messaging.destination.name": job.tenant_id,  # the tenant's domain topic
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.batch.message_count": len(events),
            "aiaas.job.status": job.status.value,
        },
    ):
        publish_events(platform, events)
    telemetry.record_job_end(job)
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


def republish_unsent_event(platform: Platform, job: Job) -> Job:
    """The sweeper's re-drive of a terminal event that was never recorded as sent.

    The job is read afresh (a listing may be older than a publish that went out since) and claimed with an
    ETag-guarded write before the event goes out, so that of two sweeps, or a sweep and a late publisher's
    own retry, one publishes; the loser's PreconditionFailed leaves the job to the next pass.
    """
    job = platform.jobs.get_job(job.tenant_id, job.job_id)
    if job.event_published or not job.terminal:
        return job
    job.updated_at = utcnow()
    job = platform.jobs.replace_job(job)
    return publish_terminal_event(platform, job)
