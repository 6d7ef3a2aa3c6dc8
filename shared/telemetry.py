"""One trace per job and the platform's metrics through OpenTelemetry, or a no-op facade when telemetry is off.

Off (AIAAS_OTEL_EXPORTER unset or "none" and no APPLICATIONINSIGHTS_CONNECTION_STRING) this module imports no
opentelemetry module at all, so a cold start pays nothing for it. On, it is configured once per process on first
use: Azure Monitor when APPLICATIONINSIGHTS_CONNECTION_STRING is set (azure-monitor-opentelemetry), else OTLP over
HTTP/protobuf to OTEL_EXPORTER_OTLP_ENDPOINT (the SDK reads its own OTEL_* variables).

The trace of a job: a root span where the upload is admitted; its W3C traceparent is stored on the job and carried
in every shard message (ShardMessage.traceparent), so every shard run (`process <queue>`, CONSUMER), every send of
shards (`publish <queue>`, PRODUCER) and the terminal event's publish (`publish events`, PRODUCER), whichever process
or re-drive makes them, join that one trace (span names and kinds per the OpenTelemetry messaging conventions).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from shared.domain.jobs import Job, ShardMessage
    from shared.ports import JobQueue

logger = logging.getLogger(__name__)

SpanKind = Literal["internal", "server", "producer", "consumer"]
AttributeValue = str | int | float | bool
TENANT_ID = "aiaas.tenant.id"
JOB_ID = "aiaas.job.id"
MODEL_NAME = "aiaas.model.name"
# messaging.system: Service Bus and Event Grid have well-known values in the conventions; the Storage Queue the
# local host uses has none, so it gets a name of its own.
QUEUE_SYSTEMS = {"servicebus": "servicebus", "storage": "azure_storage_queue"}
EVENTS_SYSTEM = "eventgrid"


class Span:
    """What a caller may do with a span: the no-op (telemetry off) is this class itself."""

    def set_attributes(self, attributes: Mapping[str, AttributeValue | None]) -> None:
        """Sets the attributes that are not None."""

    def record_exception(self, err: BaseException) -> None:
        """Records the error on the span and marks it failed."""


NOOP_SPAN = Span()


class _OtelSpan(Span):
    def __init__(self, span: Any) -> None:
        self._span = span

    def set_attributes(self, attributes: Mapping[str, AttributeValue | None]) -> None:
        self._span.set_attributes(_clean(attributes))

    def record_exception(self, err: BaseException) -> None:
        from opentelemetry.trace import Status, StatusCode

        self._span.record_exception(err)
        self._span.set_status(Status(StatusCode.ERROR, type(err).__name__))


def _clean(attributes: Mapping[str, AttributeValue | None] | None) -> dict[str, AttributeValue]:
    return {key: value for key, value in (attributes or {}).items() if value is not None}


class _Runtime:
    """The tracer, the instruments and the propagator of a configured process."""

    def __init__(self, tracer_provider: Any, meter_provider: Any, *, owned: bool) -> None:
        from opentelemetry.trace import SpanKind as OtelKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        # Providers this module made (OTLP, tests) are shut down (flushed) by reset(); Azure Monitor's are global.
        self.owned = owned
        self.tracer = tracer_provider.get_tracer("aiaas")
        self.propagator = TraceContextTextMapPropagator()
        self.kinds = {
            "internal": OtelKind.INTERNAL,
            "server": OtelKind.SERVER,
            "producer": OtelKind.PRODUCER,
            "consumer": OtelKind.CONSUMER,
        }
        meter = meter_provider.get_meter("aiaas")
        # Counted once per job when it ends (its counts are exact then; a redelivered shard is counted once).
        self.records = meter.create_counter("aiaas.records", unit="{record}", description="Records run, by job end")
        self.record_errors = meter.create_counter(
            "aiaas.record.errors", unit="{record}", description="Records that failed, by job end"
        )
        self.job_duration = meter.create_histogram(
            "aiaas.job.duration", unit="s", description="From admission to the job's terminal status"
        )
        self.queue_age = meter.create_histogram(
            "aiaas.queue.age", unit="s", description="From a shard message's enqueue to the start of its run"
        )

    def parent_context(self, traceparent: str | None) -> Any:
        """The context a span continuing `traceparent` starts in: the current one when it is already in that
        trace (the finaliser inside the last shard's run), else the traceparent's (a re-drive, another process)."""
        from opentelemetry import trace

        if not traceparent:
            return None
        extracted = self.propagator.extract({"traceparent": traceparent})
        wanted = trace.get_current_span(extracted).get_span_context()
        current = trace.get_current_span().get_span_context()
        if not wanted.is_valid or (current.is_valid and current.trace_id == wanted.trace_id):
            return None
        return extracted

    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier)
        return carrier.get("traceparent")

    def shutdown(self) -> None:
        if not self.owned:
            return
        for provider in (self.tracer_provider, self.meter_provider):
            try:
                provider.shutdown()
            except Exception:
                logger.warning("telemetry provider did not shut down cleanly", exc_info=True)


_lock = threading.Lock()
_runtime: _Runtime | None = None
_decided = False
_azure_configured = False


def exporter_wanted() -> str:
    """'azuremonitor', 'otlp' or 'none', from the settings and APPLICATIONINSIGHTS_CONNECTION_STRING."""
    if os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        return "azuremonitor"
    from shared.config import get_settings

    try:
        return get_settings().otel_exporter
    except ValueError:  # settings the app itself refuses (and reports): telemetry follows the variable alone
        return "otlp" if os.environ.get("AIAAS_OTEL_EXPORTER") == "otlp" else "none"


def _active() -> _Runtime | None:
    global _runtime, _decided
    if _decided:
        return _runtime
    with _lock:
        if not _decided:
            try:
                _runtime = _configure(exporter_wanted())
            except Exception:
                # Telemetry never stops the work: a wrong exporter setting costs the traces, not the jobs.
                logger.exception("telemetry could not be configured; it stays off in this process")
                _runtime = None
            _decided = True
    return _runtime


def _configure(exporter: str) -> _Runtime | None:
    global _azure_configured
    if exporter == "azuremonitor":
        from opentelemetry import metrics, trace

        if not _azure_configured:  # configure_azure_monitor sets the process's global providers, once
            from azure.monitor.opentelemetry import configure_azure_monitor

            options: dict[str, Any] = {
                "connection_string": os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"],
                "resource": _resource(),  # the cloud role name "aiaas", not "unknown_service"
            }
            # Entra ID ingestion (local auth is off on the component): the app's managed identity signs.
            if "AAD" in os.environ.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", ""):
                from shared.bootstrap import azure_credential

                options["credential"] = azure_credential()
            configure_azure_monitor(**options)
            _azure_configured = True
        return _Runtime(trace.get_tracer_provider(), metrics.get_meter_provider(), owned=False)
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = _resource()
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        meter_provider = MeterProvider(
            resource=resource, metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())]
        )
        return _Runtime(tracer_provider, meter_provider, owned=True)
    return None


def _resource() -> Any:
    from opentelemetry.sdk.resources import Resource

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES still win (Resource.create merges them over these).
    return Resource.create({"service.name": "aiaas", "process.pid": os.getpid()})


def use_providers(tracer_provider: Any, meter_provider: Any) -> None:
    """Telemetry on with the given SDK providers (tests: an in-memory span exporter and metric reader)."""
    global _runtime, _decided
    reset()
    with _lock:
        _runtime = _Runtime(tracer_provider, meter_provider, owned=True)
        _decided = True


def reset() -> None:
    """Flushes and forgets this process's telemetry; the next use reads the settings again."""
    global _runtime, _decided
    with _lock:
        runtime, _runtime, _decided = _runtime, None, False
    if runtime is not None:
        runtime.shutdown()


def enabled() -> bool:
    return _active() is not None


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span (None when telemetry is off or no span is current)."""
    runtime = _active()
    return None if runtime is None else runtime.traceparent()


def job_attributes(job: Job) -> dict[str, AttributeValue | None]:
    return {TENANT_ID: job.tenant_id, JOB_ID: job.job_id, MODEL_NAME: job.model_name or None}


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = "internal",
    parent: str | None = None,
    attributes: Mapping[str, AttributeValue | None] | None = None,
) -> Iterator[Span]:
    """A span around the block, current inside it; `parent` (a traceparent) continues a job's trace."""
    runtime = _active()
    if runtime is None:
        yield NOOP_SPAN
        return
    with runtime.tracer.start_as_current_span(
        name, context=runtime.parent_context(parent), kind=runtime.kinds[kind], attributes=_clean(attributes)
    ) as otel_span:
        yield _OtelSpan(otel_span)


def record_job_end(job: Job) -> None:
    """The job's records, record errors and duration, by tenant and model (once, when its event goes out)."""
    runtime = _active()
    if runtime is None:
        return
    labels = _clean({TENANT_ID: job.tenant_id, MODEL_NAME: job.model_name or "unknown"})
    runtime.records.add(job.counts.records, labels)
    runtime.record_errors.add(job.counts.failed, labels)
    started, ended = _parse_time(job.created_at), _parse_time(job.completed_at or job.updated_at)
    if started is not None and ended is not None:
        runtime.job_duration.record(
            max(0.0, (ended - started).total_seconds()), {**labels, "aiaas.job.status": job.status.value}
        )


def record_queue_age(enqueued_at: datetime | None, started_at: datetime, tenant_id: str, model_name: str) -> None:
    """Seconds from a shard message's enqueue (the queue's own timestamp) to the start of its run."""
    runtime = _active()
    if runtime is None or enqueued_at is None:
        return
    if enqueued_at.tzinfo is None:
        enqueued_at = enqueued_at.replace(tzinfo=UTC)
    runtime.queue_age.record(
        max(0.0, (started_at - enqueued_at).total_seconds()),
        _clean({TENANT_ID: tenant_id, MODEL_NAME: model_name or "unknown"}),
    )


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class TracedJobQueue:
    """A JobQueue whose every send is a `publish <queue>` PRODUCER span in each job's trace.

    One send of many jobs' shards (the dispatcher interleaves tenants in its fair order) stays one send: a span
    per job is started before it and ended after it, so the queue's order is what the dispatcher chose.
    """

    def __init__(self, queue: JobQueue, *, system: str, destination: str) -> None:
        self.inner = queue
        self.system = system
        self.destination = destination

    def enqueue(self, messages: Sequence[ShardMessage]) -> None:
        runtime = _active()
        if runtime is None or not messages:
            self.inner.enqueue(messages)
            return
        by_job: dict[tuple[str, str], list[ShardMessage]] = {}
        for message in messages:
            by_job.setdefault((message.tenant_id, message.job_id), []).append(message)
        spans = []
        for (tenant_id, job_id), group in by_job.items():
            spans.append(
                runtime.tracer.start_span(
                    f"publish {self.destination}",
                    context=runtime.parent_context(group[0].traceparent),
                    kind=runtime.kinds["producer"],
                    attributes={
                        "messaging.system": self.system,
                        "messaging.destination.name": self.destination,
                        "messaging.operation.type": "send",
                        "messaging.operation.name": "publish",
                        "messaging.batch.message_count": len(group),
                        TENANT_ID: tenant_id,
                        JOB_ID: job_id,
                    },
                )
            )
        try:
            self.inner.enqueue(messages)
        except BaseException as err:
            for otel_span in spans:
                _OtelSpan(otel_span).record_exception(err)
            raise
        finally:
            for otel_span in spans:
                otel_span.end()

    def __getattr__(self, name: str) -> Any:  # ensure_queues, receive...: the inner queue's own
        return getattr(self.inner, name)


def traced_queue(queue: JobQueue, *, backend: str, destination: str) -> JobQueue:
    """The queue itself when telemetry is off (nothing wraps it), else a TracedJobQueue over it."""
    if not enabled():
        return queue
    return TracedJobQueue(queue, system=QUEUE_SYSTEMS.get(backend, backend), destination=destination)


def consumer_attributes(message: ShardMessage, *, backend: str, destination: str) -> dict[str, AttributeValue | None]:
    """The attributes of a shard run's `process <queue>` span."""
    return {
        "messaging.system": QUEUE_SYSTEMS.get(backend, backend),
        "messaging.destination.name": destination,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": message.message_id,
        TENANT_ID: message.tenant_id,
        JOB_ID: message.job_id,
        "aiaas.shard.index": message.shard_index,
        "aiaas.shard.kind": message.kind,
    }
