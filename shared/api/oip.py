"""Open Inference Protocol (KServe V2) REST under /api/v2: health, metadata and infer for a caller's models.

The routes only: the tensor codec is shared/inference/oip_codec.py, the use case shared/services/online.py. Every
error on these routes is the V2 body `{"error": "<message>"}`.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import zlib
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.api.auth import AS_READER, AS_SUBMITTER, Caller
from shared.api.schemas import (
    AUTHED,
    InferenceRequest,
    InferenceResponse,
    OipModelMetadata,
    OipModelReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
    body_of,
    errors,
)
from shared.domain.errors import PlatformError
from shared.inference.oip_codec import HEADER_LENGTH, MAX_ROWS, V2Error, encode_outputs
from shared.services import online
from shared.services.platform import Platform

__all__ = ["MAX_ROWS", "V2Error", "encode_outputs", "oip_router"]

logger = logging.getLogger(__name__)

V2_READ_ERRORS = errors(*AUTHED, 404, v2=True)
V2_READY_ERRORS = errors(*AUTHED, 404, v2=True)  # 503 among them: the model could not be loaded
INFER_BODY = body_of(
    InferenceRequest,
    binary=f"the binary tensor data extension: {HEADER_LENGTH} bytes of the JSON request, then the tensors' bytes",
)
V2_INFER_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "model": InferenceResponse,
        "description": "the outputs; as application/octet-stream (a JSON header, then the tensors' bytes) when an "
        "output was asked as binary data",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    **errors(*AUTHED, 404, 413, 415, v2=True),
}

SERVER_NAME = "aiaas"
EXTENSIONS = ["binary_tensor_data", "parameters"]
MAX_BODY_BYTES = 16 * 1024 * 1024


def v2_error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _platform_status(err: PlatformError) -> int:
    from shared.api.app import STATUS_BY_ERROR  # the API's one mapping; imported late (app imports this module)

    return next((code for kind, code in STATUS_BY_ERROR if isinstance(err, kind)), 500)


class V2Route(APIRoute):
    """Turns every failure on a V2 route, dependencies (auth) included, into the V2 error body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except V2Error as err:
                return v2_error(err.status, err.message)
            except PlatformError as err:
                from shared.api.app import public_message  # 401/403: one message, the reason only in the log

                status = _platform_status(err)
                return v2_error(status, public_message(status, err))
            except RequestValidationError as err:
                return v2_error(400, "; ".join(str(e.get("msg")) for e in err.errors()) or "invalid request")
            except StarletteHTTPException as err:
                return v2_error(err.status_code, str(err.detail))
            except Exception:
                logger.exception("V2 %s %s failed", request.method, request.url.path)
                return v2_error(500, "internal error")

        return handler


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise V2Error(413, f"the request is {int(declared)} bytes; at most {MAX_BODY_BYTES} are accepted")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            raise V2Error(413, f"the request is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise V2Error(415, f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error:
        raise V2Error(400, f"the request body is not valid {encoding} data") from None
    if len(inflated) > MAX_BODY_BYTES:
        raise V2Error(413, f"the request inflates to over {MAX_BODY_BYTES} bytes")
    return inflated


async def _infer(request: Request, plat: Platform, tenant: Caller, name: str, version: str | None) -> Response:
    body = await _read_body(request)
    answer = await run_in_threadpool(
        online.run_inference, plat, tenant.tenant_id, name, version, body, request.headers.get(HEADER_LENGTH.lower())
    )
    if not answer.binary and not any(
        "binary_data_size" in out.get("parameters", {}) for out in answer.header["outputs"]
    ):
        return JSONResponse(answer.header)
    header = json.dumps(answer.header, separators=(",", ":")).encode()
    return Response(
        header + answer.binary,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def _server_version() -> str:
    try:
        return importlib.metadata.version("aiaas")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def oip_router(platform_dep: Any) -> APIRouter:
    """Routes under /api/v2; `platform_dep` is the API's Depends() marker of the Platform."""
    router = APIRouter(prefix="/api/v2", route_class=V2Route, tags=["Open Inference Protocol (V2)"])

    @router.get("/health/live", response_model=ServerLive)
    def server_live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready", response_model=ServerReady)
    def server_ready(plat: Platform = platform_dep) -> dict[str, bool]:
        return {"ready": plat is not None}

    @router.get("", response_model=ServerMetadata)
    def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": _server_version(), "extensions": list(EXTENSIONS)}

    @router.get("/models/{name}", response_model=OipModelMetadata, responses=V2_READ_ERRORS)
    def get_model_metadata(name: str, plat: Platform = platform_dep, tenant: Caller = AS_READER) -> dict[str, Any]:
        return online.model_metadata(plat, tenant.tenant_id, name, None)

    @router.get("/models/{name}/versions/{version}", response_model=OipModelMetadata, responses=V2_READ_ERRORS)
    def get_model_version_metadata(
        name: str, version: str, plat: Platform = platform_dep, tenant: Caller = AS_READER
    ) -> dict[str, Any]:
        return online.model_metadata(plat, tenant.tenant_id, name, version)

    @router.get("/models/{name}/ready", response_model=OipModelReady, responses=V2_READY_ERRORS)
    def model_ready(name: str, plat: Platform = platform_dep, tenant: Caller = AS_READER) -> dict[str, Any]:
        return online.model_ready(plat, tenant.tenant_id, name, None)

    @router.get("/models/{name}/versions/{version}/ready", response_model=OipModelReady, responses=V2_READY_ERRORS)
    def model_version_ready(
        name: str, version: str, plat: Platform = platform_dep, tenant: Caller = AS_READER
    ) -> dict[str, Any]:
        return online.model_ready(plat, tenant.tenant_id, name, version)

    @router.post("/models/{name}/infer", responses=V2_INFER_ANSWERS, openapi_extra=INFER_BODY)
    async def infer(
        name: str, request: Request, plat: Platform = platform_dep, tenant: Caller = AS_SUBMITTER
    ) -> Response:
        return await _infer(request, plat, tenant, name, None)

    @router.post("/models/{name}/versions/{version}/infer", responses=V2_INFER_ANSWERS, openapi_extra=INFER_BODY)
    async def infer_version(
        name: str, version: str, request: Request, plat: Platform = platform_dep, tenant: Caller = AS_SUBMITTER
    ) -> Response:
        return await _infer(request, plat, tenant, name, version)

    @router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    def not_found(rest: str) -> Response:
        return v2_error(404, f"no Open Inference Protocol endpoint /api/v2/{rest}")

    return router
