"""The ports: what the services need from the outside world, named by role; adapters implement them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from shared.domain.audit import AuditEntry
from shared.domain.delivery import DeadLetter
from shared.domain.events import PlatformEvent, Subscription
from shared.domain.jobs import Job, ResultPage, ShardMessage
from shared.domain.models import ModelCard, ModelRef
from shared.domain.regions import TenantHome
from shared.domain.tenants import Tenant
from shared.domain.usage import TenantActivity, UsageRecord


@dataclass(frozen=True)
class BlobInfo:
    name: str
    etag: str
    size: int
    content_type: str | None = None
    # The blob's copy properties (x-ms-copy-id/-source/-status): set when a Copy Blob (or Copy Blob From URL)
    # wrote it, so not the tenant's own upload; None when unknown (an event) or not a copy.
    copy_id: str | None = None
    copy_source: str | None = None
    copy_status: str | None = None

    @property
    def is_copy(self) -> bool:
        return bool(self.copy_id or self.copy_source or self.copy_status)


@dataclass(frozen=True)
class JobBacklog:
    """What the dispatcher needs of one schedulable job (a projection, not the whole document)."""

    tenant_id: str
    job_id: str
    created_at: str
    shard_count: int
    dispatched: int
    done: int

    @property
    def waiting(self) -> int:
        return max(0, self.shard_count - self.dispatched)

    @property
    def in_flight(self) -> int:
        return max(0, self.dispatched - self.done)


class BlobStore(Protocol):
    def ensure_container(self, container: str) -> None: ...

    def list_containers(self, *, prefix: str = "") -> Iterator[str]: ...

    def list_blobs(self, container: str, *, prefix: str = "") -> Iterator[BlobInfo]: ...

    def get_info(self, container: str, path: str) -> BlobInfo:
        """Raises NotFound."""
        ...

    def read_bytes(self, container: str, path: str) -> bytes:
        """Raises NotFound."""
        ...

    def iter_chunks(
        self, container: str, path: str, *, start: int = 0, end: int | None = None, etag: str | None = None
    ) -> Iterator[bytes]:
        """Streams [start, end) in chunks; with `etag`, raises PreconditionFailed if the blob changed."""
        ...

    def write_bytes(self, container: str, path: str, data: bytes, *, content_type: str | None = None) -> str:
        """Writes (overwrites) a blob and returns its ETag."""
        ...

    def write_chunks(
        self, container: str, path: str, chunks: Iterable[bytes], *, content_type: str | None = None
    ) -> str:
        """Writes a blob from a stream of chunks without holding it whole; returns its ETag."""
        ...

    def replace_bytes(
        self, container: str, path: str, data: bytes, *, etag: str, content_type: str | None = None
    ) -> str:
        """Overwrites the blob only while its ETag is still `etag` (If-Match); returns the new ETag.

        Raises PreconditionFailed when another writer changed it first, or deleted it (HTTP 412, as Azure and
        Azurite answer an If-Match on a missing blob).
        """
        ...

    def stage_block(self, container: str, path: str, block_id: str, data: bytes) -> None:
        """Stages one block of a block blob (not visible until committed); the same id overwrites."""
        ...

    def commit_staged(self, container: str, path: str, *, content_type: str | None = None) -> int:
        """Commits every block of the blob, staged or committed, in the order of their ids; returns the count.

        Blocks staged by many writers (one per result page) become one blob without copying a byte; a
        repeated commit keeps what an earlier one committed.
        """
        ...

    def upload_url(self, container: str, path: str, *, expires_in: timedelta) -> str:
        """A URL that lets its holder create this one blob, and nothing else, until it expires."""
        ...


class TenantStore(Protocol):
    def create_tenant(self, tenant: Tenant) -> None:
        """Raises AlreadyExists."""
        ...

    def get_tenant(self, tenant_id: str) -> Tenant:
        """Raises NotFound."""
        ...

    def replace_tenant(self, tenant: Tenant) -> Tenant:
        """Conditional on tenant.etag; raises PreconditionFailed."""
        ...

    def list_tenants(self) -> list[Tenant]: ...


class EntraTenantMap(Protocol):
    """Which platform tenant an Entra ID tenant (`tid`) acts for: one tid maps to exactly one tenant."""

    def map_tenant(self, tid: str, tenant_id: str) -> None:
        """Raises AlreadyExists when the tid already maps to a tenant (the same or another)."""
        ...

    def tenant_for(self, tid: str) -> str:
        """One point read; raises NotFound."""
        ...


class TenantDirectory(Protocol):
    """The global tenant directory: which stamp (region, API URL) is each tenant's home. Stamps only read it."""

    def home_of(self, tenant_id: str) -> TenantHome | None:
        """One point read; None when the tenant is not in the directory."""
        ...

    def place(self, home: TenantHome) -> TenantHome:
        """Records a new tenant's home (a conditional create); returns the home the directory holds, which is an
        earlier one when the tenant was placed before (the caller compares)."""
        ...

    def home_of_entra(self, tid: str) -> TenantHome | None:
        """The home of the tenant an Entra ID tenant (`tid`) acts for; None when the directory has no such tid."""
        ...

    def place_entra(self, tid: str, home: TenantHome) -> TenantHome:
        """Records that tokens of `tid` act for home.tenant_id (conditional create); returns the held entry."""
        ...


class AuditLog(Protocol):
    """Append-only: there is no way to change or remove an entry through this port."""

    def append(self, entry: AuditEntry) -> None: ...

    def list_entries(
        self,
        tenant_id: str,
        *,
        since: str | None = None,
        action: str | None = None,
        limit: int = 100,
        continuation: str | None = None,
    ) -> tuple[list[AuditEntry], str | None]:
        """The tenant's entries, newest first, from `since` on, optionally of one action."""
        ...


class JobStore(Protocol):
    def create_job(self, job: Job) -> bool:
        """Creates the job unless one with its id exists; True when this call created it (and sets its etag)."""
        ...

    def get_job(self, tenant_id: str, job_id: str) -> Job:
        """Raises NotFound."""
        ...

    def replace_job(self, job: Job) -> Job:
        """Conditional on job.doc_etag; raises PreconditionFailed when another writer got there first."""
        ...

    def list_jobs(self, tenant_id: str, *, limit: int, continuation: str | None = None) -> tuple[list[Job], str | None]:
        """The tenant's jobs, newest first."""
        ...

    def put_upload_intent(self, tenant_id: str, blob_path: str, intent: dict[str, Any]) -> None:
        """What the uploader asked for (job parameters, error threshold), for the job its upload will make."""
        ...

    def get_upload_intent(self, tenant_id: str, blob_path: str) -> dict[str, Any] | None: ...

    def list_unfinished(self, *, updated_before: str) -> list[Job]:
        """Jobs (of any tenant) not terminal, or terminal with an unpublished event, idle since the time."""
        ...

    def list_schedulable(self) -> list[JobBacklog]:
        """Jobs (of any tenant) not ended, planned, with shards waiting or in flight: one cross-partition query."""
        ...

    def list_with_drift(
        self,
        tenant_id: str,
        model_name: str,
        *,
        completed_from: str,
        completed_before: str,
        limit: int,
        continuation: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """The tenant's ended jobs of the model with a drift section, completed in [from, before), newest first;
        each with its summary fields and drift only (no shard plan, no sketches)."""
        ...


class ResultStore(Protocol):
    def put_page(self, page: ResultPage) -> None:
        """Upsert: a redelivered shard overwrites its own pages. A page of any size: the store cuts it to its limits."""
        ...

    def iter_pages(self, tenant_id: str, job_id: str, *, from_record: int = 0) -> Iterator[ResultPage]:
        """Pages in record order, starting with the page that holds `from_record`; every record once, whole."""
        ...


class SubscriptionStore(Protocol):
    def put_subscription(self, subscription: Subscription) -> None: ...

    def get_subscription(self, tenant_id: str, subscription_id: str) -> Subscription:
        """Raises NotFound."""
        ...

    def list_subscriptions(self, tenant_id: str) -> list[Subscription]: ...

    def delete_subscription(self, tenant_id: str, subscription_id: str) -> None:
        """Succeeds when already gone."""
        ...


class EventLog(Protocol):
    """Every event the platform published, per tenant, kept at least 30 days: GET /api/v1/events, redelivery and
    replay read it (Event Grid itself keeps nothing once an event is delivered or dead-lettered)."""

    def record(self, events: Sequence[PlatformEvent]) -> None:
        """Upserts by (topic = tenant, id): recording an event again (a publisher's retry) keeps one entry."""
        ...

    def get_events(self, tenant_id: str, event_ids: Sequence[str]) -> list[PlatformEvent]:
        """The tenant's events of these ids that exist (others are left out), in no particular order."""
        ...

    def list_events(
        self,
        tenant_id: str,
        *,
        since: str | None = None,
        until: str | None = None,
        event_type: str | None = None,
        limit: int = 100,
        continuation: str | None = None,
    ) -> tuple[list[PlatformEvent], str | None]:
        """Newest first (eventTime, then id), since <= eventTime < until; the token continues the same listing."""
        ...


class EventRouting(Protocol):
    """Where a tenant's subscriptions turn into deliveries: Event Grid event subscriptions on the tenant's domain
    topic in Azure (shared.adapters.eventgrid_routing), the local broker here (shared.localhost.routing)."""

    def create_route(self, subscription: Subscription, *, secret: str | None = None) -> None:
        """Makes Event Grid deliver the subscription's events (idempotent: creating it again updates it)."""
        ...

    def delete_route(self, subscription: Subscription) -> None:
        """Stops its deliveries at once, pending retries included; succeeds when already gone."""
        ...

    def redeliver(self, subscription: Subscription, events: Sequence[PlatformEvent]) -> None:
        """Delivers these events (their original ids) to this one subscription only, under its retry policy."""
        ...


class DeadLetterReader(Protocol):
    """A subscription's dead letters, read back from the blobs Event Grid (or the local broker) wrote."""

    def list_dead_letters(
        self, subscription: Subscription, *, limit: int = 100, continuation: str | None = None
    ) -> tuple[list[DeadLetter], str | None]:
        """Oldest first; only records whose event is the subscription's tenant's."""
        ...


class JobQueue(Protocol):
    def enqueue(self, messages: Sequence[ShardMessage]) -> None: ...


class EventPublisher(Protocol):
    def publish(self, events: Sequence[PlatformEvent]) -> None:
        """At least once; each event's topic is its tenant."""
        ...


class EndpointValidator(Protocol):
    def validate(self, endpoint_url: str, schema: str, *, allow_loopback: bool = False) -> None:
        """Runs the subscription validation handshake under the egress policy (loopback only if allowed); raises
        InvalidInput when it fails, with one generic message whatever the reason."""
        ...

    def check_callback(self, url: str, *, allow_loopback: bool = False) -> None:
        """A callback URL (no handshake: a Logic Apps callback cannot answer one) under the egress policy: its host
        resolves only to addresses the platform may call. Raises InvalidInput otherwise (the reason is logged)."""
        ...

    def deliver_callback(
        self, url: str, body: bytes, headers: dict[str, str], *, allow_loopback: bool = False, timeout_seconds: float
    ) -> int:
        """POSTs one event to a callback URL under the egress policy, within `timeout_seconds`; the answer's status.
        Raises TimeoutError (no answer in time), ConnectionError (no connection, TLS failure, a broken answer) or
        InvalidInput (the egress policy refuses the URL now)."""
        ...


class Predictor(Protocol):
    """A loaded model version: preprocess one record, predict a batch (MLServer/KServe's split)."""

    card: ModelCard

    def prepare(self, record: Any) -> Any:
        """Validates and converts one parsed record; raises InvalidRecord."""
        ...

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]: ...


class SecretStore(Protocol):
    """Credentials the platform keeps for a tenant (remote model endpoints' keys), never in a blob a SAS can name.

    `tenant_id` "" is the platform itself; `name` is 1-127 letters, digits and dashes (Key Vault's rule).
    """

    def put(self, tenant_id: str, name: str, value: str) -> None: ...

    def get(self, tenant_id: str, name: str) -> str:
        """Raises NotFound."""
        ...

    def delete(self, tenant_id: str, name: str) -> None:
        """Succeeds when already gone."""
        ...


class ModelRegistry(Protocol):
    def resolve(self, tenant_id: str, ref: ModelRef) -> ModelCard:
        """The card of the version `ref` names for this tenant; raises UnknownModel."""
        ...

    def list_models(
        self, tenant_id: str, *, task: str | None = None, tags: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Models the tenant may use, optionally only those of a task and carrying all the tags."""
        ...

    def get_model(self, tenant_id: str, name: str) -> dict[str, Any]:
        """Raises UnknownModel."""
        ...

    def load(self, card: ModelCard, *, isolated: bool = False) -> Predictor:
        """The model ready to predict, loaded once per process and verified against the card's sha256;
        `isolated`: a tenant's own ONNX model runs in a sandbox child process, not in this one."""
        ...

    def read_file(self, card: ModelCard, name: str) -> bytes:
        """One of the files the card lists (its "files"), verified against the card's sha256; raises NotFound."""
        ...

    def get_aliases(self, tenant_id: str, name: str) -> dict[str, Any]:
        """`{"name", "aliases", "history"}` of a model the tenant may see, read fresh; raises UnknownModel."""
        ...

    def move_alias(self, name: str, alias: str, version: str, *, by: str, owner: str | None = None) -> dict[str, Any]:
        """Points an alias of a public (owner None) or private model at an existing version, recording who and when."""
        ...

    def update_aliases(
        self, name: str, change: Callable[[dict[str, Any]], dict[str, Any] | None], *, owner: str | None = None
    ) -> dict[str, Any]:
        """Changes the model's aliases document ({"aliases", "history", "rollouts"}) by `change` (which returns
        it changed, or None for no write), conditionally on its ETag and retried on a conflict; the new view."""
        ...

    def register_private(
        self,
        tenant_id: str,
        card: dict[str, Any],
        artifact: bytes | None,
        *,
        files: dict[str, bytes] | None = None,
        credential: str | None = None,
        by: str | None = None,
    ) -> dict[str, Any]:
        """Registers a version of the tenant's own model after loading and trying it; raises InvalidInput."""
        ...


class UsageStore(Protocol):
    """Metering and quotas: usage records (one per finished job), quota overrides, request-rate counters."""

    def put_usage(self, record: UsageRecord) -> None:
        """Upsert by job id: writing a job's record again replaces it (the same figures), never adds."""
        ...

    def list_usage(self, tenant_id: str, *, ended_from: str, ended_before: str) -> list[UsageRecord]:
        """The tenant's records of jobs that ended in [ended_from, ended_before) (stored timestamps)."""
        ...

    def records_ended(self, tenant_id: str, *, ended_from: str, ended_before: str) -> int:
        """The sum of `records` over those (admission's check: one aggregate, not every record)."""
        ...

    def get_quota(self, tenant_id: str) -> dict[str, int | None]:
        """The tenant's own limits (camelCase names, as QUOTA_FIELDS); missing or None: the default."""
        ...

    def put_quota(self, tenant_id: str, overrides: dict[str, int | None]) -> dict[str, int | None]:
        """Merges the overrides into the tenant's own limits; returns them all."""
        ...

    def activity(self, tenant_id: str) -> TenantActivity:
        """The tenant's unfinished jobs (read from the jobs the store keeps), for admission."""
        ...

    def count_request(self, tenant_id: str, window: str, limit: Callable[[], int]) -> bool:
        """Counts one request in the tenant's `window` unless its limit (0: none) is counted already.

        True when counted. Atomic across processes: the count, and the limit, live in the window's counter,
        which the first request of a window creates with `limit()` (so the quota is read once a window).
        """
        ...

    def requests_in(self, tenant_id: str, window: str) -> int: ...

    def set_rate_limit(self, tenant_id: str, window: str, limit: int) -> None:
        """A new requests-per-minute limit for the window under way (when the operator changes it)."""
        ...


@dataclass(frozen=True)
class TrainingData:
    """Labelled records for retraining: a blob of the tenant's (the version read, by ETag) and its bytes."""

    tenant_id: str
    container: str
    blob_path: str
    etag: str
    sha256: str
    file_type: str
    content: bytes
    label_field: str = "label"
    # The platform's retraining run (services.retraining): a trainer names its own job after it, so that the same
    # run submitted twice is one job.
    run_id: str = ""


@dataclass(frozen=True)
class TrainedModel:
    """A package a trainer made: the card (without lineage: the service adds it), the artifact, extra files."""

    card: dict[str, Any]
    artifact: bytes
    files: dict[str, bytes]
    metrics: dict[str, Any]
    # Where the trainer ran it, when it is somewhere else (an Azure ML job's name and workspace).
    run: dict[str, Any] | None = None


class Trainer(Protocol):
    """Trains a new version of a model on labelled data: locally the model's own builder, in Azure an Azure ML job."""

    def train(
        self,
        parent: ModelCard,
        data: TrainingData,
        *,
        version: str,
        started: Callable[[dict[str, Any]], None] | None = None,
    ) -> TrainedModel:
        """Blocks until trained (the service runs it in the background), calling `started` with where it runs (an
        Azure ML job's name) once it does; raises InvalidInput (code TrainingDataInvalid for data it cannot learn
        from, NoTrainer for a model it has no builder for, TrainingFailed for a job that did not complete)."""
        ...
