"""The synchronous client: `Client(api_url, api_key)` and its sub-clients (jobs, uploads, models, ...)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel

from aiaas_client import _base
from aiaas_client._base import DEFAULT_BLOCK_SIZE, ProgressCallback
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
R = TypeVar("R")
T = TypeVar("T", bound=BaseModel)
_sleep = time.sleep  # tests replace it to see the waits without spending them


class Client:
    """The platform's HTTP API for one tenant's key.

    `api_url` is the API's base, e.g. `http://127.0.0.1:7071/api` (default: AIAAS_API_URL); `api_key` the tenant's
    key (default: AIAAS_API_KEY). 429 and 503 are retried up to `max_retries` times, after the `Retry-After` the
    platform sent when it is at most `max_retry_wait` seconds; no other 4xx is retried.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = _base.DEFAULT_TIMEOUT,
        max_retries: int = _base.DEFAULT_MAX_RETRIES,
        max_retry_wait: float = _base.DEFAULT_MAX_RETRY_WAIT,
        transport: httpx.BaseTransport | None = None,
        blob_transport: httpx.BaseTransport | None = None,
    ) -> None:
        url, key = _base.resolve_settings(api_url, api_key)
        self.api_url = url.rstrip("/")
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self._http = httpx.Client(base_url=url, headers=_base.client_headers(key), timeout=timeout, transport=transport)
        # The SAS URL carries its own authorization: the API key never goes to storage.
        self._blob_http = httpx.Client(timeout=max(timeout, 120.0), transport=blob_transport)
        self.jobs = Jobs(self)
        self.uploads = Uploads(self)
        self.models = Models(self)
        self.subscriptions = Subscriptions(self)
        self.events = Events(self)
        self.usage = UsageClient(self)
        self.keys = Keys(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._blob_http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call to the API (`path` relative to the API URL, e.g. "v1/jobs"), retried as the class says;
        raises the AiaasError for its status on a non-2xx answer."""
        return _base.check(self._send(self._http, method, path.lstrip("/"), **kwargs))

    def _send(self, http: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = http.request(method, url, **kwargs)
            except httpx.TransportError as err:
                delay = _base.retry_after_error(method, url, attempt, self.max_retries, self.max_retry_wait, err)
            else:
                answered = _base.retry_after_answer(
                    method, url, attempt, self.max_retries, self.max_retry_wait, response
                )
                if answered is None:
                    return response
                delay = answered
                response.close()
            _sleep(delay)
            attempt += 1

    def _call(self, call: _base.Call[R]) -> R:
        return call.parse(self.request(call.method, call.path, **call.kwargs()))

    def _items(self, paged: _base.Paged[T]) -> Iterator[T]:
        token: str | None = None
        while True:
            body: dict[str, Any] = self.request("GET", paged.path, params=paged.page(token)).json()
            yield from paged.items(body)
            token = _base.next_token(body)
            if not token:
                return

    def _job(self, job: Job) -> Job:
        job._client = self
        return job

    def submit_file(
        self,
        path: str | Path,
        model: str,
        *,
        wait: bool = True,
        metadata: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
        error_threshold: int | None = None,
        on_progress: ProgressCallback | None = None,
        on_update: Callable[[Job], None] | None = None,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> Job:
        """Uploads the file for `model` and returns its job: finished (`wait=True`), else as soon as it exists.

        `on_progress(sent, total)` follows the upload in bytes; `on_update(job)` is called with each poll's view
        of the job while waiting. Raises WaitTimeoutError when `timeout` seconds pass first.
        """
        file = Path(path)
        started = datetime.now(UTC)
        deadline = None if timeout is None else time.monotonic() + timeout
        upload = self.uploads.create(
            model, file.name, metadata=metadata, parameters=parameters, error_threshold=error_threshold
        )
        self.uploads.send(upload, file, on_progress=on_progress, block_size=block_size)
        job = self.jobs.find_by_blob_path(
            upload.blob_path,
            since=started,
            poll_interval=poll_interval,
            timeout=_base.APPEAR_TIMEOUT,
            deadline=deadline,
        )
        if not wait:
            return job
        return self.jobs.wait(job.job_id, poll_interval=poll_interval, deadline=deadline, on_update=on_update)


class Jobs:
    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, job_id: str) -> Job:
        return self._client._job(self._client._call(_base.get_job(job_id)))

    def list(self, *, limit: int | None = None) -> Iterator[Job]:
        """The tenant's jobs, newest first, page after page;
        `limit` is the page size, not a cap: the loop follows every page (the first N: itertools.islice)."""
        for job in self._client._items(_base.list_jobs(limit)):
            yield self._client._job(job)

    def results(self, job_id: str, *, limit: int | None = None) -> Iterator[Result]:
        """Every result of the job in record order, page after page;
        `limit` is the page size, not a cap: the loop follows every page (the first N: itertools.islice)."""
        return self._client._items(_base.job_results(job_id, limit))

    def errors(self, job_id: str, *, limit: int | None = None) -> Iterator[RecordError]:
        """Every record of the job that failed (line, id, field, code, message) in record order, page after page
        (none for a job whose records all succeeded);
        `limit` is the page size, not a cap: the loop follows every page (the first N: itertools.islice)."""
        return self._client._items(_base.job_errors(job_id, limit))

    def submit(
        self,
        model: str,
        blob_path: str,
        *,
        metadata: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
        error_threshold: int | None = None,
    ) -> Job:
        """A job over a blob already in the tenant's container (202: it is queued)."""
        call = _base.submit_job(model, blob_path, metadata, parameters, error_threshold)
        return self._client._job(self._client._call(call))

    def cancel(self, job_id: str) -> Job:
        """Stops a queued or running job: it ends `cancelled`; what was computed stays readable."""
        job = self._client._call(_base.cancel_job(job_id))
        return self._client._job(job) if job is not None else self.get(job_id)

    def wait(
        self,
        job_id: str,
        *,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        deadline: float | None = None,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Polls the job until it ends; returns it finished. WaitTimeoutError after `timeout` seconds."""
        deadline = _base.deadline_from(timeout, deadline)
        while True:
            job = self.get(job_id)
            if on_update is not None:
                on_update(job)
            if not _base.still_waiting(job, deadline):
                return job
            _sleep(poll_interval)

    def find_by_blob_path(
        self,
        blob_path: str,
        *,
        since: datetime | None = None,
        poll_interval: float = 1.0,
        timeout: float | None = 120.0,
        deadline: float | None = None,
    ) -> Job:
        """The job the platform made for an uploaded blob, once its blob-created trigger admitted it."""
        deadline = _base.deadline_from(timeout, deadline)
        oldest = _base.cutoff(since or datetime.now(UTC))
        while True:
            for job in self.list(limit=100):
                verdict = _base.blob_job_verdict(job, blob_path, oldest)
                if verdict is not None:
                    if verdict:
                        return job
                    break
            _base.check_deadline(deadline, f"no job appeared for {blob_path}")
            _sleep(poll_interval)


class Uploads:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        model: str,
        filename: str,
        metadata: dict[str, str] | None = None,
        *,
        parameters: dict[str, Any] | None = None,
        error_threshold: int | None = None,
    ) -> Upload:
        """A SAS URL for one blob under the tenant's inbox for `model`: what is put there becomes a job."""
        return self._client._call(_base.create_upload(model, filename, metadata, parameters, error_threshold))

    def send(
        self,
        upload: Upload,
        path: str | Path,
        *,
        on_progress: ProgressCallback | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> None:
        """Puts the file at the upload's SAS URL: one Put Blob up to `block_size`, else Put Block per block and a
        Put Block List (the blob appears, and its job starts, only with the list)."""
        client = self._client
        size, puts = _base.upload_plan(upload, path, block_size)
        for put in puts:
            _base.check(client._send(client._blob_http, "PUT", put.url, content=put.content, headers=put.headers))
            if put.sent is not None and on_progress is not None:
                on_progress(put.sent, size)


class Models:
    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, *, task: str | None = None) -> list[Model]:
        return self._client._call(_base.list_models(task))

    def get(self, name: str) -> Model:
        return self._client._call(_base.get_model(name))


class Subscriptions:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        endpoint_url: str | None = None,
        *,
        callback_url: str | None = None,
        event_types: list[str] | None = None,
        model_names: list[str] | None = None,
        schema: str = "EventGridSchema",
        max_delivery_attempts: int | None = None,
        event_time_to_live_in_minutes: int | None = None,
        secret: str | None = None,
    ) -> Subscription:
        """A webhook (it must pass the validation handshake first) or a callback for the tenant's events."""
        body = _base.subscription_request(
            endpoint_url,
            callback_url,
            event_types,
            model_names,
            schema,
            max_delivery_attempts,
            event_time_to_live_in_minutes,
            secret,
        )
        return self._client._call(_base.create_subscription(body))

    def list(self) -> list[Subscription]:
        return self._client._call(_base.list_subscriptions())

    def get(self, subscription_id: str) -> Subscription:
        return self._client._call(_base.get_subscription(subscription_id))

    def delete(self, subscription_id: str) -> None:
        self._client._call(_base.delete_subscription(subscription_id))

    def dead_letters(self, subscription_id: str, *, limit: int | None = None) -> Iterator[DeadLetter]:
        """The subscription's dead-lettered events, page after page;
        `limit` is the page size, not a cap: the loop follows every page (the first N: itertools.islice)."""
        return self._client._items(_base.dead_letters(subscription_id, limit))

    def redeliver(
        self,
        subscription_id: str,
        *,
        event_ids: Sequence[str] | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
    ) -> Redelivery:
        """Delivers those events again (from the dead letters or the event log) with their original ids."""
        return self._client._call(_base.redeliver(subscription_id, event_ids, since, until))


class Events:
    def __init__(self, client: Client) -> None:
        self._client = client

    def list(
        self,
        *,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        type: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Event]:
        """The tenant's published events, newest first, page after page;
        `limit` is the page size, not a cap: the loop follows every page (the first N: itertools.islice)."""
        return self._client._items(_base.list_events(since, until, type, limit))


class UsageClient:
    def __init__(self, client: Client) -> None:
        self._client = client

    def get(
        self,
        *,
        start: str | datetime | None = None,
        end: str | datetime | None = None,
        group_by: str = "model",
    ) -> Usage:
        """Usage of jobs that ended in [start, end) (the API's `from`/`to`), by "model" or "day", and the quota."""
        return self._client._call(_base.get_usage(start, end, group_by))


class Keys:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, name: str, role: str = "AIaaS.Submitter") -> ApiKey:
        """A new key of `role` (AIaaS.Reader, AIaaS.Submitter, AIaaS.Admin); its secret is in `.key`, once."""
        return self._client._call(_base.create_key(name, role))

    def list(self) -> list[ApiKey]:
        return self._client._call(_base.list_keys())

    def revoke(self, key_id: str) -> None:
        self._client._call(_base.revoke_key(key_id))
