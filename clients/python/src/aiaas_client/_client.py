"""The synchronous client: `Client(api_url, api_key)` and its sub-clients (jobs, uploads, models, ...)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from aiaas_client import _base
from aiaas_client._base import DEFAULT_BLOCK_SIZE, ProgressCallback
from aiaas_client.errors import AiaasError, APIConnectionError, WaitTimeoutError, error_from_response
from aiaas_client.models import (
    ApiKey,
    DeadLetter,
    Event,
    Job,
    Model,
    Redelivery,
    Result,
    Subscription,
    Upload,
    Usage,
)

logger = logging.getLogger(__name__)
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
                delay = _base.retry_delay(method, attempt, self.max_retries, self.max_retry_wait, None)
                if delay is None:
                    raise APIConnectionError(f"{method} {_base.redact(url)}: {err}") from err
                logger.info("%s %s: %s; retrying in %.1f s", method, _base.redact(url), type(err).__name__, delay)
            else:
                delay = _base.retry_delay(method, attempt, self.max_retries, self.max_retry_wait, response)
                if delay is None:
                    return response
                logger.info("%s %s: %d; retrying in %.1f s", method, _base.redact(url), response.status_code, delay)
                response.close()
            _sleep(delay)
            attempt += 1

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            body: dict[str, Any] = self.request("GET", path, params=_base.page_params(params, token)).json()
            yield body
            token = body.get("continuationToken")
            if not token:
                return

    def _job(self, data: Any) -> Job:
        job = Job.model_validate(data)
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
        return self._client._job(self._client.request("GET", f"v1/jobs/{_base.seg(job_id)}").json())

    def list(self, *, limit: int | None = None) -> Iterator[Job]:
        """The tenant's jobs, newest first, every page (`limit` per page)."""
        for page in self._client._pages("v1/jobs", {"limit": limit}):
            for item in page.get("items", []):
                yield self._client._job(item)

    def results(self, job_id: str, *, limit: int | None = None) -> Iterator[Result]:
        """Every result of the job in record order, page after page (`limit` per page)."""
        for page in self._client._pages(f"v1/jobs/{_base.seg(job_id)}/results", {"limit": limit}):
            for item in page.get("items", []):
                yield Result.model_validate(item)

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
        body = _base.upload_request(model, "", metadata, parameters, error_threshold)
        body.pop("filename")
        body["blobPath"] = blob_path
        return self._client._job(self._client.request("POST", "v1/jobs", json=body).json())

    def cancel(self, job_id: str) -> Job:
        """Stops a queued or running job: it ends `cancelled`; what was computed stays readable."""
        answer = self._client.request("POST", f"v1/jobs/{_base.seg(job_id)}/cancel")
        return self._client._job(answer.json()) if answer.content else self.get(job_id)

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
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_update is not None:
                on_update(job)
            if job.done:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(f"job {job_id} is still {job.status}", code="WaitTimeout")
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
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        oldest = _base.cutoff(since or datetime.now(UTC))
        while True:
            for job in self.list(limit=100):
                if job.input.blob_path == blob_path:
                    return job
                if _base.created_before(job.created_at, oldest):  # newest first: the rest is older still
                    break
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(f"no job appeared for {blob_path}", code="WaitTimeout")
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
        body = _base.upload_request(model, filename, metadata, parameters, error_threshold)
        return Upload.model_validate(self._client.request("POST", "v1/uploads", json=body).json())

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
        _base.check_block_size(block_size)
        file = Path(path)
        size = _base.file_size(file)
        headers = _base.blob_headers(upload.headers)
        client = self._client
        if size <= block_size:
            data = file.read_bytes()
            _base.check(client._send(client._blob_http, "PUT", upload.upload_url, content=data, headers=headers))
            if on_progress is not None:
                on_progress(size, size)
            return
        count = _base.block_count(size, block_size)
        sent, index = 0, -1
        block_headers = {"x-ms-version": _base.STORAGE_API_VERSION}
        with file.open("rb") as stream:
            for index, chunk in enumerate(_base.read_blocks(stream, block_size)):
                url = _base.block_url(upload.upload_url, index)
                _base.check(client._send(client._blob_http, "PUT", url, content=chunk, headers=block_headers))
                sent += len(chunk)
                if on_progress is not None:
                    on_progress(sent, size)
        if index + 1 != count:
            raise AiaasError(f"{file} changed while it was sent", code="FileChanged")
        list_headers = {**headers, "Content-Type": "application/xml"}
        list_headers.pop("x-ms-blob-type", None)
        url = _base.block_list_url(upload.upload_url)
        response = client._send(
            client._blob_http, "PUT", url, content=_base.block_list_body(count), headers=list_headers
        )
        if not response.is_success:
            raise error_from_response(response)


class Models:
    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, *, task: str | None = None) -> list[Model]:
        params = {"task": task} if task else None
        body = self._client.request("GET", "v1/models", params=params).json()
        return [Model.model_validate(item) for item in body.get("items", [])]

    def get(self, name: str) -> Model:
        return Model.model_validate(self._client.request("GET", f"v1/models/{_base.seg(name)}").json())


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
        answer = self._client.request("POST", "v1/subscriptions", json=body)
        created = Subscription.model_validate(answer.json())
        created.location = answer.headers.get("location")
        return created

    def list(self) -> list[Subscription]:
        body = self._client.request("GET", "v1/subscriptions").json()
        return [Subscription.model_validate(item) for item in body.get("items", [])]

    def get(self, subscription_id: str) -> Subscription:
        return Subscription.model_validate(
            self._client.request("GET", f"v1/subscriptions/{_base.seg(subscription_id)}").json()
        )

    def delete(self, subscription_id: str) -> None:
        self._client.request("DELETE", f"v1/subscriptions/{_base.seg(subscription_id)}")

    def dead_letters(self, subscription_id: str, *, limit: int | None = None) -> Iterator[DeadLetter]:
        for page in self._client._pages(f"v1/subscriptions/{_base.seg(subscription_id)}/deadletters", {"limit": limit}):
            for item in page.get("items", []):
                yield DeadLetter.model_validate(item)

    def redeliver(
        self,
        subscription_id: str,
        *,
        event_ids: Sequence[str] | None = None,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
    ) -> Redelivery:
        """Delivers those events again (from the dead letters or the event log) with their original ids."""
        body = _base.redeliver_request(event_ids, since, until)
        answer = self._client.request("POST", f"v1/subscriptions/{_base.seg(subscription_id)}/redeliver", json=body)
        return Redelivery.model_validate(answer.json())


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
        """The tenant's published events, newest first, every page."""
        params = {"since": _base.iso(since), "until": _base.iso(until), "type": type, "limit": limit}
        for page in self._client._pages("v1/events", params):
            for item in page.get("items", []):
                yield Event.model_validate(item)


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
        params = {k: v for k, v in {"from": _base.iso(start), "to": _base.iso(end), "groupBy": group_by}.items() if v}
        return Usage.model_validate(self._client.request("GET", "v1/usage", params=params).json())


class Keys:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, name: str, role: str = "AIaaS.Submitter") -> ApiKey:
        """A new key of `role` (AIaaS.Reader, AIaaS.Submitter, AIaaS.Admin); its secret is in `.key`, once."""
        return ApiKey.model_validate(self._client.request("POST", "v1/keys", json={"name": name, "role": role}).json())

    def list(self) -> list[ApiKey]:
        body = self._client.request("GET", "v1/keys").json()
        return [ApiKey.model_validate(item) for item in body.get("items", [])]

    def revoke(self, key_id: str) -> None:
        self._client.request("DELETE", f"v1/keys/{_base.seg(key_id)}")
