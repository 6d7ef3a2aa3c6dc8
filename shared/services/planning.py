"""Planning a big file: one streaming pass finds line boundaries, then its byte-range shards run in parallel."""

from __future__ import annotations

import contextlib
import csv
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator

from shared.domain.errors import InvalidInput, PreconditionFailed
from shared.domain.jobs import Job, ShardMessage, utcnow
from shared.domain.tenants import container_for
from shared.inference.readers import (
    MAX_LINE_BYTES,
    MAX_RECORD_BYTES,
    UTF8_BOM,
    csv_rows,
    line_too_long,
    record_too_long,
)
from shared.services.dispatch import dispatch
from shared.services.platform import Platform

logger = logging.getLogger(__name__)
# How often a planner records the shards it found so far (each record lets the dispatcher hand them out).
PLAN_RECORD_SECONDS = 0.5
# Shard runs record themselves on the job while it is planned: a write conflict is expected, not a fault.
MAX_PLAN_CONFLICTS = 50
COMPACT_BYTES = 1024 * 1024
# Rows as csv.reader (strict) reads them, found by regular expression where that is sure to agree with it:
# fields unquoted (no quote, no CR) or quoted, with a closing quote followed by a comma or the row's end, so that
# quote runs pair up as csv.reader pairs them. A quoted field that holds line breaks makes a row of several lines.
_QUOTED, _QUOTED_ON_ONE_LINE, _UNQUOTED = rb'"[^"]*(?:""[^"]*)*"', rb'"[^"\n]*(?:""[^"\n]*)*"', rb'[^",\r\n]*'
_ONE_LINE_FIELD = rb"(?:" + _QUOTED_ON_ONE_LINE + rb"|" + _UNQUOTED + rb")"
_FIELD = rb"(?:" + _QUOTED + rb"|" + _UNQUOTED + rb")"
_ONE_LINE_ROWS = re.compile(rb"(?:" + _ONE_LINE_FIELD + rb"(?:," + _ONE_LINE_FIELD + rb")*\r?\n)*")
_ONE_ROW = re.compile(_FIELD + rb"(?:," + _FIELD + rb")*\r?\n")
# The bulk match is kept to a window: its backtracking state grows with the rows it spans.
MATCH_WINDOW = 1024 * 1024


def iter_cuts_at_lines(chunks: Iterable[bytes], shard_bytes: int) -> Iterator[tuple[int, int]]:
    """(byte offset, lines before it) of each shard start, as soon as it is found: every ~shard_bytes, just after
    a newline. The last one may be the file's very end (a final newline), which starts no shard."""
    yield 0, 0
    target, offset, lines = shard_bytes, 0, 0
    for chunk in chunks:
        search_from = 0
        while target < offset + len(chunk):
            newline = chunk.find(b"\n", max(target - offset, search_from))
            if newline < 0:
                break
            cut = offset + newline + 1
            yield cut, lines + chunk.count(b"\n", 0, newline + 1)
            target, search_from = cut + shard_bytes, newline + 1
        lines += chunk.count(b"\n")
        offset += len(chunk)


def cut_at_lines(chunks: Iterable[bytes], shard_bytes: int) -> list[tuple[int, int]]:
    """(byte offset, lines before it) of each shard start: every ~shard_bytes, just after a newline."""
    total = 0

    def counted() -> Iterator[bytes]:
        nonlocal total
        for chunk in chunks:
            total += len(chunk)
            yield chunk

    cuts = list(iter_cuts_at_lines(counted(), shard_bytes))
    return [(cut, before) for cut, before in cuts if cut < total or cut == 0]


def cut_csv_rows(chunks: Iterable[bytes], shard_bytes: int) -> list[tuple[int, int, int]]:
    """(byte offset, lines before it, rows before it) of each shard start of a CSV file: every ~shard_bytes,
    just after the end of a row, never inside a quoted field (RFC 4180 lets one hold newlines).

    A shard starts mid-file knowing nothing of the quotes before it, so this pass is where quote state is
    tracked. Rows are what the reader's own csv.reader makes of the file (broken rows included), so the planner
    and the reader agree on where every row ends: a stretch of lines without a quote is one row per line and is
    cut at find/count speed; a row whose first line has a quote is read by csv.reader itself.
    """
    source = iter(chunks)
    buf = bytearray()
    base = pos = 0  # file offset of buf[0]; buf index where the next row starts
    lines = rows = 0  # before pos
    target = shard_bytes
    cuts = [(0, 0, 0)]

    def more() -> bool:
        for chunk in source:
            if chunk:
                buf.extend(chunk)
                return True
        return False

    while len(buf) < len(UTF8_BOM) and more():
        pass
    if buf.startswith(UTF8_BOM):  # the reader strips it, so a quote right after it opens a field
        pos = len(UTF8_BOM)
    while True:
        if pos > COMPACT_BYTES:
            del buf[:pos]
            base, pos = base + pos, 0
        quote = buf.find(b'"', pos)
        # Up to `stop` every line is whole and one row: quote-free, or quoted fields that close on their line.
        stop = max(pos, buf.rfind(b"\n", pos, len(buf) if quote < 0 else quote) + 1)
        if quote >= 0 and stop == pos:
            match = _ONE_LINE_ROWS.match(buf, pos, min(len(buf), pos + MATCH_WINDOW))
            stop = match.end() if match else pos
        if stop > pos:
            while target < base + stop:
                newline = buf.find(b"\n", max(target - base, pos))
                counted = buf.count(b"\n", pos, newline + 1)
                lines, rows, pos = lines + counted, rows + counted, newline + 1
                cuts.append((base + pos, lines, rows))
                target = base + pos + shard_bytes
            counted = buf.count(b"\n", pos, stop)
            lines, rows, pos = lines + counted, rows + counted, stop
        elif quote >= 0:  # a row over several lines, or a broken one
            # A row shorter than the field limit cannot trip it (bytes >= characters); else csv.reader decides.
            match = _ONE_ROW.match(buf, pos, min(len(buf), pos + csv.field_size_limit()))
            try:
                end = match.end() if match else _end_of_csv_row(buf, pos, more)
            except InvalidInput:
                # A record over the size limit: no cut after it. The shard that holds it starts within
                # shard_bytes before it, and its reader fails the job with this same reason at once.
                break
            lines, rows, pos = lines + buf.count(b"\n", pos, end), rows + 1, end
            if base + pos > target:
                cuts.append((base + pos, lines, rows))
                target = base + pos + shard_bytes
        elif len(buf) - pos > MAX_LINE_BYTES or not more():
            # No newline follows: the last row, or a line the reader refuses (LineTooLong) whose shard fails
            # the job at once. No cut after it, and no more of the file held.
            break
    total = base + len(buf)
    return [cut for cut in cuts if cut[0] < total or cut[0] == 0]


def _end_of_csv_row(buf: bytearray, start: int, more: Callable[[], bool]) -> int:
    """Where the row that starts at buf[start] ends, as csv.reader reads it (pulling more of the file as needed)."""
    end = start

    def lines() -> Iterator[str]:
        nonlocal end
        searched = end
        while True:
            newline = buf.find(b"\n", searched)
            while newline < 0:
                searched = len(buf)
                if not more():
                    break
                newline = buf.find(b"\n", searched)
            line_end = len(buf) if newline < 0 else newline + 1
            if line_end == end:
                return
            if line_end - end > MAX_LINE_BYTES + 1:
                raise line_too_long(MAX_LINE_BYTES)
            if line_end - start > MAX_RECORD_BYTES:
                raise record_too_long()
            line = buf[end:line_end].decode("utf-8", "surrogateescape")  # the reader refuses bad UTF-8 itself
            end = searched = line_end
            yield line

    with contextlib.suppress(csv.Error, StopIteration):  # a broken row ends where csv.reader gave up on it
        next(csv_rows(lines()))
    return end


def plan_shards(chunks: Iterable[bytes], shard_bytes: int, file_type: str, content_length: int) -> list[list[int]]:
    """The shard plan of a big file: [byte_start, byte_end, first_record_index, first_line] per shard."""
    return list(iter_plan(chunks, shard_bytes, file_type, content_length))


def iter_plan(chunks: Iterable[bytes], shard_bytes: int, file_type: str, content_length: int) -> Iterator[list[int]]:
    """The plan's shards in order, each as soon as its end is found (CSV: all at the end of the pass, since a
    row's end depends on its quotes)."""
    if file_type == ".csv":  # the header row is row 0 and no record
        starts = [(cut, max(0, rows - 1), lines + 1) for cut, lines, rows in cut_csv_rows(chunks, shard_bytes)]
        ends = [cut for cut, _, _ in starts[1:]] + [content_length]
        for (start, index, line), end in zip(starts, ends, strict=True):
            yield [start, end, index, line]
        return
    previous: tuple[int, int] | None = None
    for cut, before in iter_cuts_at_lines(chunks, shard_bytes):
        if cut >= content_length and previous is not None:
            continue  # the file's final newline: no shard starts there
        if previous is not None:
            yield [previous[0], cut, previous[1], previous[1] + 1]
        previous = (cut, before)
    if previous is not None:
        yield [previous[0], content_length, previous[1], previous[1] + 1]


def plan_job(platform: Platform, message: ShardMessage) -> Job:
    """Cuts the job's file into shards once (the plan is kept on the job); they join the tenant's backlog that
    the dispatcher hands out fairly. Idempotent.

    The plan is recorded as it is found (the first shard at once, then every PLAN_RECORD_SECONDS), so shards run
    while the planner still reads the rest of the file: for a 1 GB file the pass takes seconds that would
    otherwise leave every other worker idle. A redelivered plan message reads the file again from the start and
    records only what is new (the cuts are the same: the content is pinned by its ETag).
    """
    job = platform.jobs.get_job(message.tenant_id, message.job_id)
    if job.terminal or job.cancel_requested_at:  # ended, or cancelled: nothing planned now would run
        return job
    if job.planning or not job.shard_plan:
        chunks = platform.blobs.iter_chunks(container_for(job.tenant_id), job.blob_path, etag=job.etag)
        shards = iter_plan(chunks, job.shard_bytes or platform.shard_bytes, job.file_type, job.content_length)
        plan: list[list[int]] = []
        recorded_at: float | None = None
        for shard in shards:
            plan.append(shard)
            if recorded_at is None or time.monotonic() - recorded_at >= PLAN_RECORD_SECONDS:
                job = _record_plan(platform, job, plan, complete=False)
                if job.terminal or not job.planning:
                    return job  # ended meanwhile (given up), or another delivery finished the plan
                dispatch(platform)
                recorded_at = time.monotonic()
        job = _record_plan(platform, job, plan, complete=True)
    dispatch(platform)
    logger.info(
        "job %s planned into %d shards",
        job.job_id,
        job.shard_count,
        extra={"tenant_id": job.tenant_id, "job_id": job.job_id},
    )
    return job


def _record_plan(platform: Platform, job: Job, plan: list[list[int]], *, complete: bool) -> Job:
    """Records the plan found so far (a longer plan already recorded by another delivery stays: it is the same)."""
    for _ in range(MAX_PLAN_CONFLICTS):
        if job.terminal or job.cancel_requested_at or (job.shard_plan and not job.planning):
            return job  # ended or cancelled, or another delivery planned it whole first: keep theirs
        if len(plan) > len(job.shard_plan):
            job.shard_plan = [list(shard) for shard in plan]
        job.shard_count = len(job.shard_plan)
        job.planning = not (complete and len(job.shard_plan) >= len(plan))
        job.updated_at = utcnow()
        try:
            return platform.jobs.replace_job(job)
        except PreconditionFailed:
            job = platform.jobs.get_job(job.tenant_id, job.job_id)
    raise PreconditionFailed(f"job {job.job_id} kept changing while it was planned")
