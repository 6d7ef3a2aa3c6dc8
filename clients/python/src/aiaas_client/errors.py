"""The platform's refusals as exceptions: each carries the HTTP status, the error code and the request id."""

from __future__ import annotations

from typing import Any

import httpx


class AiaasError(Exception):
    """Any failure the platform answered (or a transport failure, with status None)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if code else message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.headers = headers if headers is not None else httpx.Headers()


class InvalidRequestError(AiaasError):
    """400: the request itself is wrong (its `code` says how)."""


class AuthenticationError(AiaasError):
    """401: the API key or token is not valid (revoked, expired, mistyped)."""


class PermissionDeniedError(AiaasError):
    """403: the key's role does not allow the call."""


class NotFoundError(AiaasError):
    """404: it does not exist, or belongs to another tenant (the platform answers both alike)."""


class ConflictError(AiaasError):
    """409: it exists already, or changed meanwhile."""


class RateLimitedError(AiaasError):
    """429: over a quota or the request rate; `retry_after` is the seconds the platform asked to wait."""

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


class ServerError(AiaasError):
    """5xx: the platform failed or is busy; trying again later may succeed."""


class WaitTimeoutError(AiaasError):
    """A wait ran out (`submit_file(..., timeout=)`, `jobs.wait(...)`) before the job ended."""


class APIConnectionError(AiaasError):
    """The platform could not be reached (after the retries)."""


_BY_STATUS: dict[int, type[AiaasError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitedError,
}


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: the platform sends delta-seconds; an HTTP date is read too (RFC 9110 10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def error_from_response(response: httpx.Response) -> AiaasError:
    """The exception for a non-2xx answer, with the code and message of its `{"error": {...}}` body."""
    code: str | None = None
    message = response.reason_phrase or f"HTTP {response.status_code}"
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        message = body["error"].get("message") or message
    status = response.status_code
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else AiaasError)
    return kind(
        message, status=status, code=code, request_id=response.headers.get("x-request-id"), headers=response.headers
    )
