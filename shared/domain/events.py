"""The platform's events (AIaaS.Job.*, AIaaS.Model.*) and tenants' event subscriptions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from shared.domain.jobs import Job, JobStatus, utcnow

EVENT_TYPE_BY_STATUS = {
    JobStatus.SUCCEEDED: "AIaaS.Job.Succeeded",
    JobStatus.PARTIALLY_SUCCEEDED: "AIaaS.Job.PartiallySucceeded",
    JobStatus.FAILED: "AIaaS.Job.Failed",
    JobStatus.REJECTED: "AIaaS.Job.Rejected",
    JobStatus.CANCELLED: "AIaaS.Job.Cancelled",
}
EVENT_TYPES = tuple(EVENT_TYPE_BY_STATUS.values())
# Model events (issue 11): subject /tenants/<tenant>/models/<name>, topic = the tenant.
DRIFT_DETECTED = "AIaaS.Model.DriftDetected"
PROMOTED = "AIaaS.Model.Promoted"
ROLLED_BACK = "AIaaS.Model.RolledBack"
MODEL_EVENT_TYPES = (DRIFT_DETECTED, PROMOTED, ROLLED_BACK)
# What a subscription without eventTypes receives: the job events and the model events.
DEFAULT_SUBSCRIPTION_EVENT_TYPES = EVENT_TYPES + MODEL_EVENT_TYPES
# What a callback subscription without eventTypes receives: the job outcomes only. A callback is what the Logic Apps
# connector's "When a job finishes" trigger subscribes, and its workflow runs once per finished job; a drift or
# rollout event there would run it again for a job (DriftDetected carries a jobId). Model events by name only.
DEFAULT_CALLBACK_EVENT_TYPES = EVENT_TYPES
SCHEMAS = ("EventGridSchema", "CloudEventSchemaV1_0")
DATA_VERSION = "1.0"


@dataclass(frozen=True)
class PlatformEvent:
    """An event in Event Grid's own shape; the topic is the tenant (one domain topic per tenant)."""

    id: str
    event_type: str
    subject: str
    data: dict[str, Any]
    event_time: str
    topic: str
    data_version: str = DATA_VERSION

    def to_eventgrid(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "topic": self.topic,
            "subject": self.subject,
            "eventType": self.event_type,
            "eventTime": self.event_time,
            "data": self.data,
            "dataVersion": self.data_version,
            "metadataVersion": "1",
        }

    def to_cloudevent(self, source: str) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": self.id,
            "type": self.event_type,
            "source": source,
            "subject": self.subject,
            "time": self.event_time,
            "datacontenttype": "application/json",
            "data": self.data,
        }

    @classmethod
    def from_cloudevent(cls, raw: dict[str, Any], *, topic: str) -> PlatformEvent:
        """An event read back from its CloudEvents 1.0 form (to_cloudevent); the topic is not in it, so it is given."""
        return cls(
            id=str(raw["id"]),
            event_type=str(raw.get("type", "")),
            subject=str(raw.get("subject", "")),
            data=dict(raw.get("data") or {}),
            event_time=str(raw.get("time", "")),
            topic=topic,
        )

    @classmethod
    def from_eventgrid(cls, raw: dict[str, Any]) -> PlatformEvent:
        return cls(
            id=str(raw["id"]),
            event_type=str(raw["eventType"]),
            subject=str(raw.get("subject", "")),
            data=dict(raw.get("data") or {}),
            event_time=str(raw.get("eventTime") or utcnow()),
            topic=str(raw.get("topic", "")),
            data_version=str(raw.get("dataVersion") or DATA_VERSION),
        )


def terminal_event_id(job_id: str) -> str:
    """One terminal event per job: its id is derived from the job, so a re-publish carries the same id."""
    return hashlib.sha256(f"terminal:{job_id}".encode()).hexdigest()[:32]


def terminal_event(job: Job, api_url: str) -> PlatformEvent:
    data: dict[str, Any] = {
        "jobId": job.job_id,
        "tenantId": job.tenant_id,
        "status": job.status.value,
        "model": {"name": job.model_name, "version": job.model_version},
        "input": {"blobPath": job.blob_path, "etag": job.etag},
        "counts": job.counts.to_dict(),
        "links": job.links(api_url),
        "createdAt": job.created_at,
        "completedAt": job.completed_at,
        # The tenant's own pairs: a Logic App routes on them without looking the job up.
        "metadata": job.metadata,
    }
    if job.region:  # the stamp that produced it (regional stamps)
        data["region"] = job.region
    if job.status != JobStatus.SUCCEEDED:
        data["error"] = job.error or {"code": "Unknown", "message": "the job did not succeed"}
    return PlatformEvent(
        id=job.event_id or terminal_event_id(job.job_id),
        event_type=EVENT_TYPE_BY_STATUS[job.status],
        subject=f"/tenants/{job.tenant_id}/jobs/{job.job_id}",
        data=data,
        event_time=job.completed_at or utcnow(),
        topic=job.tenant_id,
    )


def model_event(tenant_id: str, model_name: str, event_type: str, data: dict[str, Any], event_id: str) -> PlatformEvent:
    """An AIaaS.Model.* event; data gets model.name when it has no model, so model-name filters apply to it."""
    if event_type not in MODEL_EVENT_TYPES:
        raise ValueError(f"not a model event type: {event_type}")
    body = dict(data)
    model = body.get("model")
    if not isinstance(model, dict):
        body["model"] = {"name": model_name}
    elif "name" not in model:
        body["model"] = {**model, "name": model_name}
    body.setdefault("tenantId", tenant_id)
    return PlatformEvent(
        id=event_id,
        event_type=event_type,
        subject=f"/tenants/{tenant_id}/models/{model_name}",
        data=body,
        event_time=utcnow(),
        topic=tenant_id,
    )


SUBSCRIPTION_KINDS = ("webhook", "callback")


@dataclass
class Subscription:
    """A tenant's subscription. `webhook`: Event Grid delivers to `endpoint_url` (after the validation handshake).
    `callback`: a Logic Apps style callback URL that answers 202 to everything and echoes no handshake; Event Grid
    delivers to the platform's relay, which posts each event to `endpoint_url` (shared.services.relay)."""

    tenant_id: str
    subscription_id: str
    endpoint_url: str
    schema: str = "EventGridSchema"
    event_types: list[str] = field(default_factory=lambda: list(DEFAULT_SUBSCRIPTION_EVENT_TYPES))
    created_at: str = field(default_factory=utcnow)
    kind: str = "webhook"
    # Only events of these models (data.model.name); None: every model.
    model_names: list[str] | None = None
    # Event Grid's retryPolicy (shared.domain.delivery has the bounds and defaults).
    max_delivery_attempts: int = 30
    event_ttl_minutes: int = 1440
    # A secret the tenant set: delivered as a static header (delivery.SECRET_HEADER); the value lives in the
    # SecretStore (locally) or in the Event Grid subscription itself (Azure), never in this document.
    has_secret: bool = False

    def wants(self, event_type: str) -> bool:
        return event_type in self.event_types

    def matches(self, event: PlatformEvent) -> bool:
        """Whether the subscription's filters (event type, model name) let `event` through."""
        if not self.wants(event.event_type):
            return False
        if self.model_names is None:
            return True
        model = event.data.get("model") or {}
        return isinstance(model, dict) and model.get("name") in self.model_names

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.subscription_id,
            "tenantId": self.tenant_id,
            "subscriptionId": self.subscription_id,
            "kind": self.kind,
            "endpointUrl": self.endpoint_url,
            "schema": self.schema,
            "eventTypes": list(self.event_types),
            "modelNames": list(self.model_names) if self.model_names is not None else None,
            "retryPolicy": {
                "maxDeliveryAttempts": self.max_delivery_attempts,
                "eventTimeToLiveInMinutes": self.event_ttl_minutes,
            },
            "hasSecret": self.has_secret,
            "createdAt": self.created_at,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Subscription:
        retry = doc.get("retryPolicy") or {}
        names = doc.get("modelNames")
        return cls(
            tenant_id=doc["tenantId"],
            subscription_id=doc["subscriptionId"],
            endpoint_url=doc["endpointUrl"],
            schema=doc.get("schema", "EventGridSchema"),
            event_types=list(doc.get("eventTypes", DEFAULT_SUBSCRIPTION_EVENT_TYPES)),
            created_at=doc.get("createdAt", ""),
            kind=doc.get("kind", "webhook"),
            model_names=list(names) if names is not None else None,
            max_delivery_attempts=int(retry.get("maxDeliveryAttempts", 30)),
            event_ttl_minutes=int(retry.get("eventTimeToLiveInMinutes", 1440)),
            has_secret=bool(doc.get("hasSecret", False)),
        )

    def public_view(self) -> dict[str, Any]:
        view = self.to_doc()
        view.pop("id")
        view.pop("tenantId")
        # An endpoint URL can carry a secret in its query string (a Logic Apps callback's `sig`): show only where
        # it goes.
        url = self.endpoint_url.split("?", 1)[0]
        view.pop("endpointUrl")
        view["callbackUrl" if self.kind == "callback" else "endpointUrl"] = url
        return view
