"""Fair dispatch: hands the jobs' waiting shards to the queue, a fair share per tenant, within the fleet's limit.

A job's shards are its backlog; `Job.dispatched` is the cursor of what was handed to the queue, so shards in
flight are `dispatched - done` and need no counter of their own. One dispatch call:

1. reads every schedulable job in one cross-partition projection (`JobStore.list_schedulable`);
2. hands out free slots one at a time to the tenant with the fewest shards in flight (ties: the tenant whose
   oldest waiting job is oldest), never past `tenant_max_shards_in_flight` per tenant nor
   `max_shards_in_flight` in all: a tenant alone gets its whole limit, and a newcomer's first shard comes
   before a big tenant's next one; within a tenant, the oldest job's shards go first (so one job's shards
   run in parallel);
3. advances each granted job's cursor with a compare-and-set (the document's ETag, and the cursor it read),
   stopping for a tenant at its first conflict; only the winner enqueues, in the order the slots were given.

Concurrent dispatchers: within a tenant every call grants jobs in the same order and moves past a job only
once it is fully dispatched, so two calls that both succeed for one tenant have seen each other's grants
(a call that read a cursor another call then moved fails its compare-and-set and stops): the tenant limit
holds exactly while the tenant's set of schedulable jobs is unchanged. A job that becomes schedulable in
the middle of a call (its plan recorded at that instant) can let that call exceed the limit by at most its
own grants to the tenant, one tenant limit. The global limit has no such order across tenants: k calls that
overlap can exceed it by what the k-1 others granted from a stale view, at most (k-1) x the free slots each
saw (one slot per finished shard in steady state, since every recorded shard triggers a call).

A crash between the compare-and-set and the enqueue leaves shards counted in flight that no message carries:
the sweeper re-drives a job's dispatched-but-unfinished shards once the job is idle for the stall time.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, defaultdict, deque
from dataclasses import dataclass

from shared.domain.errors import NotFound, PreconditionFailed
from shared.domain.jobs import ShardMessage, utcnow
from shared.ports import JobBacklog
from shared.services.platform import Platform

logger = logging.getLogger(__name__)
MAX_CAS_RETRIES = 10


@dataclass
class DispatchReport:
    granted: int = 0
    conflicts: int = 0
    in_flight: int = 0
    waiting: int = 0


def plan_grants(backlog: list[JobBacklog], *, tenant_limit: int, global_limit: int) -> list[JobBacklog]:
    """The slots to hand out, in the fair order: one entry (the job that gets it) per slot. Pure."""
    in_flight: dict[str, int] = defaultdict(int)
    queues: dict[str, deque[JobBacklog]] = defaultdict(deque)
    left: dict[tuple[str, str], int] = {}
    for entry in sorted(backlog, key=lambda e: (e.created_at, e.job_id)):
        in_flight[entry.tenant_id] += entry.in_flight
        if entry.waiting:
            queues[entry.tenant_id].append(entry)
            left[(entry.tenant_id, entry.job_id)] = entry.waiting
    free = global_limit - sum(in_flight.values())
    heap = [(in_flight[tenant], jobs[0].created_at, tenant) for tenant, jobs in queues.items()]
    heapq.heapify(heap)
    grants: list[JobBacklog] = []
    while free > 0 and heap:
        load, _, tenant = heapq.heappop(heap)
        if load >= tenant_limit:
            continue  # at its limit: it waits for its own shards to finish
        jobs = queues[tenant]
        entry = jobs[0]
        grants.append(entry)
        free -= 1
        key = (entry.tenant_id, entry.job_id)
        left[key] -= 1
        if not left[key]:
            jobs.popleft()
        if jobs:
            heapq.heappush(heap, (load + 1, jobs[0].created_at, tenant))
    return grants


def dispatch(platform: Platform) -> DispatchReport:
    """One fair hand-out of free slots; safe to call from anywhere, any number of times, concurrently."""
    backlog = platform.jobs.list_schedulable()
    report = DispatchReport(
        in_flight=sum(entry.in_flight for entry in backlog), waiting=sum(entry.waiting for entry in backlog)
    )
    grants = plan_grants(
        backlog, tenant_limit=platform.tenant_max_shards_in_flight, global_limit=platform.max_shards_in_flight
    )
    entries = {(entry.tenant_id, entry.job_id): entry for entry in grants}
    slots = Counter((entry.tenant_id, entry.job_id) for entry in grants)  # in first-granted order
    # Compare-and-set per job, each tenant's jobs in grant order; a conflict ends that tenant's turn.
    won: dict[tuple[str, str], deque[ShardMessage]] = {}
    stopped: set[str] = set()
    for key, count in slots.items():
        entry = entries[key]
        if entry.tenant_id in stopped:
            continue
        messages = _advance(platform, entry, count)
        if messages is None:
            report.conflicts += 1
            stopped.add(entry.tenant_id)
        else:
            won[key] = deque(messages)
    # Interleaved as granted, so that the queue's FIFO order is the fair order too.
    ordered = [won[key].popleft() for key in ((e.tenant_id, e.job_id) for e in grants) if won.get(key)]
    if ordered:
        platform.queue.enqueue(ordered)
    report.granted = len(ordered)
    if report.conflicts:
        logger.info(
            "dispatch: %d shard(s) granted; %d conflict(s) left to the next call", len(ordered), report.conflicts
        )
    return report


def _advance(platform: Platform, entry: JobBacklog, count: int) -> list[ShardMessage] | None:
    """Moves the job's cursor from where this call saw it; the messages of the granted shards, or None."""
    for _ in range(MAX_CAS_RETRIES):
        try:
            job = platform.jobs.get_job(entry.tenant_id, entry.job_id)
        except NotFound:
            return None
        if job.terminal or job.dispatched != entry.dispatched:
            return None  # another dispatcher moved it (or the job ended): the next call sees the new state
        start = job.dispatched
        job.dispatched = min(job.shard_count, start + count)
        job.updated_at = utcnow()  # the granted shards' stall clock starts now, not when the job was queued
        try:
            platform.jobs.replace_job(job)
        except PreconditionFailed:
            continue  # a shard was recorded meanwhile; the cursor may still be ours
        return [job.shard_message(index) for index in range(start, job.dispatched)]
    return None
