"""JobQueue on Azure Service Bus: session id = tenant (fairness), message id = shard id (duplicate detection)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import orjson
from azure.servicebus import ServiceBusClient, ServiceBusMessage

from shared.domain.jobs import ShardMessage


def to_servicebus_message(message: ShardMessage) -> ServiceBusMessage:
    return ServiceBusMessage(
        orjson.dumps(message.to_dict()),
        message_id=message.message_id,
        session_id=message.tenant_id,
        content_type="application/json",
        subject="shard",
        application_properties={"jobId": message.job_id, "shardIndex": message.shard_index},
    )


class ServiceBusJobQueue:
    """Sends shard messages; the Functions host's Service Bus trigger receives and settles them."""

    def __init__(self, fully_qualified_namespace: str, queue_name: str, credential: Any) -> None:
        self._client = ServiceBusClient(fully_qualified_namespace, credential)
        self._queue_name = queue_name
        self._sender: Any = None
        self._lock = threading.Lock()

    def enqueue(self, messages: Sequence[ShardMessage]) -> None:
        with self._lock:
            if self._sender is None:
                self._sender = self._client.get_queue_sender(self._queue_name)
            self._sender.send_messages([to_servicebus_message(message) for message in messages])
