"""Model registry routes beyond listing: tenant-private registration, alias moves (with their history) and rollouts."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from shared.api.auth import AS_ADMIN, AS_READER, Caller
from shared.api.schemas import AUTHED, AliasesView, ModelView, errors
from shared.domain.blobpaths import MAX_BLOB_NAME_CHARS, parse_tenant_blob_path
from shared.domain.errors import InvalidInput, NotFound, PreconditionFailed, UnknownModel
from shared.domain.models import MODEL_NAME_PATTERN, SELECTOR_PATTERN, ModelRef
from shared.services.ingest import copied_blob_refused
from shared.services.platform import Platform
from shared.services.rollouts import DEFAULT_EVIDENCE, present, start_rollout

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


class GatesRequest(BaseModel):
    """Thresholds a canary must keep; a gate crossed rolls it back at once (the card's "rollout.gates" apply
    too, overridden by these)."""

    model_config = ConfigDict(extra="forbid")
    maxErrorRate: float | None = Field(default=None, ge=0, le=1, description="failed records / records")
    maxSecondsPerRecord: float | None = Field(default=None, ge=0, le=3600, description="model seconds per record")
    maxDriftShare: float | None = Field(default=None, ge=0, le=1, description="drifted jobs / jobs with drift")
    noDrift: bool | None = Field(default=None, description="true: any drifted canary job rolls back")
    minAgreement: float | None = Field(
        default=None, ge=0, le=1, description="label agreement (cosine for embeddings) with the stable version"
    )


class EvidenceRequest(BaseModel):
    """What promotes the canary once every gate has passed: this many canary jobs and records."""

    model_config = ConfigDict(extra="forbid")
    jobs: int = Field(default=DEFAULT_EVIDENCE["jobs"], ge=1, le=100_000)
    records: int = Field(default=DEFAULT_EVIDENCE["records"], ge=0, le=10**12)


class CanaryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=64, pattern=SELECTOR_PATTERN.pattern)
    percent: int = Field(ge=1, le=99, description="share of the alias's jobs that run the canary, by job id")
    gates: GatesRequest | None = None
    evidence: EvidenceRequest | None = None


class ShadowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=64, pattern=SELECTOR_PATTERN.pattern)


class AliasRequest(BaseModel):
    """`version` moves the alias (ending its rollout); `canary` and/or `shadow` set its whole rollout (a new
    one: evidence from zero); `"canary": null, "shadow": null` end it."""

    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(default=None, min_length=1, max_length=64, pattern=SELECTOR_PATTERN.pattern)
    canary: CanaryRequest | None = None
    shadow: ShadowRequest | None = None


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

    @router.post(
        "/api/v1/models",
        status_code=201,
        response_model=ModelView,
        response_model_exclude_unset=True,
        responses=errors(*AUTHED, 409),
    )
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

    @router.get(
        "/api/v1/models/{name}/aliases",
        response_model=AliasesView,
        response_model_exclude_unset=True,
        responses=errors(*AUTHED, 404),
    )
    def get_aliases(name: str, plat: Platform = platform_dep, tenant: Caller = AS_READER) -> dict[str, Any]:
        """The model's aliases, every move of them (who, when, and a rollout decision's figures) and each
        alias's rollout with its evidence so far and its gates' verdicts."""
        if not MODEL_NAME_PATTERN.fullmatch(name):  # a name no model can have: as one that does not exist
            raise UnknownModel(f"no model named {name[:64]!r} is available to you")
        return present(plat.models.get_aliases(tenant.tenant_id, name))

    @router.put(
        "/api/v1/models/{name}/aliases/{alias}",
        response_model=AliasesView,
        response_model_exclude_unset=True,
        responses=errors(*AUTHED, 404, 409),
    )
    def move_alias(
        name: str, alias: str, body: AliasRequest, plat: Platform = platform_dep, tenant: Caller = AS_ADMIN
    ) -> dict[str, Any]:
        """Moves an alias of the caller's own private model (rolling back is moving it to the previous version),
        and/or sets its rollout: a canary share of jobs with gates, a shadow version compared on records."""
        ModelRef.parse(f"{name[:200]}@{alias[:200]}")  # 400 InvalidModelName: no alias can be set by that name
        view = plat.models.get_model(tenant.tenant_id, name)  # 404 unless the caller may see it
        if view.get("visibility") != "private":
            raise InvalidInput(
                f"{name!r} is a public model; its aliases are moved by the platform operator", code="NotModelOwner"
            )
        rollout = {"canary", "shadow"} & body.model_fields_set
        if body.version is None and not rollout:
            raise InvalidInput("send version, canary or shadow", code="InvalidRollout")
        by = f"tenant:{tenant.tenant_id}"
        answer = (
            plat.models.move_alias(name, alias, body.version, by=by, owner=tenant.tenant_id) if body.version else {}
        )
        if not rollout:
            return present(answer)
        return start_rollout(
            plat,
            owner=tenant.tenant_id,
            name=name,
            alias=alias,
            canary=body.canary.model_dump(exclude_none=True) if body.canary else None,
            shadow=body.shadow.model_dump() if body.shadow else None,
            by=by,
        )

    return router
