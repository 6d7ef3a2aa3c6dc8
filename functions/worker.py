"""Trigger: a shard message from the job queue (Service Bus in Azure) -> run the shard."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func
import orjson

from shared import telemetry
from shared.bootstrap import get_platform, tune_gc_for_batch_work
from shared.config import get_settings
from shared.domain.jobs import Job, ShardMessage
from shared.services.shards import fail_shard, run_shard

logger = logging.getLogger(__name__)
bp = func.Blueprint()  # type: ignore[no-untyped-call]
_gc_tuned = False


@bp.function_name("run_shard")
# No sessions: a session is locked to one receiver, which would run each tenant's shards one at a time across the
# whole fleet; fairness between tenants is the dispatcher's (services.dispatch), not the queue's.
@bp.service_bus_queue_trigger(
    arg_name="msg",
    queue_name="%AIAAS_JOB_QUEUE_NAME%",
    connection="ServiceBusConnection",
)
def run_shard_message(msg: func.ServiceBusMessage) -> None:
    started = datetime.now(UTC)
    message = ShardMessage.from_dict(orjson.loads(msg.get_body()))
    settings = get_settings()
    # A child of the job's admission (the message carries its trace context), whichever process runs it.
    with telemetry.span(
        f"process {settings.job_queue_name}",
        kind="consumer",
        parent=message.traceparent,
        attributes={
            **telemetry.consumer_attributes(
                message, backend=settings.job_queue_backend, destination=settings.job_queue_name
            ),
            "messaging.servicebus.message.delivery_count": msg.delivery_count,
        },
    ) as span:
        job = _run(msg, message)
        span.set_attributes({telemetry.MODEL_NAME: job.model_name or None, "aiaas.job.status": job.status.value})
        telemetry.record_queue_age(msg.enqueued_time_utc, started, message.tenant_id, job.model_name)


def _run(msg: func.ServiceBusMessage, message: ShardMessage) -> Job:
    global _gc_tuned
    platform = get_platform()
    if not _gc_tuned:  # once per worker process, after the clients exist
        tune_gc_for_batch_work()
        _gc_tuned = True
    try:
        return run_shard(platform, message)
    except Exception as err:
        # On the last delivery, end the job with the reason rather than leave it waiting on a dead letter.
        if (msg.delivery_count or 1) >= get_settings().max_delivery_count:
            logger.exception(
                "shard %s failed on its last delivery",
                message.message_id,
                extra={"tenant_id": message.tenant_id, "job_id": message.job_id},
            )
            return fail_shard(platform, message, f"the shard failed {msg.delivery_count} times; last error: {err}")
        raise
