"""The ports and policies a use case needs, handed over as one object by the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from shared.domain.usage import Quota
from shared.ports import (
    AuditLog,
    BlobStore,
    DeadLetterReader,
    EndpointValidator,
    EntraTenantMap,
    EventLog,
    EventPublisher,
    EventRouting,
    JobQueue,
    JobStore,
    ModelRegistry,
    ResultStore,
    SubscriptionStore,
    TenantDirectory,
    TenantStore,
    Trainer,
    UsageStore,
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
    identities: EntraTenantMap
    audit: AuditLog
    usage: UsageStore
    # Events (contract "Event delivery"): what was published, how subscriptions become deliveries, dead letters.
    event_log: EventLog
    routing: EventRouting
    dead_letters: DeadLetterReader
    api_url: str
    batch_size: int = 1000
    max_upload_bytes: int = 2 * 1024**3
    upload_ttl: timedelta = timedelta(minutes=15)
    # Files bigger than this are planned into byte-range shards that workers run in parallel.
    shard_bytes: int = 32 * 1024 * 1024
    default_error_threshold: int = -1
    # Fair share (services.dispatch): shards in flight per tenant and over the whole fleet.
    tenant_max_shards_in_flight: int = 64
    max_shards_in_flight: int = 1024
    # A running shard touches its job this often so that the sweeper never takes it for stalled, and for at
    # most shard_timeout_seconds (the Functions host's functionTimeout: no shard outlives it).
    heartbeat_seconds: float = 200.0
    shard_timeout_seconds: float = 600.0
    # How often a running shard's heartbeat reads its job to see a cancel (a point read, 1 RU): the shard stops
    # at its next batch after that; the job itself is touched only every heartbeat_seconds.
    cancel_poll_seconds: float = 5.0
    # Archives and single images are one shard each (they cannot be cut into byte ranges): bounded so that
    # one always finishes well inside the shard timeout.
    max_archive_bytes: int = 256 * 1024 * 1024
    max_archive_entries: int = 50_000
    # Each tenant's limits unless the operator set its own (services.quotas); 0: no limit.
    default_quota: Quota = field(default_factory=Quota)
    # Regional stamps: the region this stamp serves (recorded on every job and event it makes) and the global
    # tenant directory (None: no directory, every tenant is served here, as in the unit tests).
    region: str = "local"
    directory: TenantDirectory | None = None
    # Callback subscriptions (Logic Apps): the hosts a callback URL may name (a host or a ".suffix"); empty: any
    # host the egress policy allows (development only: production requires the list, shared.config).
    callback_hosts: tuple[str, ...] = ()
    # GET /api/health/ready (services.readiness): a probe per dependency, by name ("blob", "cosmos", "queue").
    readiness: dict[str, Callable[[], object]] = field(default_factory=dict)
    # Retraining (services.retraining): locally the models' own builders, in Azure Azure ML jobs; None: none.
    trainer: Trainer | None = None
