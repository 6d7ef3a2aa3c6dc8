"""DeadLetterReader over the dead-letter container Event Grid (or the local broker) writes, in Event Grid's layout."""

from __future__ import annotations

from typing import Any

from shared.domain.delivery import DeadLetter
from shared.domain.events import Subscription


class BlobDeadLetterReader:
    """Skeleton: filled in by the event API work. `blobs` is the platform account's BlobStore."""

    def __init__(self, blobs: Any, *, container: str, domain: str | None = None) -> None:
        self._blobs = blobs
        self._container = container
        self._domain = domain

    def list_dead_letters(
        self, subscription: Subscription, *, limit: int = 100, continuation: str | None = None
    ) -> tuple[list[DeadLetter], str | None]:
        raise NotImplementedError
