"""The HTTP API (`/api/v1`): the tenant comes from the API key; every error is JSON with a 4xx for the caller's."""

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared import telemetry
from shared.api.auditing import AuditMiddleware
from shared.api.auth import READER, SUBMITTER, Authenticator, AuthOptions, Caller, requires
from shared.api.schemas import (
    AUTHED,
    HealthAnswer,
    JobList,
    JobView,
    ModelList,
    ModelView,
    RecordErrorPage,
    ResultPage,
    UploadAnswer,
    errors,
    install_openapi,
)
from shared.domain.errors import (
    AlreadyExists,
    Forbidden,
    InvalidInput,
    NotFound,
    PlatformError,
    PreconditionFailed,
    QuotaExceeded,
    ServiceUnavailable,
    Unauthorized,
    UnknownModel,
    WrongRegion,
)
from shared.domain.models import MODEL_NAME_PATTERN
from shared.services import cancel, ingest, queries
from shared.services.platform import Platform
from shared.services.readiness import check_ready
from shared.services.relay import RELAY_TIMEOUT_SECONDS

logger = logging.getLogger(__name__)

STATUS_BY_ERROR: list[tuple[type[PlatformError], int]] = [
    # 421 Misdirected Request: this stamp cannot answer for the tenant; the same request goes to its home stamp
    # (AIaaS-Home-Api-Url). Not a redirect: no client follows it with the credential on its own.
    (WrongRegion, 421),
    (Unauthorized, 401),
    (Forbidden, 403),
    (UnknownModel, 404),
    (NotFound, 404),
    (AlreadyExists, 409),
    (PreconditionFailed, 409),
    (QuotaExceeded, 429),
    (InvalidInput, 400),
    (ServiceUnavailable, 503),
]
# The one answer of each refusal: never which check failed (that goes to the log at INFO, without the credential).
REFUSED_MESSAGES = {401: "the credential is not valid", 403: "not allowed"}
# The ids the platform makes: job ids (job_id_for: 32 hex digits of a sha256) and subscription ids (uuid4().hex).
# A malformed one names nothing, so it answers exactly as a well-formed one that does not exist (404), and it never
# reaches a store, whose own limits (Cosmos: ids of at most 1,023 bytes; 431 for an overlong request) would
# otherwise come back as a 500.
PLATFORM_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_TAGS, MAX_TAG_CHARS = 20, 200


def existing_id(kind: str, value: str) -> str:
    """`value` if it is shaped like an id the platform makes, else NotFound as for a missing `kind`."""
    if not PLATFORM_ID.fullmatch(value):
        raise NotFound(f"{kind} {shown(value)} not found")
    return value


def shown(value: str) -> str:
    """A caller's value quoted in a message: never more than 64 characters of it."""
    return value if len(value) <= 64 else f"{value[:64]}..."


def public_message(status: int, err: PlatformError) -> str:
    """What the caller is told: for a refusal (401, 403) never which check failed, that goes to the log."""
    if status in REFUSED_MESSAGES:
        logger.info("refused (%d): %s", status, err.message)
        return REFUSED_MESSAGES[status]
    return err.message


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# Typed loosely for validation, so that any wrong shape answers InvalidMetadata (shared.domain.jobs.validate_metadata);
# described exactly in the OpenAPI.
METADATA_DESCRIPTION = (
    "up to 16 string pairs (keys 1-64 characters of A-Z a-z 0-9 _ . -, values strings of at most 256), "
    "echoed in the job and in every event of it"
)
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": 16,
    "propertyNames": {"pattern": "^[A-Za-z0-9_.-]{1,64}$"},
    "additionalProperties": {"type": "string", "maxLength": 256},
}


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=140)
    filename: str = Field(min_length=1, max_length=200)
    parameters: dict[str, Any] | None = None
    errorThreshold: int | None = Field(default=None, ge=-1)
    metadata: Any = Field(default=None, description=METADATA_DESCRIPTION, json_schema_extra=METADATA_SCHEMA)


class ReadinessCheck(BaseModel):
    status: str = Field(description="ok, failed or timeout")
    error: str | None = Field(default=None, description="the kind of error (its message is in the log)")


class ReadinessAnswer(BaseModel):
    status: str = Field(description="ready or unavailable")
    checks: dict[str, ReadinessCheck] = Field(description="blob, cosmos and queue")


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=140)
    blobPath: str = Field(min_length=1, max_length=1024)
    parameters: dict[str, Any] | None = None
    errorThreshold: int | None = Field(default=None, ge=-1)
    metadata: Any = Field(default=None, description=METADATA_DESCRIPTION, json_schema_extra=METADATA_SCHEMA)


async def _relative_slash_redirect(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """`/api/v1/jobs/` answers 307 to `/api/v1/jobs`, relative, so no redirect names a host the caller sent."""
    path = request.url.path
    if len(path) > 1 and path.endswith("/") and path.startswith("/api/"):
        target = "/" + path.strip("/")
        if request.url.query:
            target += f"?{request.url.query}"
        return Response(status_code=307, headers={"Location": target})
    return await call_next(request)


def create_app(
    platform_factory: Callable[[], Platform],
    *,
    allow_loopback_webhooks: bool = False,
    auth: AuthOptions | None = None,
    relay_key: str | None = None,
    relay_timeout_seconds: float | None = None,
) -> FastAPI:
    """`relay_key` (Settings.relay_key) authenticates the relay's deliveries (None: it refuses them all);
    `relay_timeout_seconds` is how long the relay waits for a callback (default 25 s, inside Event Grid's 30 s)."""
    app = FastAPI(
        title="AIaaS batch inference platform",
        version="1.0",
        openapi_url="/api/openapi.json",
        docs_url=None,  # /api/docs is shared.api.apidocs: Swagger UI served by the platform, no CDN
        redoc_url=None,
        # Starlette's own slash redirect builds its Location from the request's Host header: a caller could make
        # the platform name any host. The middleware below redirects to a relative path instead.
        redirect_slashes=False,
    )
    install_openapi(app)
    app.middleware("http")(_relative_slash_redirect)
    # Outermost: every answer, even the slash redirect's, carries its request id.
    app.add_middleware(AuditMiddleware, platform_factory=platform_factory)

    def platform() -> Platform:
        return platform_factory()

    # No cache of verified keys: a revoked key must fail on the next request on every process, and a key costs
    # one point read of its tenant.
    app.state.authenticate = Authenticator(platform_factory, auth or AuthOptions())
    Plat = Annotated[Platform, Depends(platform)]
    Reader = Annotated[Caller, requires(READER)]
    Submitter = Annotated[Caller, requires(SUBMITTER)]

    @app.exception_handler(PlatformError)
    def _platform_error(_: Request, err: PlatformError) -> JSONResponse:
        status = next((code for kind, code in STATUS_BY_ERROR if isinstance(err, kind)), 500)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if status in REFUSED_MESSAGES:
            code = "Unauthorized" if status == 401 else "Forbidden"
            return JSONResponse(error_body(code, public_message(status, err)), status_code=status, headers=headers)
        if isinstance(err, WrongRegion):
            headers = {"AIaaS-Home-Region": err.region, "AIaaS-Home-Api-Url": err.api_url}
        if isinstance(err, ServiceUnavailable):  # the database is busy: when to come back, as it told us
            headers = {"Retry-After": str(err.retry_after_seconds)}
        if isinstance(err, QuotaExceeded) and err.retry_after_seconds is not None:  # a quota or the request rate
            headers = {"Retry-After": str(err.retry_after_seconds)}
        return JSONResponse(error_body(err.code, err.message), status_code=status, headers=headers)

    @app.exception_handler(Exception)
    def _unexpected(_: Request, err: Exception) -> JSONResponse:
        logger.error("unexpected error", exc_info=err)
        return JSONResponse(error_body("InternalError", "the platform failed; try again later"), status_code=500)

    @app.exception_handler(RequestValidationError)
    def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in err.errors()
        )
        return JSONResponse(error_body("InvalidRequest", problems), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(err.status_code, "HttpError")
        return JSONResponse(error_body(code, str(err.detail)), status_code=err.status_code)

    @app.get("/api/health", response_model=HealthAnswer)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/api/health/ready",
        response_model=ReadinessAnswer,
        response_model_exclude_none=True,
        responses={503: {"model": ReadinessAnswer, "description": "a dependency did not answer"}},
    )
    def health_ready() -> JSONResponse:
        """Blob, Cosmos and the queue, each probed with a bounded timeout: 200 when all answer, else 503 with
        which did not (no host, account or error message: the log has those)."""
        try:
            probes = platform_factory().readiness
        except Exception as err:  # the platform could not even be built: a dependency is down at start-up
            logger.warning("readiness: the platform could not be built", exc_info=True)
            checks = {"platform": {"status": "failed", "error": type(err).__name__}}
            return JSONResponse({"status": "unavailable", "checks": checks}, status_code=503)
        ready, checks = check_ready(probes)
        body = {"status": "ready" if ready else "unavailable", "checks": checks}
        return JSONResponse(ReadinessAnswer.model_validate(body).model_dump(exclude_none=True), 200 if ready else 503)

    @app.get("/api/v1/models", response_model=ModelList, response_model_exclude_unset=True, responses=errors(*AUTHED))
    def list_models(
        plat: Plat,
        tenant: Reader,
        task: Annotated[str | None, Query(max_length=100)] = None,
        tag: Annotated[list[str] | None, Query(description="k:v, repeatable; all must match")] = None,
    ) -> dict[str, Any]:
        if len(tag or []) > MAX_TAGS or any(len(item) > MAX_TAG_CHARS for item in tag or []):
            raise InvalidInput(f"at most {MAX_TAGS} tags of {MAX_TAG_CHARS} characters each", code="InvalidTag")
        tags = {}
        for item in tag or []:
            key, sep, value = item.partition(":")
            if not sep or not key:
                raise InvalidInput(f"tag {item!r} must be key:value", code="InvalidTag")
            tags[key] = value
        return {"items": plat.models.list_models(tenant.tenant_id, task=task, tags=tags or None)}

    @app.get(
        "/api/v1/models/{name}",
        response_model=ModelView,
        response_model_exclude_unset=True,
        responses=errors(*AUTHED, 404),
    )
    def get_model(name: str, plat: Plat, tenant: Reader) -> dict[str, Any]:
        if not MODEL_NAME_PATTERN.fullmatch(name):  # as the registry answers for a name it does not know
            raise UnknownModel(f"no model named {shown(name)!r} is available to you")
        return plat.models.get_model(tenant.tenant_id, name)

    @app.post("/api/v1/uploads", status_code=201, response_model=UploadAnswer, responses=errors(*AUTHED, 404))
    def create_upload(body: UploadRequest, plat: Plat, tenant: Submitter) -> dict[str, Any]:
        return ingest.create_upload(
            plat,
            tenant.tenant_id,
            body.model,
            body.filename,
            parameters=body.parameters,
            error_threshold=body.errorThreshold,
            metadata=body.metadata,
        )

    @app.post(
        "/api/v1/jobs",
        status_code=202,
        response_model=JobView,
        response_model_exclude_unset=True,
        responses=errors(*AUTHED, 404, 409),
    )
    def submit_job(body: JobRequest, plat: Plat, tenant: Submitter) -> dict[str, Any]:
        # The root of the job's trace, as an upload's admission is (functions/ingest.py).
        with telemetry.span(
            "POST /api/v1/jobs",
            kind="server",
            attributes={
                "http.request.method": "POST",
                "http.route": "/api/v1/jobs",
                telemetry.TENANT_ID: tenant.tenant_id,
            },
        ) as span:
            job = ingest.submit_job(
                plat,
                tenant.tenant_id,
                body.model,
                body.blobPath,
                parameters=body.parameters,
                error_threshold=body.errorThreshold,
                metadata=body.metadata,
            )
            span.set_attributes({**telemetry.job_attributes(job), "aiaas.job.status": job.status.value})
        return job.public_view(plat.api_url)

    @app.get("/api/v1/jobs", response_model=JobList, response_model_exclude_unset=True, responses=errors(*AUTHED))
    def list_jobs(
        plat: Plat,
        tenant: Reader,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        continuationToken: Annotated[str | None, Query()] = None,
    ) -> dict[str, Any]:
        cursor = queries.jobs_cursor(continuationToken)
        jobs, next_cursor = plat.jobs.list_jobs(tenant.tenant_id, limit=limit, continuation=cursor)
        return {
            "items": [job.public_view(plat.api_url) for job in jobs],
            "continuationToken": queries.jobs_token(next_cursor),
        }

    @app.get(
        "/api/v1/jobs/{job_id}",
        response_model=JobView,
        response_model_exclude_unset=True,
        responses=errors(*AUTHED, 404),
    )
    def get_job(job_id: str, plat: Plat, tenant: Reader) -> dict[str, Any]:
        return plat.jobs.get_job(tenant.tenant_id, existing_id("job", job_id)).public_view(plat.api_url)

    @app.post(
        "/api/v1/jobs/{job_id}/cancel",
        status_code=202,
        response_model=JobView,
        response_model_exclude_unset=True,
        responses=errors(*AUTHED, 404, 409),
    )
    def cancel_job(job_id: str, plat: Plat, tenant: Submitter) -> dict[str, Any]:
        """Stops a queued or running job; it ends `cancelled` once its running shards stop (services.cancel).

        202 with the job: `cancelled` at once when nothing of it was running, else still running with
        `cancelRequestedAt`. Again on a cancelled job: 202, no second event. On a job that ended otherwise: 409.
        """
        return cancel.cancel_job(plat, tenant.tenant_id, existing_id("job", job_id)).public_view(plat.api_url)

    def job_entries_route(kind: str, answer: type[BaseModel], name: str, description: str | None = None) -> None:
        """GET /api/v1/jobs/{job_id}/<kind>: one page of the job's results or of its failed records."""
        list_entries = queries.list_results if kind == "results" else queries.list_errors

        def get_entries(
            job_id: str,
            plat: Plat,
            tenant: Reader,
            limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
            continuationToken: Annotated[str | None, Query()] = None,
        ) -> dict[str, Any]:
            job_id = existing_id("job", job_id)
            return list_entries(plat, tenant.tenant_id, job_id, limit=limit, continuation=continuationToken)

        app.get(
            f"/api/v1/jobs/{{job_id}}/{kind}",
            response_model=answer,
            response_model_exclude_unset=True,
            responses=errors(*AUTHED, 404),
            name=name,
            description=description,
        )(get_entries)

    job_entries_route("results", ResultPage, "get_results")
    job_entries_route(
        "errors",
        RecordErrorPage,
        "get_record_errors",
        "The job's failed records in record order (line, id, field, code, reason): errors.jsonl, paged.",
    )

    from shared.api.apidocs import apidocs_router
    from shared.api.console import console_router
    from shared.api.drift_routes import drift_router
    from shared.api.event_routes import event_router
    from shared.api.identity_routes import identity_router
    from shared.api.oip import oip_router
    from shared.api.registry_routes import registry_router
    from shared.api.retrain_routes import retrain_router
    from shared.api.usage_routes import usage_router

    app.include_router(registry_router(Depends(platform)))
    app.include_router(retrain_router(Depends(platform)))
    app.include_router(identity_router(Depends(platform)))
    app.include_router(oip_router(Depends(platform)))
    app.include_router(usage_router(Depends(platform)))
    app.include_router(drift_router(Depends(platform)))
    app.include_router(console_router())  # public HTML at /console; its data calls are the tenant's /api/v1
    app.include_router(apidocs_router("/api/openapi.json", app.title))  # public, as /api/openapi.json is
    app.include_router(
        event_router(
            Depends(platform),
            allow_loopback=allow_loopback_webhooks,
            relay_key=relay_key,
            relay_timeout_seconds=relay_timeout_seconds or RELAY_TIMEOUT_SECONDS,
        )
    )
    return app
