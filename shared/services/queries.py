"""Read side of the API: a tenant's jobs and their results, paged with opaque continuation tokens."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from shared.domain.errors import InvalidInput
from shared.services.platform import Platform


def encode_token(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def decode_token(token: str | None) -> dict[str, Any]:
    if not token:
        return {}
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise InvalidInput("continuationToken is not valid", code="InvalidContinuationToken") from None
    if not isinstance(data, dict):
        raise InvalidInput("continuationToken is not valid", code="InvalidContinuationToken")
    return data


def list_results(
    platform: Platform, tenant_id: str, job_id: str, *, limit: int, continuation: str | None
) -> dict[str, Any]:
    job = platform.jobs.get_job(tenant_id, job_id)  # NotFound for another tenant's job too
    start = decode_token(continuation).get("r", 0)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise InvalidInput("continuationToken is not valid", code="InvalidContinuationToken")
    items: list[dict[str, Any]] = []
    next_token = None
    for page in platform.results.iter_pages(tenant_id, job_id, from_record=start):
        for item in page.items:
            if item["recordIndex"] < start:
                continue
            if len(items) == limit:
                next_token = encode_token({"r": item["recordIndex"]})
                break
            items.append(item)
        if next_token:
            break
    return {"jobId": job.job_id, "status": job.status.value, "items": items, "continuationToken": next_token}
