"""Planning a big file: one streaming pass finds line boundaries, then its byte-range shards run in parallel."""

from __future__ import annotations

import contextlib
import csv
import logging
import re
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
    if file_type == ".csv":  # the header row is row 0 and no record
        starts = [(cut, max(0, rows - 1), lines + 1) for cut, lines, rows in cut_csv_rows(chunks, shard_bytes)]
    else:
        starts = [(cut, before, before + 1) for cut, before in cut_at_lines(chunks, shard_bytes)]
    ends = [cut for cut, _, _ in starts[1:]] + [content_length]
    return [[start, end, index, line] for (start, index, line), end in zip(starts, ends, strict=True)]


def plan_job(platform: Platform, message: ShardMessage) -> Job:
    """Cuts the job's file into shards once (the plan is kept on the job); they join the tenant's backlog that
    the dispatcher hands out fairly. Idempotent."""
    job = platform.jobs.get_job(message.tenant_id, message.job_id)
    if job.terminal:  # its terminal writer publishes (an event left unsent is the sweeper's): never twice
        return job
    if not job.shard_plan:
        chunks = platform.blobs.iter_chunks(container_for(job.tenant_id), job.blob_path, etag=job.etag)
        plan = plan_shards(chunks, job.shard_bytes or platform.shard_bytes, job.file_type, job.content_length)
        job = _record_plan(platform, job, plan)
    dispatch(platform)
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
