"""What the sync and async clients share: settings, the retry rule, paging, the blob upload plan."""

from __future__ import annotations

import base64
import os
import random
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from aiaas_client._version import __version__
from aiaas_client.errors import AiaasError, error_from_response, parse_retry_after

DEFAULT_API_URL = "http://127.0.0.1:7071/api"
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 3
# Longer than this and a 429/503 is raised at once instead of slept through: a daily quota's Retry-After can be hours.
DEFAULT_MAX_RETRY_WAIT = 60.0
# Azure Blob Storage: a Put Blob takes up to 5000 MiB and a block up to 4000 MiB (API version 2019-12-12 on), at
# most 50,000 blocks a blob (https://learn.microsoft.com/rest/api/storageservices/put-block#remarks). 4 MiB blocks
# keep each request short enough to retry cheaply and make progress visible; files up to one block go in one Put Blob.
DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024
MAX_BLOCKS = 50_000
STORAGE_API_VERSION = "2023-11-03"
# Statuses retried whatever the method: the platform refused before doing anything and said when to come back.
RETRY_ANY_METHOD = frozenset({429, 503})
# Retried only for calls that are safe to repeat.
RETRY_IDEMPOTENT = frozenset({500, 502, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
USER_AGENT = f"aiaas-client-python/{__version__}"
# How far back a job may have been created and still be the one of an upload just sent (clock skew, slow trigger).
FIND_JOB_SLACK = timedelta(minutes=10)
# Without a timeout, how long a sent file may take to become a job (Event Grid's BlobCreated usually comes within
# seconds): past it the trigger lost it, and waiting on would hang the caller for ever.
APPEAR_TIMEOUT = 600.0

T = TypeVar("T", bound=BaseModel)
ProgressCallback = Callable[[int, int], None]


def resolve_settings(api_url: str | None, api_key: str | None) -> tuple[str, str]:
    """The API URL and key: the arguments, else AIAAS_API_URL and AIAAS_API_KEY."""
    url = api_url or os.environ.get("AIAAS_API_URL") or DEFAULT_API_URL
    key = api_key or os.environ.get("AIAAS_API_KEY")
    if not key:
        raise AiaasError("no API key: pass api_key= or set AIAAS_API_KEY")
    return url.rstrip("/") + "/", key


def client_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT, "Accept": "application/json"}


def retry_delay(
    method: str, attempt: int, max_retries: int, max_wait: float, response: httpx.Response | None
) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None: do not retry (`response` None: a transport error)."""
    if attempt >= max_retries:
        return None
    idempotent = method.upper() in IDEMPOTENT_METHODS
    backoff = min(max_wait, 0.5 * 2.0**attempt) * (0.5 + random.random() / 2)
    if response is None:
        return backoff if idempotent else None
    status = response.status_code
    if status in RETRY_ANY_METHOD or (idempotent and status in RETRY_IDEMPOTENT):
        asked = parse_retry_after(response.headers.get("retry-after"))
        if asked is None:
            return backoff
        return asked if asked <= max_wait else None
    return None


def check(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    raise error_from_response(response)


def page_params(params: dict[str, Any], token: str | None) -> dict[str, Any]:
    query = {k: v for k, v in params.items() if v is not None}
    if token:
        query["continuationToken"] = token
    return query


def parse(model: type[T], data: Any) -> T:
    return model.model_validate(data)


def upload_request(
    model: str,
    filename: str,
    metadata: dict[str, str] | None,
    parameters: dict[str, Any] | None,
    error_threshold: int | None,
) -> dict[str, Any]:
    # Only what was given: the API refuses fields it does not know, so an older platform still takes the rest.
    body: dict[str, Any] = {"model": model, "filename": filename}
    if metadata is not None:
        body["metadata"] = metadata
    if parameters is not None:
        body["parameters"] = parameters
    if error_threshold is not None:
        body["errorThreshold"] = error_threshold
    return body


def check_block_size(block_size: int) -> None:
    if not 1 <= block_size <= 4000 * 1024 * 1024:
        raise ValueError("block_size must be 1 byte to 4000 MiB (Azure's largest block)")


def block_id(index: int) -> str:
    """Azure wants every block id of a blob the same length, base64 of at most 64 bytes."""
    return base64.b64encode(f"block-{index:08d}".encode()).decode()


def block_url(upload_url: str, index: int) -> str:
    return f"{upload_url}&comp=block&blockid={quote(block_id(index), safe='')}"


def block_list_url(upload_url: str) -> str:
    return f"{upload_url}&comp=blocklist"


def block_list_body(count: int) -> bytes:
    blocks = "".join(f"<Latest>{block_id(i)}</Latest>" for i in range(count))
    return f'<?xml version="1.0" encoding="utf-8"?><BlockList>{blocks}</BlockList>'.encode()


def blob_headers(upload_headers: dict[str, str] | None) -> dict[str, str]:
    return {"x-ms-version": STORAGE_API_VERSION, **(upload_headers or {"x-ms-blob-type": "BlockBlob"})}


def read_blocks(stream: BinaryIO, block_size: int) -> Iterator[bytes]:
    while chunk := stream.read(block_size):
        yield chunk


def block_count(size: int, block_size: int) -> int:
    count = -(-size // block_size)
    if count > MAX_BLOCKS:
        raise ValueError(f"{size} bytes in {block_size}-byte blocks is over Azure's {MAX_BLOCKS} blocks a blob")
    return count


def file_size(path: Path) -> int:
    return path.stat().st_size


def cutoff(since: datetime) -> datetime:
    return since - FIND_JOB_SLACK


def created_before(created_at: str | None, moment: datetime) -> bool:
    if not created_at:
        return False
    try:
        created = datetime.fromisoformat(created_at)
    except ValueError:
        return False
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created < moment


def seg(value: str) -> str:
    """A path segment from a caller's value: quoted whole, so that "a/../b" stays one segment."""
    return quote(value, safe="")


def redact(url: str) -> str:
    """A URL for a log line: without its query (a SAS URL's signature is a secret)."""
    return url.split("?", 1)[0]


def iso(value: str | datetime | None) -> str | None:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def subscription_request(
    endpoint_url: str | None,
    callback_url: str | None,
    event_types: list[str] | None,
    model_names: list[str] | None,
    schema: str,
    max_delivery_attempts: int | None,
    event_time_to_live_in_minutes: int | None,
    secret: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"schema": schema}
    optional = {
        "endpointUrl": endpoint_url,
        "callbackUrl": callback_url,
        "eventTypes": event_types,
        "modelNames": model_names,
        "secret": secret,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    retry = {"maxDeliveryAttempts": max_delivery_attempts, "eventTimeToLiveInMinutes": event_time_to_live_in_minutes}
    if any(v is not None for v in retry.values()):
        body["retryPolicy"] = {k: v for k, v in retry.items() if v is not None}
    return body


def redeliver_request(
    event_ids: Sequence[str] | None, since: str | datetime | None, until: str | datetime | None
) -> dict[str, Any]:
    if event_ids is None and since is None:
        raise ValueError("redeliver needs event_ids or since")
    body: dict[str, Any] = {}
    if event_ids is not None:
        body["eventIds"] = list(event_ids)
    if since is not None:
        body["since"] = iso(since)
    if until is not None:
        body["until"] = iso(until)
    return body
