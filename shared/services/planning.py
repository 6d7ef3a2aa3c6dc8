"""Planning a big file: one streaming pass finds line boundaries, then its byte-range shards run in parallel."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from shared.domain.errors import PreconditionFailed
from shared.domain.jobs import Job, ShardMessage, utcnow
from shared.domain.tenants import container_for
from shared.services.outcomes import publish_terminal_event
from shared.services.platform import Platform

logger = logging.getLogger(__name__)


def cut_at_lines(chunks: Iterable[bytes], shard_bytes: int) -> list[tuple[int, int]]:
    """(byte offset, lines before it) of each shard start: every ~shard_bytes, just after a newline."""
    cuts = [(0, 0)]
    target, offset, lines = shard_bytes, 0, 0
    for chunk in chunks:
        search_from = 0
        while target < offset + len(chunk):
            newline = chunk.find(b"\n", max(target - offset, search_from))
            if newline < 0:
                break
            cut = offset + newline + 1
            cuts.append((cut, lines + chunk.count(b"\n", 0, newline + 1)))
            target, search_from = cut + shard_bytes, newline + 1
        lines += chunk.count(b"\n")
        offset += len(chunk)
    return [(cut, before) for cut, before in cuts if cut < offset or cut == 0]


def plan_job(platform: Platform, message: ShardMessage) -> Job:
    """Cuts the job's file into shards once (the plan is kept on the job) and enqueues them; idempotent."""
    job = platform.jobs.get_job(message.tenant_id, message.job_id)
    if job.terminal:
        return publish_terminal_event(platform, job)
    if not job.shard_plan:
        chunks = platform.blobs.iter_chunks(container_for(job.tenant_id), job.blob_path, etag=job.etag)
        cuts = cut_at_lines(chunks, job.shard_bytes or platform.shard_bytes)
        header_lines = 1 if job.file_type == ".csv" else 0
        ends = [cut for cut, _ in cuts[1:]] + [job.content_length]
        plan = [
            [start, end, max(0, before - header_lines), before + 1]
            for (start, before), end in zip(cuts, ends, strict=True)
        ]
        job = _record_plan(platform, job, plan)
    messages = job.shard_messages(only_missing=True)
    platform.queue.enqueue(messages)
    logger.info(
        "job %s planned into %d shards",
        job.job_id,
        job.shard_count,
        extra={"tenant_id": job.tenant_id, "job_id": job.job_id},
    )
    return job


def _record_plan(platform: Platform, job: Job, plan: list[list[int]]) -> Job:
    for _ in range(20):
        if job.shard_plan:  # another delivery planned it first: keep theirs
            return job
        job.shard_plan, job.shard_count, job.updated_at = plan, len(plan), utcnow()
        try:
            return platform.jobs.replace_job(job)
        except PreconditionFailed:
            job = platform.jobs.get_job(job.tenant_id, job.job_id)
    raise PreconditionFailed(f"job {job.job_id} kept changing while it was planned")
