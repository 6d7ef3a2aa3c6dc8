"""Admission: turn a new blob (an upload event or an API call) into exactly one job, or one rejection."""

from __future__ import annotations

import logging
import posixpath
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from shared import telemetry
from shared.domain.blobpaths import parse_tenant_blob_path
from shared.domain.errors import (
    InvalidInput,
    NotFound,
    PlatformError,
    PreconditionFailed,
    QuotaExceeded,
    UnknownModel,
)
from shared.domain.events import terminal_event_id
from shared.domain.jobs import (
    INBOX_PREFIX,
    OUTBOX_PREFIX,
    PLAN,
    InboxPath,
    Job,
    JobStatus,
    ShardMessage,
    file_type_of,
    job_id_for,
    utcnow,
    validate_metadata,
)
from shared.domain.models import ModelCard, ModelRef
from shared.domain.tenants import container_for
from shared.ports import BlobInfo
from shared.services.dispatch import dispatch
from shared.services.outcomes import publish_terminal_event
from shared.services.platform import Platform
from shared.services.quotas import check_admission, check_slot_after_create
from shared.services.rollouts import assign as assign_rollout_arm

logger = logging.getLogger(__name__)

# The storage operations that commit a whole blob; others (PutBlock, AppendBlock...) are partial writes.
COMMITTED_WRITE_APIS = frozenset({"PutBlob", "PutBlockList", "CopyBlob", "FlushWithClose"})
FILENAME_PATTERN = re.compile(r"^[A-Za-z0-9._ ()-]{1,200}$")


def admit_blob_created(platform: Platform, tenant_id: str, blob_path: str, info: BlobInfo) -> Job | None:
    """Handles an upload into a tenant's inbox; None when the blob is not one the platform acts on."""
    try:
        tenant = platform.tenants.get_tenant(tenant_id)
    except NotFound:
        logger.warning("upload %s for unknown tenant %s ignored", blob_path, tenant_id)
        return None
    if not tenant.active:
        logger.warning("upload %s ignored: tenant %s is %s", blob_path, tenant_id, tenant.status)
        return None
    try:
        parse_tenant_blob_path(tenant_id, blob_path, field="the blob name")
        inbox = InboxPath.parse(blob_path)
    except InvalidInput as err:
        return _reject(platform, tenant_id, blob_path, info, model_key=blob_path, error=err)
    info = _with_properties(platform, tenant_id, blob_path, info)
    intent = platform.jobs.get_upload_intent(tenant_id, blob_path) or {}
    return admit(
        platform,
        tenant_id,
        blob_path,
        inbox.model,
        info,
        parameters=intent.get("parameters"),
        error_threshold=intent.get("errorThreshold"),
        metadata=intent.get("metadata"),
    )


def admit(
    platform: Platform,
    tenant_id: str,
    blob_path: str,
    ref: ModelRef,
    info: BlobInfo,
    *,
    parameters: dict[str, Any] | None = None,
    error_threshold: int | None = None,
    record_rejection: bool = True,
    metadata: dict[str, str] | None = None,
) -> Job:
    """Creates the job once (its id is derived from tenant, path, ETag and model version) and starts it.

    A big line-oriented file is planned first (a plan message); otherwise the job's one shard joins the
    backlog the dispatcher hands out fairly across tenants.

    An upload the platform cannot run becomes a rejected job with its event (`record_rejection`), or, for an
    API caller who is waiting for the answer, an InvalidInput raised.
    """
    # An upload's metadata was checked when its URL was made; the stored intent is checked again all the same.
    metadata = validate_metadata(metadata)
    if info.is_copy:  # before anything resolves or reads it
        if not record_rejection:
            raise copied_blob_refused()
        return _reject(
            platform,
            tenant_id,
            blob_path,
            info,
            model_key=str(ref),
            error=copied_blob_refused(),
            model=ref,
            metadata=metadata,
        )
    try:
        card = platform.models.resolve(tenant_id, ref)
    except UnknownModel as err:
        if not record_rejection:
            raise
        return _reject(
            platform, tenant_id, blob_path, info, model_key=str(ref), error=err, model=ref, metadata=metadata
        )
    problem = _check_input(platform, card, tenant_id, blob_path, info, parameters or {})
    if problem is not None:
        if not record_rejection:
            raise problem
        model_key = f"{card.name}@{card.version}"
        return _reject(
            platform, tenant_id, blob_path, info, model_key=model_key, error=problem, card=card, metadata=metadata
        )
    threshold = error_threshold if error_threshold is not None else card.error_threshold
    job_id = job_id_for(tenant_id, blob_path, info.etag, f"{card.name}@{card.version}", parameters)
    # An alias with a canary: the job id (from the stable version) picks the arm, the same on every replay.
    card, rollout = assign_rollout_arm(platform, tenant_id, ref, card, job_id)
    job = Job(
        tenant_id=tenant_id,
        job_id=job_id,
        rollout=rollout,
        model_name=card.name,
        model_version=card.version,
        blob_path=blob_path,
        etag=info.etag,
        file_type=file_type_of(blob_path),
        content_length=info.size,
        parameters=dict(parameters or {}),
        error_threshold=platform.default_error_threshold if threshold is None else threshold,
        shard_bytes=card.shard_bytes or platform.shard_bytes,
        region=platform.region,
        traceparent=telemetry.current_traceparent(),  # the admission's span: the job's one trace
        metadata=metadata,
    )
    over_quota = check_admission(platform, tenant_id, info.size)
    if over_quota is not None and not _exists(platform, tenant_id, job.job_id):  # a replay is no new job
        if not record_rejection:
            raise over_quota
        model_key = f"{card.name}@{card.version}"
        # Under the id the job would have had, so that a replay of the event finds the rejection.
        return _reject(
            platform,
            tenant_id,
            blob_path,
            info,
            model_key=model_key,
            error=over_quota,
            card=card,
            job_id=job.job_id,
            metadata=metadata,
        )
    shards = first_messages(job, job.shard_bytes)
    job.shard_count = 0 if shards[0].kind == PLAN else len(shards)
    if not platform.jobs.create_job(job):
        logger.info("job %s exists; replayed event ignored", job.job_id, extra=_ids(job))
        job = platform.jobs.get_job(tenant_id, job.job_id)
    else:
        lost_slot = check_slot_after_create(platform, job)
        if lost_slot is not None:  # another admission took the last job slot at the same instant
            return _reject_created(platform, job, lost_slot, raise_it=not record_rejection)
        logger.info("job %s queued: %s over %s", job.job_id, card.name, blob_path, extra=_ids(job))
        if job.shard_count == 0:
            platform.queue.enqueue(shards)  # planning is one quick streaming pass: not rationed
    if job.shard_count and not job.terminal:
        dispatch(platform)  # on a replay too: it hands out what a crash after the create left waiting
    return job


def copied_blob_refused() -> InvalidInput:
    """A blob a Copy Blob wrote: its bytes may be another tenant's or the platform's, named by URL, not uploaded."""
    return InvalidInput(
        "the blob was written by a copy operation (x-ms-copy-source), not uploaded: the platform only runs jobs "
        "over, and registers models from, files you upload yourself",
        code="CopiedBlobRefused",
    )


def _with_properties(platform: Platform, tenant_id: str, blob_path: str, info: BlobInfo) -> BlobInfo:
    """The event's BlobInfo with the blob's copy properties, which a BlobCreated event does not carry.

    A blob gone or changed since the event keeps the event's facts: the shard run reports it (InputChanged).
    """
    try:
        current = platform.blobs.get_info(container_for(tenant_id), blob_path)
    except NotFound:
        return info
    if not current.is_copy:
        return info
    return BlobInfo(
        info.name,
        info.etag,
        info.size,
        info.content_type,
        copy_id=current.copy_id,
        copy_source=current.copy_source,
        copy_status=current.copy_status,
    )


# Archives and images are read whole (entry by entry); only line-oriented files are split into byte ranges.
SPLITTABLE_TYPES = frozenset({".jsonl", ".csv", ".txt"})


def first_messages(job: Job, shard_bytes: int) -> list[ShardMessage]:
    """A small file is one shard; a big line-oriented file first gets a plan message (see services.planning)."""
    if job.content_length > shard_bytes and job.file_type in SPLITTABLE_TYPES:
        return [ShardMessage(job.tenant_id, job.job_id, 0, 0, kind=PLAN, traceparent=job.traceparent)]
    return [job.shard_message(0)]


def _check_input(
    platform: Platform, card: ModelCard, tenant_id: str, blob_path: str, info: BlobInfo, parameters: dict[str, Any]
) -> InvalidInput | None:
    file_type = file_type_of(blob_path)
    if file_type not in card.input_types:
        accepted = ", ".join(card.input_types) or "none"
        return InvalidInput(
            f"model {card.name} takes {accepted} files, not {file_type or 'files without an extension'}",
            code="UnsupportedFileType",
        )
    if info.size == 0:
        return InvalidInput("the file is empty", code="EmptyInput")
    if info.size > platform.max_upload_bytes:
        return InvalidInput(
            f"the file is {info.size} bytes; the limit is {platform.max_upload_bytes}", code="FileTooLarge"
        )
    try:
        card.check_parameters(parameters)
    except InvalidInput as err:
        return err
    if file_type not in SPLITTABLE_TYPES:
        return _check_unsplittable(platform, tenant_id, blob_path, file_type, info)
    return None


def _check_unsplittable(
    platform: Platform, tenant_id: str, blob_path: str, file_type: str, info: BlobInfo
) -> InvalidInput | None:
    """An archive or image is one shard, so it must fit what one shard may take (the shard timeout)."""
    limit = platform.max_archive_bytes
    if info.size > limit:
        return InvalidInput(
            f"the file is {info.size} bytes; a file that cannot be split (.zip, images) may be at most {limit} "
            "bytes: split it into several uploads",
            code="ArchiveTooLarge",
        )
    if file_type != ".zip":
        from shared.inference.images import MAX_IMAGE_BYTES

        if info.size > MAX_IMAGE_BYTES:  # what the reader would refuse, refused before any work
            return InvalidInput(
                f"the image is {info.size} bytes; an image may be at most {MAX_IMAGE_BYTES} bytes", code="FileTooLarge"
            )
        return None
    try:
        entries = _zip_entry_count(platform, tenant_id, blob_path, info)
    except (NotFound, PreconditionFailed):
        return None  # overwritten or deleted since the event: the shard run reports it (InputChanged)
    if entries is not None and entries > platform.max_archive_entries:
        return InvalidInput(
            f"the zip has {entries} entries; at most {platform.max_archive_entries} are accepted in one upload: "
            "split it into several zips",
            code="ArchiveTooLarge",
        )
    return None


ZIP_END = b"PK\x05\x06"
ZIP64_LOCATOR = b"PK\x06\x07"
ZIP64_END = b"PK\x06\x06"
ZIP_TAIL_BYTES = 22 + 65535  # the end record and the longest comment it may carry


def _zip_entry_count(platform: Platform, tenant_id: str, blob_path: str, info: BlobInfo) -> int | None:
    """The entry count from the zip's end-of-central-directory record (a ranged read of the tail).

    None when the file carries no such record: the reader then refuses it as a corrupt archive.
    """
    container = container_for(tenant_id)
    start = max(0, info.size - ZIP_TAIL_BYTES)
    tail = b"".join(platform.blobs.iter_chunks(container, blob_path, start=start, etag=info.etag))
    at = tail.rfind(ZIP_END)
    if at < 0 or len(tail) < at + 22:
        return None
    entries = int.from_bytes(tail[at + 10 : at + 12], "little")
    if entries != 0xFFFF:
        return entries
    locator = at - 20
    if locator < 0 or tail[locator : locator + 4] != ZIP64_LOCATOR:
        return None
    end64 = int.from_bytes(tail[locator + 8 : locator + 16], "little")
    record = b"".join(platform.blobs.iter_chunks(container, blob_path, start=end64, end=end64 + 56, etag=info.etag))
    if record[:4] != ZIP64_END or len(record) < 40:
        return None
    return int.from_bytes(record[32:40], "little")


def _reject(
    platform: Platform,
    tenant_id: str,
    blob_path: str,
    info: BlobInfo,
    *,
    model_key: str,
    error: PlatformError,
    model: ModelRef | None = None,
    card: ModelCard | None = None,
    job_id: str | None = None,
    metadata: dict[str, str] | None = None,
) -> Job:
    job_id = job_id or job_id_for(tenant_id, blob_path, info.etag, model_key)
    now = utcnow()
    job = Job(
        tenant_id=tenant_id,
        job_id=job_id,
        model_name=card.name if card else (model.name if model else ""),
        model_version=card.version if card else None,
        blob_path=blob_path,
        etag=info.etag,
        status=JobStatus.REJECTED,
        file_type=file_type_of(blob_path),
        content_length=info.size,
        completed_at=now,
        shard_count=0,
        error={"code": error.code, "message": error.message},
        event_id=terminal_event_id(job_id),
        region=platform.region,
        metadata=dict(metadata or {}),
    )
    if platform.jobs.create_job(job):
        logger.info("upload %s rejected: %s", blob_path, error.message, extra=_ids(job))
        publish_terminal_event(platform, job)
        return job
    return platform.jobs.get_job(tenant_id, job_id)


def create_upload(
    platform: Platform,
    tenant_id: str,
    model: str,
    filename: str,
    *,
    parameters: dict[str, Any] | None = None,
    error_threshold: int | None = None,
    metadata: object = None,
) -> dict[str, Any]:
    """A short-lived, write-only URL for one new blob in the caller's inbox."""
    pairs = validate_metadata(metadata)
    ref = ModelRef.parse(model)
    card = platform.models.resolve(tenant_id, ref)
    card.check_parameters(parameters or {})
    if not FILENAME_PATTERN.fullmatch(filename or "") or filename in {".", ".."}:
        raise InvalidInput(
            "filename must be 1-200 characters of letters, digits, space, '.', '_', '-', '(' or ')'",
            code="InvalidFilename",
        )
    file_type = file_type_of(filename)
    if file_type not in card.input_types:
        raise InvalidInput(
            f"model {card.name} takes {', '.join(card.input_types)} files, not {file_type or 'no extension'}",
            code="UnsupportedFileType",
        )
    blob_path = posixpath.join(INBOX_PREFIX + str(ref), uuid.uuid4().hex, filename)
    if parameters or error_threshold is not None or pairs:
        # What the blob-created admission reads for this path: the job gets the upload's choices.
        intent = {"parameters": parameters or {}, "errorThreshold": error_threshold, "metadata": pairs}
        platform.jobs.put_upload_intent(tenant_id, blob_path, intent)
    url = platform.blobs.upload_url(container_for(tenant_id), blob_path, expires_in=platform.upload_ttl)
    expires_at = datetime.now(UTC) + platform.upload_ttl
    return {
        "uploadUrl": url,
        "blobPath": blob_path,
        "expiresAt": expires_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "headers": {"x-ms-blob-type": "BlockBlob"},
    }


def submit_job(
    platform: Platform,
    tenant_id: str,
    model: str,
    blob_path: str,
    *,
    parameters: dict[str, Any] | None = None,
    error_threshold: int | None = None,
    metadata: object = None,
) -> Job:
    """Runs a job over a blob already in the caller's container (POST /v1/jobs)."""
    pairs = validate_metadata(metadata)
    ref = ModelRef.parse(model)
    blob = parse_tenant_blob_path(tenant_id, blob_path)
    if blob.name.startswith(OUTBOX_PREFIX):
        raise InvalidInput("blobPath must name a blob in your container outside outbox/", code="InvalidBlobPath")
    try:
        info = platform.blobs.get_info(blob.container, blob.name)
    except NotFound:
        raise InvalidInput(f"no blob {blob_path!r} in your container", code="BlobNotFound") from None
    return admit(
        platform,
        tenant_id,
        blob_path,
        ref,
        info,
        parameters=parameters,
        error_threshold=error_threshold,
        record_rejection=False,
        metadata=pairs,
    )


def _reject_created(platform: Platform, job: Job, error: QuotaExceeded, *, raise_it: bool) -> Job:
    """Rejects a job that was created but lost its slot (before any shard of it was queued by this call).

    An API caller gets the error (429) and the job stays rejected in the listing; an upload gets its event.
    """
    for _ in range(10):
        if job.terminal:  # another process's dispatcher ran it to its end meanwhile: it counts as run
            return job
        job.status = JobStatus.REJECTED
        job.error = {"code": error.code, "message": error.message}
        job.completed_at = job.updated_at = utcnow()
        job.event_id = terminal_event_id(job.job_id)
        try:
            job = platform.jobs.replace_job(job)
            break
        except PreconditionFailed:
            job = platform.jobs.get_job(job.tenant_id, job.job_id)
    else:
        raise PreconditionFailed(f"job {job.job_id} kept changing while it was rejected")
    logger.info("job %s rejected: %s", job.job_id, error.message, extra=_ids(job))
    job = publish_terminal_event(platform, job)
    if raise_it:
        raise error
    return job


def _exists(platform: Platform, tenant_id: str, job_id: str) -> bool:
    try:
        platform.jobs.get_job(tenant_id, job_id)
    except NotFound:
        return False
    return True


def _ids(job: Job) -> dict[str, str]:
    return {"tenant_id": job.tenant_id, "job_id": job.job_id}
