"""JobQueue on Azure Service Bus: message id = shard id (duplicate detection), sent in size-bounded batches.

No session id: a session is locked to one receiver at a time, so a session per tenant would run each tenant's
shards one after another across the whole fleet. Fairness between tenants is the dispatcher's job
(shared.services.dispatch), which never hands the queue more than the tenants' shares.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import orjson
from azure.servicebus import ServiceBusClient, ServiceBusMessage

from shared.domain.jobs import ShardMessage

logger = logging.getLogger(__name__)


def to_servicebus_message(message: ShardMessage) -> ServiceBusMessage:
    return ServiceBusMessage(
        orjson.dumps(message.to_dict()),
        message_id=message.message_id,  # at most 128 characters (Service Bus quotas); ours are 32 hex + ":n"
        content_type="application/json",
        subject="shard",
        application_properties={"jobId": message.job_id, "shardIndex": message.shard_index},
    )


def send_in_batches(sender: Any, messages: Sequence[ShardMessage]) -> int:
    """Sends every message, in order, in as few batches as the tier's limits allow; returns the batch count.

    The SDK's ServiceBusMessageBatch knows the limit the link announced (Standard tier: 256 KB per message and
    per batch; Premium: up to 100 MB, Service Bus quotas) and refuses a message that would overflow it.
    """
    batches = 0
    batch = sender.create_message_batch()
    for message in messages:
        sb_message = to_servicebus_message(message)
        if _try_add(batch, sb_message):
            continue
        if len(batch):
            sender.send_messages(batch)
            batches += 1
            batch = sender.create_message_batch()
        if not _try_add(batch, sb_message):
            raise ValueError(
                f"shard message {message.message_id} is larger than a Service Bus batch may be "
                f"({batch.max_size_in_bytes} bytes)"
            )
    if len(batch):
        sender.send_messages(batch)
        batches += 1
    return batches


def _try_add(batch: Any, message: ServiceBusMessage) -> bool:
    try:
        batch.add_message(message)
    except ValueError:  # MessageSizeExceededError (a ValueError): the batch is full
        return False
    return True


class ServiceBusJobQueue:
    """Sends shard messages; the Functions host's Service Bus trigger receives and settles them."""

    def __init__(self, fully_qualified_namespace: str, queue_name: str, credential: Any) -> None:
        self._client = ServiceBusClient(fully_qualified_namespace, credential)
        self._queue_name = queue_name
        self._sender: Any = None
        self._lock = threading.Lock()

    def probe(self) -> None:
        """Readiness: a peek at the queue (Listen rights, which the app has; its properties need Manage)."""
        with self._client.get_queue_receiver(self._queue_name) as receiver:
            receiver.peek_messages(max_message_count=1)

    def enqueue(self, messages: Sequence[ShardMessage]) -> None:
        if not messages:
            return
        with self._lock:
            if self._sender is None:
                self._sender = self._client.get_queue_sender(self._queue_name)
            batches = send_in_batches(self._sender, messages)
        logger.debug("sent %d shard message(s) in %d batch(es)", len(messages), batches)
