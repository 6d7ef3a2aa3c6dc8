"""Turns new blobs in tenants' inboxes into BlobCreated events for the ingest function (the system topic's part)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.localhost.functions_host import blob_created_event
from shared.ports import BlobStore

logger = logging.getLogger(__name__)


class InboxWatcher:
    def __init__(
        self,
        blobs: BlobStore,
        deliver: Callable[[Any], None],
        *,
        account: str,
        blob_endpoint: str,
        interval: float = 0.25,
    ) -> None:
        self._blobs = blobs
        self._deliver = deliver
        self._account = account
        self._endpoint = blob_endpoint.rstrip("/")
        self._interval = interval
        self._seen: dict[tuple[str, str], str] = {}
        self._sequencer = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inbox-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.scan()
            except Exception:
                logger.exception("inbox scan failed; retrying")
            self._stop.wait(max(0.0, self._interval - (time.monotonic() - started)))

    def scan(self) -> int:
        """One pass over every tenant inbox; returns how many events it delivered."""
        delivered = 0
        for container in self._blobs.list_containers(prefix="tenant-"):
            for blob in self._blobs.list_blobs(container, prefix="inbox/"):
                key = (container, blob.name)
                if self._seen.get(key) == blob.etag:
                    continue
                self._sequencer += 1
                event = blob_created_event(
                    account=self._account,
                    container=container,
                    blob=blob.name,
                    etag=blob.etag,
                    size=blob.size,
                    content_type=blob.content_type,
                    url=f"{self._endpoint}/{container}/{blob.name}",
                    sequencer=self._sequencer,
                    # As the storage system topic names the operation: a blob a Copy Blob wrote is "CopyBlob".
                    api="CopyBlob" if blob.is_copy else "PutBlob",
                )
                try:
                    self._deliver(event)
                except Exception:
                    # Event Grid retries a failed delivery; so do we, on the next pass.
                    logger.exception("ingest of %s/%s failed; will retry", container, blob.name)
                    continue
                self._seen[key] = blob.etag
                delivered += 1
        return delivered
