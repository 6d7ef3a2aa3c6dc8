"""The ports and policies a use case needs, handed over as one object by the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from shared.ports import (
    BlobStore,
    EndpointValidator,
    EventPublisher,
    JobQueue,
    JobStore,
    ModelRegistry,
    ResultStore,
    SubscriptionStore,
    TenantStore,
)


@dataclass
class Platform:
    blobs: BlobStore
    tenants: TenantStore
    jobs: JobStore
    results: ResultStore
    subscriptions: SubscriptionStore
    queue: JobQueue
    events: EventPublisher
    models: ModelRegistry
    validator: EndpointValidator
    api_url: str
    batch_size: int = 1000
    max_upload_bytes: int = 2 * 1024**3
    upload_ttl: timedelta = timedelta(minutes=15)
    # Files bigger than this are planned into byte-range shards that workers run in parallel.
    shard_bytes: int = 32 * 1024 * 1024
    default_error_threshold: int = -1
