"""Model registry routes beyond listing: tenant-private registration and alias moves (with their history)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from shared.api.auth import AS_ADMIN, AS_READER, Caller
from shared.domain.blobpaths import MAX_BLOB_NAME_CHARS, parse_tenant_blob_path
from shared.domain.errors import InvalidInput, NotFound, PreconditionFailed, UnknownModel
from shared.domain.models import MODEL_NAME_PATTERN, SELECTOR_PATTERN, ModelRef
from shared.services.ingest import copied_blob_refused
from shared.services.platform import Platform

MAX_ARTIFACT_BYTES = 50 * 1024 * 1024
MAX_BASE64_CHARS = (MAX_ARTIFACT_BYTES + 2) // 3 * 4


class RegisterModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    card: dict[str, Any]
    artifactBase64: str | None = Field(default=None, max_length=MAX_BASE64_CHARS)
    artifactBlobPath: str | None = Field(default=None, min_length=1, max_length=MAX_BLOB_NAME_CHARS)
    files: dict[str, str] | None = Field(default=None, description="extra package files the card names, base64")
    credential: str | None = Field(
        default=None, max_length=8192, description="remote-oip only: the endpoint's key or token; never returned"
    )


class AliasRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=64, pattern=SELECTOR_PATTERN.pattern)


def _decode(text: str, what: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidInput(f"{what} is not valid base64", code="InvalidModelPackage") from err
    if len(data) > MAX_ARTIFACT_BYTES:
        raise InvalidInput(f"{what} is over {MAX_ARTIFACT_BYTES} bytes", code="ArtifactTooLarge")
    return data


def _artifact(plat: Platform, tenant_id: str, body: RegisterModelRequest) -> bytes | None:
    if body.artifactBase64 is not None and body.artifactBlobPath is not None:
        raise InvalidInput("send artifactBase64 or artifactBlobPath, not both", code="InvalidModelPackage")
    if body.artifactBase64 is not None:
        return _decode(body.artifactBase64, "artifactBase64")
    if body.artifactBlobPath is None:
        return None
    blob = parse_tenant_blob_path(tenant_id, body.artifactBlobPath, field="artifactBlobPath")  # the caller's own
    try:
        info = plat.blobs.get_info(blob.container, blob.name)
        if info.is_copy:  # perhaps another tenant's private model, named by URL: never registered as this one's
            raise copied_blob_refused()
        if info.size > MAX_ARTIFACT_BYTES:
            raise InvalidInput(f"the artifact is over {MAX_ARTIFACT_BYTES} bytes", code="ArtifactTooLarge")
        # Read the version that was checked: a blob replaced since (by a copy, say) is refused, not read.
        return b"".join(plat.blobs.iter_chunks(blob.container, blob.name, etag=info.etag))
    except PreconditionFailed:
        raise InvalidInput(
            f"{body.artifactBlobPath!r} changed while it was read; send it again", code="BlobChanged"
        ) from None
    except NotFound:
        raise InvalidInput(f"no blob {body.artifactBlobPath!r} in your container", code="BlobNotFound") from None


def registry_router(platform_dep: Any) -> APIRouter:
    """Routes under /api/v1/models; `platform_dep` is the API's Depends() marker of the Platform."""
    router = APIRouter()

    @router.post("/api/v1/models", status_code=201)
    def register_model(
        body: RegisterModelRequest, plat: Platform = platform_dep, tenant: Caller = AS_ADMIN
    ) -> dict[str, Any]:
        """Registers a version of the caller's own private model (ONNX bytes, or a remote-oip endpoint)."""
        files = {name: _decode(text, f"file {name!r}") for name, text in (body.files or {}).items()}
        return plat.models.register_private(
            tenant.tenant_id,
            body.card,
            _artifact(plat, tenant.tenant_id, body),
            files=files,
            credential=body.credential,
        )

    @router.get("/api/v1/models/{name}/aliases")
    def get_aliases(name: str, plat: Platform = platform_dep, tenant: Caller = AS_READER) -> dict[str, Any]:
        """The model's aliases and every move of them (who, when)."""
        if not MODEL_NAME_PATTERN.fullmatch(name):  # a name no model can have: as one that does not exist
            raise UnknownModel(f"no model named {name[:64]!r} is available to you")
        return plat.models.get_aliases(tenant.tenant_id, name)

    @router.put("/api/v1/models/{name}/aliases/{alias}")
    def move_alias(
        name: str, alias: str, body: AliasRequest, plat: Platform = platform_dep, tenant: Caller = AS_ADMIN
    ) -> dict[str, Any]:
        """Moves an alias of the caller's own private model; rolling back is moving it to the previous version."""
        ModelRef.parse(f"{name[:200]}@{alias[:200]}")  # 400 InvalidModelName: no alias can be set by that name
        view = plat.models.get_model(tenant.tenant_id, name)  # 404 unless the caller may see it
        if view.get("visibility") != "private":
            raise InvalidInput(
                f"{name!r} is a public model; its aliases are moved by the platform operator", code="NotModelOwner"
            )
        return plat.models.move_alias(
            name, alias, body.version, by=f"tenant:{tenant.tenant_id}", owner=tenant.tenant_id
        )

    return router
