"""Trigger: Event Grid BlobCreated from the storage account -> admit the upload as a job."""

from __future__ import annotations

import logging
from typing import Any

import azure.functions as func

from shared import telemetry
from shared.bootstrap import get_platform
from shared.domain.tenants import tenant_from_container
from shared.ports import BlobInfo
from shared.services.ingest import COMMITTED_WRITE_APIS, admit_blob_created

logger = logging.getLogger(__name__)
bp = func.Blueprint()  # type: ignore[no-untyped-call]
SUBJECT_PREFIX = "/blobServices/default/containers/"


def parse_blob_created(subject: str, data: dict[str, Any]) -> tuple[str, BlobInfo] | None:
    """(tenant, blob) from a BlobCreated event, or None for events the platform does not act on."""
    if data.get("api") not in COMMITTED_WRITE_APIS:
        return None
    container, sep, blob_path = subject.removeprefix(SUBJECT_PREFIX).partition("/blobs/")
    if not subject.startswith(SUBJECT_PREFIX) or not sep or not blob_path.startswith("inbox/"):
        return None
    tenant_id = tenant_from_container(container)
    if tenant_id is None:
        return None
    info = BlobInfo(
        name=blob_path,
        etag=str(data.get("eTag") or "").strip('"'),
        size=int(data.get("contentLength") or 0),
        content_type=data.get("contentType"),
    )
    return tenant_id, info


@bp.function_name("ingest_blob")
@bp.event_grid_trigger(arg_name="event")
def ingest_blob(event: func.EventGridEvent) -> None:
    if event.event_type != "Microsoft.Storage.BlobCreated":
        return
    parsed = parse_blob_created(event.subject, event.get_json())
    if parsed is None:
        logger.debug("event %s is not a committed inbox upload; ignored", event.id)
        return
    tenant_id, info = parsed
    # The root of the job's trace: its context is stored on the job and carried by every shard message.
    with telemetry.span(
        "admit upload",
        kind="consumer",
        attributes={
            "messaging.system": telemetry.EVENTS_SYSTEM,
            "messaging.operation.type": "process",
            "messaging.message.id": event.id,
            telemetry.TENANT_ID: tenant_id,
            "aiaas.blob.path": info.name,
        },
    ) as span:
        job = admit_blob_created(get_platform(), tenant_id, info.name, info)
        if job is not None:
            span.set_attributes({**telemetry.job_attributes(job), "aiaas.job.status": job.status.value})
