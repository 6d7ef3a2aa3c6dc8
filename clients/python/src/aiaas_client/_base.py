"""What the sync and async clients share: settings, the retry rule, paging, the blob upload plan."""

from __future__ import annotations

import base64
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Generic, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from aiaas_client._version import __version__
from aiaas_client.errors import AiaasError, APIConnectionError, WaitTimeoutError, error_from_response, parse_retry_after
from aiaas_client.models import (
    ApiKey,
    DeadLetter,
    Event,
    Job,
    Model,
    RecordError,
    Redelivery,
    Result,
    Subscription,
    Upload,
    Usage,
)

logger = logging.getLogger(__name__)

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
R = TypeVar("R")
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


# Sans-I/O operations: each builds what to send and parses what came back; the sync and async clients only send.


@dataclass(frozen=True)
class Call(Generic[R]):
    """One API request (`path` relative to the API URL) and how its answer becomes the result."""

    method: str
    path: str
    parse: Callable[[httpx.Response], R]
    params: dict[str, Any] | None = None
    json: Any = None

    def kwargs(self) -> dict[str, Any]:
        sent: dict[str, Any] = {}
        if self.params is not None:
            sent["params"] = self.params
        if self.json is not None:
            sent["json"] = self.json
        return sent


@dataclass(frozen=True)
class Paged(Generic[T]):
    """A listing read page after page, following the continuation token."""

    path: str
    model: type[T]
    params: dict[str, Any] = field(default_factory=dict)

    def page(self, token: str | None) -> dict[str, Any]:
        return page_params(self.params, token)

    def items(self, body: dict[str, Any]) -> list[T]:
        return [self.model.model_validate(item) for item in body.get("items", [])]


def next_token(body: dict[str, Any]) -> str | None:
    token = body.get("continuationToken")
    return str(token) if token else None


def one(model: type[T]) -> Callable[[httpx.Response], T]:
    return lambda answer: model.model_validate(answer.json())


def many(model: type[T]) -> Callable[[httpx.Response], list[T]]:
    return lambda answer: [model.model_validate(item) for item in answer.json().get("items", [])]


def nothing(answer: httpx.Response) -> None:
    return None


def retry_after_answer(
    method: str, url: str, attempt: int, max_retries: int, max_wait: float, response: httpx.Response
) -> float | None:
    """The wait before the next attempt, or None: `response` is the answer."""
    delay = retry_delay(method, attempt, max_retries, max_wait, response)
    if delay is not None:
        logger.info("%s %s: %d; retrying in %.1f s", method, redact(url), response.status_code, delay)
    return delay


def retry_after_error(
    method: str, url: str, attempt: int, max_retries: int, max_wait: float, error: httpx.TransportError
) -> float:
    """The wait before the next attempt; raises APIConnectionError when the transport error is final."""
    delay = retry_delay(method, attempt, max_retries, max_wait, None)
    if delay is None:
        raise APIConnectionError(f"{method} {where(url, error)}: {error}") from error
    logger.info("%s %s: %s; retrying in %.1f s", method, where(url, error), type(error).__name__, delay)
    return delay


def where(url: str, error: httpx.TransportError) -> str:
    """The whole URL a transport error was about (`url` may be relative to the API's base): scheme, host, port and
    path, so that a message says which host did not answer; never its query (a SAS signature) or user info."""
    try:
        sent = error.request.url
    except RuntimeError:  # an error raised without its request: only what the caller asked for
        return redact(url)
    return str(sent.copy_with(query=None, fragment=None, userinfo=b""))


def get_job(job_id: str) -> Call[Job]:
    return Call("GET", f"v1/jobs/{seg(job_id)}", one(Job))


def list_jobs(limit: int | None) -> Paged[Job]:
    return Paged("v1/jobs", Job, {"limit": limit})


def job_results(job_id: str, limit: int | None) -> Paged[Result]:
    return Paged(f"v1/jobs/{seg(job_id)}/results", Result, {"limit": limit})


def job_errors(job_id: str, limit: int | None) -> Paged[RecordError]:
    return Paged(f"v1/jobs/{seg(job_id)}/errors", RecordError, {"limit": limit})


def submit_job(
    model: str,
    blob_path: str,
    metadata: dict[str, str] | None,
    parameters: dict[str, Any] | None,
    error_threshold: int | None,
) -> Call[Job]:
    body = upload_request(model, "", metadata, parameters, error_threshold)
    body.pop("filename")
    body["blobPath"] = blob_path
    return Call("POST", "v1/jobs", one(Job), json=body)


def cancel_job(job_id: str) -> Call[Job | None]:
    """None: the platform answered without a body, so the job is to be read again."""
    return Call("POST", f"v1/jobs/{seg(job_id)}/cancel", lambda a: Job.model_validate(a.json()) if a.content else None)


def create_upload(
    model: str,
    filename: str,
    metadata: dict[str, str] | None,
    parameters: dict[str, Any] | None,
    error_threshold: int | None,
) -> Call[Upload]:
    return Call(
        "POST", "v1/uploads", one(Upload), json=upload_request(model, filename, metadata, parameters, error_threshold)
    )


def list_models(task: str | None) -> Call[list[Model]]:
    return Call("GET", "v1/models", many(Model), params={"task": task} if task else None)


def get_model(name: str) -> Call[Model]:
    return Call("GET", f"v1/models/{seg(name)}", one(Model))


def _created_subscription(answer: httpx.Response) -> Subscription:
    created = Subscription.model_validate(answer.json())
    created.location = answer.headers.get("location")
    return created


def create_subscription(body: dict[str, Any]) -> Call[Subscription]:
    return Call("POST", "v1/subscriptions", _created_subscription, json=body)


def list_subscriptions() -> Call[list[Subscription]]:
    return Call("GET", "v1/subscriptions", many(Subscription))


def get_subscription(subscription_id: str) -> Call[Subscription]:
    return Call("GET", f"v1/subscriptions/{seg(subscription_id)}", one(Subscription))


def delete_subscription(subscription_id: str) -> Call[None]:
    return Call("DELETE", f"v1/subscriptions/{seg(subscription_id)}", nothing)


def dead_letters(subscription_id: str, limit: int | None) -> Paged[DeadLetter]:
    return Paged(f"v1/subscriptions/{seg(subscription_id)}/deadletters", DeadLetter, {"limit": limit})


def redeliver(
    subscription_id: str,
    event_ids: Sequence[str] | None,
    since: str | datetime | None,
    until: str | datetime | None,
) -> Call[Redelivery]:
    body = redeliver_request(event_ids, since, until)
    return Call("POST", f"v1/subscriptions/{seg(subscription_id)}/redeliver", one(Redelivery), json=body)


def list_events(
    since: str | datetime | None, until: str | datetime | None, type: str | None, limit: int | None
) -> Paged[Event]:
    return Paged("v1/events", Event, {"since": iso(since), "until": iso(until), "type": type, "limit": limit})


def get_usage(start: str | datetime | None, end: str | datetime | None, group_by: str) -> Call[Usage]:
    params = {k: v for k, v in {"from": iso(start), "to": iso(end), "groupBy": group_by}.items() if v}
    return Call("GET", "v1/usage", one(Usage), params=params)


def create_key(name: str, role: str) -> Call[ApiKey]:
    return Call("POST", "v1/keys", one(ApiKey), json={"name": name, "role": role})


def list_keys() -> Call[list[ApiKey]]:
    return Call("GET", "v1/keys", many(ApiKey))


def revoke_key(key_id: str) -> Call[None]:
    return Call("DELETE", f"v1/keys/{seg(key_id)}", nothing)


def deadline_from(timeout: float | None, deadline: float | None) -> float | None:
    if deadline is None and timeout is not None:
        return time.monotonic() + timeout
    return deadline


def check_deadline(deadline: float | None, message: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise WaitTimeoutError(message, code="WaitTimeout")


def still_waiting(job: Job, deadline: float | None) -> bool:
    """False once the job ended; raises WaitTimeoutError when it has not and the deadline passed."""
    if job.done:
        return False
    check_deadline(deadline, f"job {job.job_id} is still {job.status}")
    return True


def blob_job_verdict(job: Job, blob_path: str, oldest: datetime) -> bool | None:
    """True: this is the blob's job; False: stop reading (newest first, the rest is older still); None: read on."""
    if job.input.blob_path == blob_path:
        return True
    if created_before(job.created_at, oldest):
        return False
    return None


@dataclass(frozen=True)
class BlobPut:
    """One PUT to storage; `sent`, when set, is the bytes sent so far once it succeeded."""

    url: str
    content: bytes
    headers: dict[str, str]
    sent: int | None = None


def upload_plan(upload: Upload, path: str | Path, block_size: int) -> tuple[int, Iterator[BlobPut]]:
    """The file's size and its PUTs: one Put Blob up to `block_size`, else a Put Block each and a Put Block List."""
    check_block_size(block_size)
    file = Path(path)
    size = file_size(file)
    return size, _blob_puts(upload, file, size, block_size)


def _blob_puts(upload: Upload, file: Path, size: int, block_size: int) -> Iterator[BlobPut]:
    headers = blob_headers(upload.headers)
    if size <= block_size:
        yield BlobPut(upload.upload_url, file.read_bytes(), headers, size)
        return
    count = block_count(size, block_size)
    sent, index = 0, -1
    block_headers = {"x-ms-version": STORAGE_API_VERSION}
    with file.open("rb") as stream:
        for index, chunk in enumerate(read_blocks(stream, block_size)):
            sent += len(chunk)
            yield BlobPut(block_url(upload.upload_url, index), chunk, block_headers, sent)
    if index + 1 != count:
        raise AiaasError(f"{file} changed while it was sent", code="FileChanged")
    list_headers = {**headers, "Content-Type": "application/xml"}
    list_headers.pop("x-ms-blob-type", None)
    yield BlobPut(block_list_url(upload.upload_url), block_list_body(count), list_headers)
