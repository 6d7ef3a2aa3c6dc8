"""JobQueue on an Azure Storage Queue (Azurite locally), with Service Bus's semantics played by queue features.

Visibility timeout is the peek-lock, the dequeue count is the delivery count, and a `<queue>-poison` queue is
the dead-letter queue. No sessions, exactly as the Service Bus queue: fairness between tenants comes from the
dispatcher (shared.services.dispatch), which decides what is sent, so both queues behave the same.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from shared.domain.jobs import ShardMessage

logger = logging.getLogger(__name__)
# A Storage Queue message is at most 64 KiB (Queue service REST API); ours are a few hundred bytes.
MAX_MESSAGE_BYTES = 64 * 1024


@dataclass
class ReceivedShard:
    """A message under lock: its body, its delivery count and the handle to settle it (renewed in place)."""

    message: ShardMessage | None
    body: bytes
    message_id: str
    delivery_count: int
    handle: Any


class StorageQueueJobQueue:
    def __init__(self, connection_string: str, queue_name: str, *, visibility_seconds: int = 300) -> None:
        from shared.adapters.azure_blob import loopback_retry

        retry = loopback_retry(connection_string)
        self._queue = QueueClient.from_connection_string(connection_string, queue_name, **retry)
        self._poison = QueueClient.from_connection_string(connection_string, f"{queue_name}-poison", **retry)
        self._visibility = visibility_seconds
        self._ready = False

    def ensure_queues(self) -> None:
        if self._ready:
            return
        for queue in (self._queue, self._poison):
            with contextlib.suppress(ResourceExistsError):
                queue.create_queue()
        self._ready = True

    def enqueue(self, messages: Sequence[ShardMessage]) -> None:
        self.ensure_queues()
        bodies = [orjson.dumps({"messageId": message.message_id, **message.to_dict()}) for message in messages]
        for message, body in zip(messages, bodies, strict=True):
            if len(body) > MAX_MESSAGE_BYTES:
                raise ValueError(f"shard message {message.message_id} is over {MAX_MESSAGE_BYTES} bytes")
        # One request per message (the service has no batch send); the dispatcher sends a few at a time.
        for body in bodies:
            self._queue.send_message(body.decode())

    def receive(self, max_messages: int = 1) -> list[ReceivedShard]:
        self.ensure_queues()
        received = []
        for item in self._queue.receive_messages(
            max_messages=max_messages, visibility_timeout=self._visibility
        ).by_page():
            for msg in item:
                body = msg.content.encode() if isinstance(msg.content, str) else bytes(msg.content)
                try:
                    shard: ShardMessage | None = ShardMessage.from_dict(orjson.loads(body))
                except Exception:
                    shard = None
                received.append(ReceivedShard(shard, body, msg.id, msg.dequeue_count or 1, msg))
            break
        return received

    def probe(self) -> None:
        """Readiness: the queue's properties (raises when the queue or the service cannot be reached)."""
        self._queue.get_queue_properties()

    def complete(self, received: ReceivedShard) -> None:
        try:
            self._queue.delete_message(received.handle)
        except ResourceNotFoundError:
            logger.warning("message %s was already settled (its lock had expired)", received.message_id)

    def renew(self, received: ReceivedShard) -> None:
        """Extends the lock (visibility) of a message still being worked on, like Service Bus lock renewal."""
        updated = self._queue.update_message(received.handle, visibility_timeout=self._visibility)
        received.handle.pop_receipt = updated.pop_receipt

    def abandon(self, received: ReceivedShard, *, retry_after_seconds: int = 0) -> None:
        """Makes the message visible again after a pause, like Service Bus's abandon with a back-off."""
        with contextlib.suppress(ResourceNotFoundError):
            self._queue.update_message(received.handle, visibility_timeout=retry_after_seconds)

    def dead_letter(self, received: ReceivedShard, reason: str) -> None:
        self._poison.send_message(
            orjson.dumps({"reason": reason, "body": received.body.decode(errors="replace")}).decode()
        )
        self.complete(received)

    def depth(self) -> int:
        self.ensure_queues()
        return int(self._queue.get_queue_properties().approximate_message_count or 0)

    def poison_messages(self) -> list[dict[str, Any]]:
        self.ensure_queues()
        return [orjson.loads(m.content) for m in self._poison.peek_messages(max_messages=32)]
