"""Read side of the API: a tenant's jobs and their results, paged with opaque continuation tokens."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson

from shared.domain.errors import InvalidInput
from shared.services.platform import Platform

# A results answer holds `limit` items, or fewer when they come to more than this (always one at least): a job
# whose outputs are megabytes each pages by bytes too, where `limit` alone would build an answer of gigabytes.
RESULTS_RESPONSE_BYTES = 8 * 1024 * 1024


# A token travels in a URL, and a real one stays far below this (a jobs cursor holds the ids at one instant).
MAX_TOKEN_CHARS = 8192
_TOKEN_TEXT = re.compile(r"^[A-Za-z0-9_-]+$")
# The job stores' keyset cursor (see JobStore.list_jobs): "<createdAt>|<ids of the jobs seen at that instant>".
_JOBS_CURSOR = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z\|(?:[0-9a-f]{32}(?:,[0-9a-f]{32})*)?$")


def _invalid_token() -> InvalidInput:
    return InvalidInput(
        "continuationToken is not valid: pass back the continuationToken of the previous page unchanged",
        code="InvalidContinuationToken",
    )


def encode_token(data: dict[str, Any]) -> str:
    """An opaque continuation token: base64url of compact JSON, unpadded."""
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def decode_token(token: str | None) -> dict[str, Any]:
    """The JSON object inside a token made by encode_token; InvalidInput (400) for anything else."""
    if not token:
        return {}
    # b64decode skips characters outside its alphabet, so a token is checked whole before it is decoded.
    if len(token) > MAX_TOKEN_CHARS or not _TOKEN_TEXT.fullmatch(token):
        raise _invalid_token()
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise _invalid_token() from None
    if not isinstance(data, dict):
        raise _invalid_token()
    return data


def jobs_token(cursor: str | None) -> str | None:
    return encode_token({"c": cursor}) if cursor else None


def jobs_cursor(token: str | None) -> str | None:
    """The job store's cursor inside a jobs page token (none or empty: the first page); a token of another list,
    or one whose cursor is not the store's: 400, never the first page again."""
    if not token:
        return None
    cursor = decode_token(token).get("c")
    if not isinstance(cursor, str) or not _JOBS_CURSOR.fullmatch(cursor):
        raise _invalid_token()
    return cursor


def _results_start(token: str | None, job_id: str, kind: str = "r") -> int:
    """The record index a results ("r") or errors ("e") page token resumes at; a token of the other list: 400."""
    if not token:
        return 0
    data = decode_token(token)
    start = data.get(kind)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0 or data.get("j", job_id) != job_id:
        raise _invalid_token()
    return start


def list_results(
    platform: Platform, tenant_id: str, job_id: str, *, limit: int, continuation: str | None
) -> dict[str, Any]:
    return _list_entries(platform, tenant_id, job_id, "items", limit=limit, continuation=continuation)


def list_errors(
    platform: Platform, tenant_id: str, job_id: str, *, limit: int, continuation: str | None
) -> dict[str, Any]:
    """The records of a job that failed, in record order: line, id, field, code and reason (errors.jsonl's lines)."""
    return _list_entries(platform, tenant_id, job_id, "errors", limit=limit, continuation=continuation)


def _list_entries(
    platform: Platform, tenant_id: str, job_id: str, kind: str, *, limit: int, continuation: str | None
) -> dict[str, Any]:
    """One page of a job's results (kind "items") or failed records ("errors"), both kept in its result pages."""
    token_key = "r" if kind == "items" else "e"
    start = _results_start(continuation, job_id, token_key)
    job = platform.jobs.get_job(tenant_id, job_id)  # NotFound for another tenant's job too
    items: list[dict[str, Any]] = []
    size = 0
    next_token = None
    for page in platform.results.iter_pages(tenant_id, job_id, from_record=start):
        for item in page.items if kind == "items" else page.errors:
            if item["recordIndex"] < start:
                continue
            if job.region:  # the stamp that produced it: the job's, so it is not stored with every record
                item = {**item, "region": job.region}
            item_size = len(orjson.dumps(item))
            if len(items) == limit or (items and size + item_size > RESULTS_RESPONSE_BYTES):
                next_token = encode_token({token_key: item["recordIndex"], "j": job_id})
                break
            items.append(item)
            size += item_size
        if next_token:
            break
    answer = {"jobId": job.job_id, "status": job.status.value, "items": items, "continuationToken": next_token}
    if job.region:
        answer["region"] = job.region
    return answer
