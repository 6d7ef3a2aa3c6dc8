"""Python SDK of the AIaaS batch inference platform."""

from aiaas_client._async_client import AsyncClient
from aiaas_client._client import Client
from aiaas_client._version import __version__
from aiaas_client.errors import (
    AiaasError,
    APIConnectionError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    WaitTimeoutError,
)
from aiaas_client.models import (
    ApiKey,
    Counts,
    DeadLetter,
    Error,
    Event,
    Job,
    JobStatus,
    Model,
    ModelRef,
    Redelivery,
    Result,
    Subscription,
    Upload,
    Usage,
)

__all__ = [
    "APIConnectionError",
    "AiaasError",
    "ApiKey",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "Counts",
    "DeadLetter",
    "Error",
    "Event",
    "InvalidRequestError",
    "Job",
    "JobStatus",
    "Model",
    "ModelRef",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "Redelivery",
    "Result",
    "ServerError",
    "Subscription",
    "Upload",
    "Usage",
    "WaitTimeoutError",
    "__version__",
]
