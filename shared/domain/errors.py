"""The few domain errors a caller can act on; the API maps each to one HTTP status in one place."""

from __future__ import annotations


class PlatformError(Exception):
    """Base of the domain errors: a stable machine code plus a message a person can act on."""

    code = "PlatformError"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class NotFound(PlatformError):
    code = "NotFound"


class AlreadyExists(PlatformError):
    code = "AlreadyExists"


class PreconditionFailed(PlatformError):
    """An optimistic-concurrency write lost the race (ETag mismatch); re-read and retry."""

    code = "PreconditionFailed"


class Unauthorized(PlatformError):
    code = "Unauthorized"


class InvalidInput(PlatformError):
    """The caller's input (request, file, record) is wrong; the message says what to fix."""

    code = "InvalidInput"


class UnknownModel(InvalidInput):
    code = "UnknownModel"


class QuotaExceeded(PlatformError):
    """A tenant's quota (records per day, concurrent jobs, file size, request rate) is reached.

    `retry_after_seconds` is when trying again may succeed, or None when only a smaller request or a higher
    quota would (a file over the size limit).
    """

    code = "QuotaExceeded"

    def __init__(self, message: str, *, code: str | None = None, retry_after_seconds: int | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_seconds = None if retry_after_seconds is None else max(1, retry_after_seconds)


class RateLimited(QuotaExceeded):
    """The tenant sent more requests in this minute than its requests-per-minute limit."""

    code = "RateLimited"

    def __init__(self, message: str, *, retry_after_seconds: int = 1) -> None:
        super().__init__(message, retry_after_seconds=retry_after_seconds)


class InvalidRecord(InvalidInput):
    """One record of a file is wrong; the rest of the file goes on."""

    code = "InvalidRecord"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ServiceUnavailable(PlatformError):
    """A service the platform stands on is throttling or down, even after its client's own retries.

    Not the caller's fault and not a failure of the platform's: the same request succeeds later, from
    `retry_after_seconds` on (what the service asked for, at least 1).
    """

    code = "ServiceBusy"

    def __init__(self, message: str, *, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = max(1, retry_after_seconds)


class Forbidden(PlatformError):
    """The caller is who they say but may not do this: no role for the route, or a tenant the platform does not know."""

    code = "Forbidden"


class WrongRegion(PlatformError):
    """The tenant's home is another stamp (regional stamps): answered 421 Misdirected Request with the home's API
    URL, before any of the tenant's data is read or written here."""

    code = "WrongRegion"

    def __init__(self, message: str, *, region: str, api_url: str) -> None:
        super().__init__(message)
        self.region = region
        self.api_url = api_url
