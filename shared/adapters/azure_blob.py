"""BlobStore on Azure Blob Storage (Azurite locally): streaming reads and writes, one-blob upload SAS URLs."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobSasPermissions, BlobServiceClient, ContentSettings, generate_blob_sas

from shared.domain.errors import NotFound, PreconditionFailed
from shared.ports import BlobInfo

# A range read per 16 MiB: measured on Azurite, 4 MiB ranges cost the server 3x the CPU of 16 MiB ones per byte
# (and each range is a billed transaction in Azure).
CHUNK_BYTES = 16 * 1024 * 1024
# Chunks fetched ahead of the reader: the next range downloads while this one is parsed (memory: this many chunks).
READ_AHEAD_CHUNKS = 2
_END = object()


def _plain(etag: str | None) -> str:
    return (etag or "").strip('"')


def _quoted(etag: str) -> str:
    return f'"{_plain(etag)}"'


def loopback_retry(connection_string: str) -> dict[str, Any]:
    """For Azurite (a loopback endpoint): retry every second for half a minute instead of the SDK's 15 s, 18 s,
    24 s back-off, so that after an Azurite restart (the local host's supervisor) work resumes within a second of
    it being back. Real accounts keep the SDK's policy."""
    from azure.storage.blob import LinearRetry

    from shared.config import is_loopback_url

    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    endpoints = [v for k, v in parts.items() if k.endswith("Endpoint")]
    if endpoints and all(is_loopback_url(e) for e in endpoints):
        return {"retry_policy": LinearRetry(backoff=1, random_jitter_range=0, retry_total=30)}
    return {}


class AzureBlobStore:
    def __init__(self, service: BlobServiceClient, *, account_key: str | None = None) -> None:
        self._service = service
        self._account_key = account_key
        self._delegation: tuple[datetime, Any] | None = None
        self._lock = threading.Lock()
        self._known_containers: set[str] = set()

    @classmethod
    def from_connection_string(cls, connection_string: str) -> AzureBlobStore:
        service = BlobServiceClient.from_connection_string(
            connection_string,
            max_single_get_size=CHUNK_BYTES,
            max_chunk_get_size=CHUNK_BYTES,
            **loopback_retry(connection_string),
        )
        parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
        return cls(service, account_key=parts.get("AccountKey"))

    @classmethod
    def from_account(cls, account_name: str, credential: Any) -> AzureBlobStore:
        service = BlobServiceClient(
            f"https://{account_name}.blob.core.windows.net",
            credential=credential,
            max_single_get_size=CHUNK_BYTES,
            max_chunk_get_size=CHUNK_BYTES,
        )
        return cls(service)

    def ensure_container(self, container: str) -> None:
        if container in self._known_containers:
            return
        with contextlib.suppress(ResourceExistsError):
            self._service.create_container(container)
        self._known_containers.add(container)

    def list_containers(self, *, prefix: str = "") -> Iterator[str]:
        for item in self._service.list_containers(name_starts_with=prefix or None):
            yield item.name

    def list_blobs(self, container: str, *, prefix: str = "") -> Iterator[BlobInfo]:
        client = self._service.get_container_client(container)
        try:
            for blob in client.list_blobs(name_starts_with=prefix or None, include=["copy"]):
                yield _info(blob.name, blob)
        except ResourceNotFoundError:
            return

    def get_info(self, container: str, path: str) -> BlobInfo:
        try:
            props = self._service.get_blob_client(container, path).get_blob_properties()
        except ResourceNotFoundError:
            raise NotFound(f"blob {container}/{path} not found") from None
        return _info(path, props)

    def read_bytes(self, container: str, path: str) -> bytes:
        try:
            return self._service.get_blob_client(container, path).download_blob().readall()
        except ResourceNotFoundError:
            raise NotFound(f"blob {container}/{path} not found") from None

    def iter_chunks(
        self, container: str, path: str, *, start: int = 0, end: int | None = None, etag: str | None = None
    ) -> Iterator[bytes]:
        if end is not None and end <= start:
            return
        blob = self._service.get_blob_client(container, path)
        conditions: dict[str, Any] = {}
        if etag:
            conditions = {"etag": _quoted(etag), "match_condition": MatchConditions.IfNotModified}
        try:
            stream = blob.download_blob(offset=start, length=None if end is None else end - start, **conditions)
            yield from _read_ahead(stream.chunks())
        except ResourceNotFoundError:
            raise NotFound(f"blob {container}/{path} not found") from None
        except ResourceModifiedError as err:
            raise PreconditionFailed(f"blob {container}/{path} changed since its job began") from err

    def write_bytes(self, container: str, path: str, data: bytes, *, content_type: str | None = None) -> str:
        return self.write_chunks(container, path, [data], content_type=content_type)

    def write_chunks(
        self, container: str, path: str, chunks: Iterable[bytes], *, content_type: str | None = None
    ) -> str:
        self.ensure_container(container)
        settings = ContentSettings(content_type=content_type) if content_type else None
        result = self._service.get_blob_client(container, path).upload_blob(
            iter(chunks), overwrite=True, content_settings=settings, blob_type="BlockBlob"
        )
        return _plain(result.get("etag"))

    def replace_bytes(
        self, container: str, path: str, data: bytes, *, etag: str, content_type: str | None = None
    ) -> str:
        settings = ContentSettings(content_type=content_type) if content_type else None
        try:
            result = self._service.get_blob_client(container, path).upload_blob(
                data,
                overwrite=True,
                content_settings=settings,
                blob_type="BlockBlob",
                etag=_quoted(etag),
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError) as err:  # 412 also when it is gone
            raise PreconditionFailed(f"blob {container}/{path} changed since it was read") from err
        return _plain(result.get("etag"))

    def probe(self) -> None:
        """Readiness: one page of one container from the account (raises when it cannot be reached)."""
        next(iter(self._service.list_containers(results_per_page=1).by_page()), None)

    def stage_block(self, container: str, path: str, block_id: str, data: bytes) -> None:
        self.ensure_container(container)
        self._service.get_blob_client(container, path).stage_block(block_id, data, length=len(data))

    def commit_staged(self, container: str, path: str, *, content_type: str | None = None) -> int:
        self.ensure_container(container)
        blob = self._service.get_blob_client(container, path)
        try:
            committed, uncommitted = blob.get_block_list("all")
        except ResourceNotFoundError:
            committed, uncommitted = [], []
        ids = sorted({block.id for block in committed} | {block.id for block in uncommitted})
        settings = ContentSettings(content_type=content_type) if content_type else None
        blob.commit_block_list([BlobBlock(block_id) for block_id in ids], content_settings=settings)
        return len(ids)

    def upload_url(self, container: str, path: str, *, expires_in: timedelta) -> str:
        """A blob SAS (sr=b: this one blob) with create and write only: no read, list, delete, tag or move.

        Write is needed beside create because an upload over the SDK's single-put size (64 MiB) is Put Block +
        Put Block List, which a create-only SAS refuses (Azurite: BlockBlob_StageBlock needs `w`; Azure: create
        is "write a new blob", write "create or write content ... or block list", Create Service SAS,
        https://learn.microsoft.com/rest/api/storageservices/create-service-sas). So the holder may overwrite
        its own upload (a new ETag: a new job), and may name it as a copy destination: admission refuses copies.
        HTTPS only whenever the endpoint is HTTPS (everywhere but Azurite).
        """
        now = datetime.now(UTC)
        expiry = now + expires_in
        permission = BlobSasPermissions(create=True, write=True)
        account = self._service.account_name or ""
        protocol = "https" if self._service.url.startswith("https://") else None
        if self._account_key:
            token = generate_blob_sas(
                account,
                container,
                path,
                account_key=self._account_key,
                permission=permission,
                expiry=expiry,
                start=now - timedelta(minutes=1),
                protocol=protocol,
            )
        else:
            token = generate_blob_sas(
                account,
                container,
                path,
                user_delegation_key=self._delegation_key(now, expiry),
                permission=permission,
                expiry=expiry,
                start=now - timedelta(minutes=1),
                protocol=protocol,
            )
        return f"{self._service.get_blob_client(container, path).url}?{token}"

    def _delegation_key(self, now: datetime, needed_until: datetime) -> Any:
        """A user delegation key (Entra ID, no account key), reused while it outlives the SAS it signs."""
        with self._lock:
            if self._delegation and self._delegation[0] > needed_until:
                return self._delegation[1]
            expiry = now + timedelta(hours=6)
            key = self._service.get_user_delegation_key(now - timedelta(minutes=1), expiry)
            self._delegation = (expiry, key)
            return key


def _info(name: str, props: Any) -> BlobInfo:
    """A BlobInfo from the SDK's BlobProperties (of Get Blob Properties or of a listing with include=copy)."""
    copy = props.copy
    return BlobInfo(
        name,
        _plain(props.etag),
        props.size,
        props.content_settings.content_type,
        copy_id=copy.id or None,
        copy_source=copy.source or None,
        copy_status=str(copy.status) if copy.status else None,
    )


def _read_ahead(chunks: Iterator[bytes], depth: int = READ_AHEAD_CHUNKS) -> Iterator[bytes]:
    """Yields `chunks` while a thread downloads the next ones, so a shard's parsing never waits on the network.

    Errors reach the reader at the chunk they happened on; a reader that stops early stops the thread.
    """
    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def pump() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        ready.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_END)
        except BaseException as err:  # handed to the reader, which raises it in its own thread
            ready.put(err)

    thread = threading.Thread(target=pump, name="blob-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
