"""One typed Settings object for the platform, read from the environment (Azure app settings or local defaults)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The well-known development keys of Azurite and the Cosmos emulator: public, and refused outside development.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
COSMOS_EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
LOCAL_EVENTGRID_KEY = "local-broker-key"
LOCAL_RELAY_KEY = "local-relay-key"
# A second Azurite account for the platform's own data (models, secrets' neighbours): public, local only. Azurite
# serves every account of AZURITE_ACCOUNTS on the same ports; a tenant's SAS of devstoreaccount1 never names it.
AZURITE_PLATFORM_ACCOUNT = "aiaasplatform"
AZURITE_PLATFORM_KEY = "vqJAcV3vx4K1JfDd2TKWdJxI8cmE+DsfkQTvy5n3uC2TiZ93twPblLKlMSJB2us2/V+XNxqsmNqHrYj8/bIA0A=="


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is a loopback address (127.0.0.0/8, ::1 or localhost)."""
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Every setting the platform reads; each name also appears in local.settings.example.json and bicep/."""

    model_config = SettingsConfigDict(env_prefix="AIAAS_", extra="ignore")

    # Production unless told otherwise: the local host, the CLI's `up`/`demo` and the tests choose development.
    environment: Literal["development", "production"] = "production"

    # Storage: a connection string locally (Azurite), an account name with managed identity in Azure.
    storage_connection_string: str | None = None
    storage_account_name: str | None = None
    # The platform's own storage (the models container: every tenant's private models): another account than the
    # tenants' containers, so no tenant's upload SAS, copy source or path can name it.
    platform_storage_connection_string: str | None = None
    platform_storage_account_name: str | None = None

    # Cosmos DB: a key locally (the stand-in), managed identity in Azure.
    cosmos_endpoint: str | None = None
    cosmos_key: str | None = None
    cosmos_database: str = "aiaas"

    # The job queue: an Azurite Storage Queue locally, Service Bus in Azure.
    job_queue_backend: Literal["storage", "servicebus"] = "storage"
    job_queue_name: str = "shards"
    servicebus_namespace: str | None = None
    max_delivery_count: int = Field(default=5, ge=1, le=100)
    # The message lock (the Storage Queue's visibility timeout locally, the queue's lockDuration in Azure):
    # renewed while a shard runs, so it only decides how soon a crashed worker's shard is delivered again.
    # Service Bus takes at most 5 minutes (Service Bus quotas), so the local queue refuses more too.
    queue_visibility_seconds: int = Field(default=60, ge=5, le=300)
    # No shard runs longer: host.json functionTimeout (the lock is auto-renewed that long); locally the
    # worker stops renewing then and exits, and the shard's heartbeat stops.
    shard_timeout_seconds: int = Field(default=600, ge=10)

    # Events: the Event Grid domain in Azure, the local broker's endpoint locally (same protocol).
    eventgrid_endpoint: str | None = None
    eventgrid_key: str | None = None
    eventgrid_domain_id: str | None = None
    # Dead letters: Event Grid writes them to this container of the platform's storage account (its resource id,
    # for the subscription's deadLetterDestination; the domain's system identity writes, the app reads).
    deadletter_container: str = "deadletter"
    platform_storage_account_id: str | None = None
    # The local broker (contract "Event delivery"): every delivery delay and the time to live are divided by this
    # (3600: an hour passes in a second), and a delivery answer is awaited this long (Event Grid: 30 s).
    event_time_scale: float = Field(default=1.0, ge=1.0)
    event_delivery_timeout_seconds: float = Field(default=30.0, gt=0, le=30)
    # Callback subscriptions (Logic Apps): the hosts a callback URL may name, comma-separated, each a host or a
    # ".suffix" (production: required, e.g. ".logic.azure.com"; development: empty allows any the egress policy
    # allows), and the key the relay's per-subscription header is derived from (a Key Vault reference in Azure).
    callback_hosts: str = ""
    relay_key: str | None = None
    # Retraining (services.retraining): "local" runs a model's own builder in this process (scikit-learn is a dev
    # dependency), "azureml" submits an Azure ML command job to the workspace (its ARM id), compute cluster and
    # environment (one carrying this repo and its dev dependencies); "" is local in development, none in production.
    trainer: Literal["", "local", "azureml", "none"] = ""
    azureml_workspace_id: str = ""
    azureml_compute: str = ""
    azureml_environment: str = ""

    public_api_url: str | None = None
    # Regional stamps (README "Regional stamps"): the region this stamp serves (required in production; "local" in
    # development), and the global tenant directory that says which stamp serves each tenant: a database of its own
    # on AIAAS_DIRECTORY_ENDPOINT (unset: this stamp's Cosmos account, as locally), read-only for the stamps.
    region: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")
    directory_endpoint: str | None = None
    directory_database: str = "aiaas-global"
    models_container: str = "models"
    # A container registry whose labelled images are models too (shared/inference/containers.py): the ACR login
    # server (https://<name>.azurecr.io, the managed identity needs AcrPull), or locally a plain-http loopback
    # registry (shared/localhost/oci_registry.py); empty: none.
    container_registry_url: str | None = None
    # Key Vault that keeps tenants' remote-model credentials (the managed identity only); unset in development,
    # where they are files under AIAAS_DATA_DIR/secrets (0600), out of reach of any SAS.
    keyvault_url: str | None = None
    upload_sas_minutes: int = Field(default=15, ge=1, le=24 * 60)
    batch_size: int = Field(default=1000, ge=1, le=10_000)
    # Bytes of a line-oriented file per shard; a model card's "shardBytes" overrides it (heavy models: smaller).
    shard_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # ONNX Runtime intra-op threads per loaded model; 0: ONNX Runtime's default (one per core).
    onnx_threads: int = Field(default=0, ge=0, le=256)
    default_error_threshold: int = Field(default=-1, ge=-1)
    # A job idle this long (no shard recorded, no grant, no heartbeat: a running shard beats every third of
    # it) has lost a shard, and the sweeper delivers its unfinished shards again.
    stall_seconds: int = Field(default=600, ge=3)
    max_sweeps: int = Field(default=3, ge=1, le=100)
    sweep_interval_seconds: float = Field(default=30.0, gt=0)
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1)
    # Fair share (services.dispatch): shards in flight (queued or running) per tenant and in all. 0 for the
    # tenant: the number of local workers in development (a tenant alone keeps every worker busy, and another
    # tenant's shard waits behind at most one shard per worker), a quarter of the global limit in production.
    tenant_max_shards_in_flight: int = Field(default=0, ge=0)
    max_shards_in_flight: int = Field(default=256, ge=1)
    # A .zip or an image is one shard (no byte ranges): bounded so that it finishes inside the shard timeout.
    max_archive_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    max_archive_entries: int = Field(default=50_000, ge=1)
    # Telemetry (shared.telemetry): "otlp" exports traces and metrics over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT;
    # "none" exports nothing (and imports no opentelemetry module). In Azure, APPLICATIONINSIGHTS_CONNECTION_STRING
    # sends them to Azure Monitor whatever this says.
    otel_exporter: Literal["none", "otlp"] = "none"
    # Each tenant's quotas unless the operator set its own (`aiaas tenants set-quota`); 0: no limit. Generous: the
    # demo, the bench (1M-record jobs, 1 GB files, bursts of requests) and the tests never reach them.
    default_records_per_day: int = Field(default=1_000_000_000, ge=0)
    default_concurrent_jobs: int = Field(default=1000, ge=0)
    default_max_file_bytes: int = Field(default=2 * 1024**3, ge=0)
    default_requests_per_minute: int = Field(default=60_000, ge=0)
    # Outbound calls on a tenant's behalf (webhooks, handshakes, remote models) may reach loopback: development
    # only (the local stack's own webhook receivers); private, link-local and metadata addresses stay refused.
    allow_loopback_endpoints: bool = False

    # Identity (contract "Identity, roles and keys"): Entra ID v2 access tokens next to API keys; tokens are
    # refused (401) while the audience is unset. Plain http is accepted only for a loopback authority in
    # development (the tests' local OpenID issuer).
    entra_authority: str = "https://login.microsoftonline.com"
    entra_audience: str | None = None
    # Behind Azure Functions' front end the caller's address is the last X-Forwarded-For entry (the one the front
    # end appended); anywhere else that header is whatever the caller wrote, so only this setting makes it count.
    behind_trusted_proxy: bool = False
    # A source (address) with this many failed authentications in the window gets 429 until the window ends.
    auth_failure_limit: int = Field(default=20, ge=1)
    auth_failure_window_seconds: int = Field(default=60, ge=1, le=3600)

    # The local host only (`aiaas up`): addresses of the stand-ins and where they keep their data.
    api_host: str = "127.0.0.1"
    api_port: int = 7071
    azurite_blob_port: int = 10000
    azurite_queue_port: int = 10001
    azurite_table_port: int = 10002
    cosmos_port: int = 8081
    data_dir: Path = Path(".aiaas")
    models_dir: Path = Path("build/models")
    workers: int = Field(default=2, ge=0, le=64)
    watch_interval_seconds: float = Field(default=0.25, gt=0)

    @model_validator(mode="after")
    def _fill_local_defaults(self) -> Settings:
        self._fill_scheduling_defaults()
        self._check_entra_authority()
        if self.environment == "development":
            if not self.storage_connection_string and not self.storage_account_name:
                self.storage_connection_string = azurite_connection_string(
                    "127.0.0.1", self.azurite_blob_port, self.azurite_queue_port, self.azurite_table_port
                )
            if not self.platform_storage_connection_string and not self.platform_storage_account_name:
                self.platform_storage_connection_string = azurite_connection_string(
                    "127.0.0.1",
                    self.azurite_blob_port,
                    self.azurite_queue_port,
                    self.azurite_table_port,
                    account=AZURITE_PLATFORM_ACCOUNT,
                    key=AZURITE_PLATFORM_KEY,
                )
            if not self.cosmos_endpoint:
                self.cosmos_endpoint = f"https://127.0.0.1:{self.cosmos_port}/"
                self.cosmos_key = self.cosmos_key or COSMOS_EMULATOR_KEY
            if not self.eventgrid_endpoint:
                self.eventgrid_endpoint = f"http://{self.api_host}:{self.api_port}/broker/api/events"
                self.eventgrid_key = self.eventgrid_key or LOCAL_EVENTGRID_KEY
            if not self.public_api_url:
                self.public_api_url = f"http://{self.api_host}:{self.api_port}/api"
            self.relay_key = self.relay_key or LOCAL_RELAY_KEY
            self.region = self.region or "local"
            return self
        self._refuse_unsafe_production_values()
        return self

    def _fill_scheduling_defaults(self) -> None:
        """The derived tenant limit, and the timing rules that keep locks, timeouts and the sweeper in step."""
        if not self.tenant_max_shards_in_flight:
            derived = self.workers if self.environment == "development" else self.max_shards_in_flight // 4
            self.tenant_max_shards_in_flight = max(1, derived)
        problems = []
        if self.tenant_max_shards_in_flight > self.max_shards_in_flight:
            problems.append("AIAAS_TENANT_MAX_SHARDS_IN_FLIGHT must not exceed AIAAS_MAX_SHARDS_IN_FLIGHT")
        if self.stall_seconds <= self.queue_visibility_seconds:
            # Else the sweeper re-drives a crashed worker's shard before its own lock even ran out.
            problems.append("AIAAS_STALL_SECONDS must exceed AIAAS_QUEUE_VISIBILITY_SECONDS (the message lock)")
        if self.shard_timeout_seconds < self.queue_visibility_seconds:
            problems.append("AIAAS_SHARD_TIMEOUT_SECONDS must be at least AIAAS_QUEUE_VISIBILITY_SECONDS")
        if problems:
            raise ValueError("inconsistent settings: " + "; ".join(problems))

    def _check_entra_authority(self) -> None:
        authority = urlparse(self.entra_authority)
        loopback_http = authority.scheme == "http" and is_loopback_url(self.entra_authority)
        if not authority.hostname or not (
            authority.scheme == "https" or (loopback_http and self.environment == "development")
        ):
            raise ValueError("AIAAS_ENTRA_AUTHORITY must be an https URL (http only for loopback in development)")
        if authority.query or authority.fragment or authority.username:
            raise ValueError("AIAAS_ENTRA_AUTHORITY must be a plain URL (no query, fragment or user)")

    @property
    def heartbeat_seconds(self) -> float:
        """How often a running shard touches its job: three beats per stall time, so one lost beat is harmless."""
        return self.stall_seconds / 3

    def _refuse_unsafe_production_values(self) -> None:
        problems = []
        if not self.storage_account_name:
            problems.append("AIAAS_STORAGE_ACCOUNT_NAME is required (identity-based storage)")
        if self.storage_connection_string and AZURITE_KEY in self.storage_connection_string:
            problems.append("the Azurite development key is not allowed in production")
        if not self.platform_storage_account_name:
            problems.append("AIAAS_PLATFORM_STORAGE_ACCOUNT_NAME is required (the models' own storage account)")
        elif self.platform_storage_account_name == self.storage_account_name:
            problems.append("AIAAS_PLATFORM_STORAGE_ACCOUNT_NAME must not be the tenants' storage account")
        if self.platform_storage_connection_string and AZURITE_PLATFORM_KEY in self.platform_storage_connection_string:
            problems.append("the Azurite development key is not allowed in production")
        if not self.cosmos_endpoint or is_loopback_url(self.cosmos_endpoint):
            problems.append("AIAAS_COSMOS_ENDPOINT must be a real Cosmos DB account")
        if self.cosmos_key == COSMOS_EMULATOR_KEY:
            problems.append("the Cosmos emulator key is not allowed in production")
        if not self.eventgrid_endpoint or not self.eventgrid_endpoint.startswith("https://"):
            problems.append("AIAAS_EVENTGRID_ENDPOINT must be an https Event Grid domain endpoint")
        if self.job_queue_backend == "servicebus" and not self.servicebus_namespace:
            problems.append("AIAAS_SERVICEBUS_NAMESPACE is required with the servicebus backend")
        if not self.public_api_url:
            problems.append("AIAAS_PUBLIC_API_URL is required")
        if not self.region:
            problems.append("AIAAS_REGION is required (the region of this stamp)")
        if not self.directory_endpoint or is_loopback_url(self.directory_endpoint):
            # Without the directory a stamp would serve every tenant, wherever it lives: refused, not guessed.
            problems.append("AIAAS_DIRECTORY_ENDPOINT must be the global tenant directory's Cosmos DB account")
        if self.allow_loopback_endpoints:
            problems.append("AIAAS_ALLOW_LOOPBACK_ENDPOINTS is for development only: tenants' endpoints must be public")
        if not self.callback_hosts.strip():
            problems.append("AIAAS_CALLBACK_HOSTS is required: the hosts Logic Apps callbacks may name")
        if not self.relay_key or self.relay_key == LOCAL_RELAY_KEY:
            problems.append("AIAAS_RELAY_KEY is required (a secret of its own; the development value is refused)")
        elif self.relay_key.startswith("@Microsoft.KeyVault("):
            # App Service leaves a Key Vault reference it could not resolve as its literal text: that is no key.
            problems.append("AIAAS_RELAY_KEY is an unresolved Key Vault reference (check the app's vault access)")
        if self.keyvault_url and not self.keyvault_url.startswith("https://"):
            problems.append("AIAAS_KEYVAULT_URL must be an https Key Vault URL")
        if self.trainer == "local":  # scikit-learn is a dev dependency: not in the app's package
            problems.append("AIAAS_TRAINER local is for development only (azureml or none)")
        if self.trainer == "azureml" and not (
            self.azureml_workspace_id and self.azureml_compute and self.azureml_environment
        ):
            problems.append("AIAAS_TRAINER azureml needs AIAAS_AZUREML_WORKSPACE_ID, _COMPUTE and _ENVIRONMENT")
        if problems:
            raise ValueError("unsafe production settings: " + "; ".join(problems))

    @property
    def is_development(self) -> bool:
        return self.environment == "development"


def azurite_connection_string(
    host: str,
    blob_port: int,
    queue_port: int,
    table_port: int,
    *,
    account: str = AZURITE_ACCOUNT,
    key: str = AZURITE_KEY,
) -> str:
    """The connection string for an account of an Azurite instance on the given loopback ports."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
        f"BlobEndpoint=http://{host}:{blob_port}/{account};"
        f"QueueEndpoint=http://{host}:{queue_port}/{account};"
        f"TableEndpoint=http://{host}:{table_port}/{account};"
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
