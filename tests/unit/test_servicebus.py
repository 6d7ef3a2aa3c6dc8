"""The Service Bus adapter against the SDK's own message and batch objects (no network): batches, ids, sessions."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch

from shared.adapters.servicebus import ServiceBusJobQueue, send_in_batches, to_servicebus_message
from shared.domain.jobs import ShardMessage

STANDARD_BATCH_BYTES = 256 * 1024  # Service Bus quotas: Standard tier, per message and per batch


class RecordingSender:
    """A ServiceBusSender stand-in: hands out the SDK's real batches (Standard tier size), records each send."""

    def __init__(self, max_size_in_bytes: int = STANDARD_BATCH_BYTES) -> None:
        self.max_size_in_bytes = max_size_in_bytes
        self.sent: list[ServiceBusMessageBatch] = []

    def create_message_batch(self, max_size_in_bytes: int | None = None) -> ServiceBusMessageBatch:
        return ServiceBusMessageBatch(max_size_in_bytes=max_size_in_bytes or self.max_size_in_bytes)

    def send_messages(self, batch: Any) -> None:
        assert isinstance(batch, ServiceBusMessageBatch), "only size-checked batches are sent"
        self.sent.append(batch)


def shards_of_a_2_gb_file() -> list[ShardMessage]:
    """A 2 GiB text file cut into 128 KiB shards (the text models' size): 16,384 messages."""
    count, size = 16_384, 128 * 1024
    job = "9f" * 16
    return [
        ShardMessage("tenant-with-a-long-name-01", job, i, count, i * size, (i + 1) * size, i * 900, i * 900 + 1)
        for i in range(count)
    ]


def sent_messages(sender: RecordingSender) -> list[ServiceBusMessage]:
    return [message for batch in sender.sent for message in batch._messages]


def test_a_2_gb_plan_goes_out_in_batches_within_the_standard_tier_limit_each_message_once_in_order() -> None:
    messages = shards_of_a_2_gb_file()
    sender = RecordingSender()

    batches = send_in_batches(sender, messages)

    assert batches == len(sender.sent) > 16  # 16,384 messages cannot fit in a handful of 256 KB batches
    assert all(0 < batch.size_in_bytes <= STANDARD_BATCH_BYTES for batch in sender.sent)
    sent = sent_messages(sender)
    assert [m.message_id for m in sent] == [f"{'9f' * 16}:{i}" for i in range(16_384)]
    assert all(m.session_id is None for m in sent)
    assert [ShardMessage.from_dict(orjson.loads(b"".join(m.body))) for m in sent] == messages


def test_a_message_too_big_for_any_batch_is_refused_with_its_id() -> None:
    sender = RecordingSender(max_size_in_bytes=200)  # smaller than one shard message

    with pytest.raises(ValueError, match=r"job:0 is larger than a Service Bus batch"):
        send_in_batches(sender, [ShardMessage("acme", "job", 0, 1)])
    assert sender.sent == []


def test_a_shard_message_carries_its_shard_id_for_duplicate_detection_and_no_session() -> None:
    message = to_servicebus_message(ShardMessage("acme", "job-1", 3, 8, 10, 20, 5, 6))

    assert message.message_id == "job-1:3" and len(message.message_id) <= 128  # Service Bus quotas: 128
    assert message.session_id is None
    assert message.application_properties == {"jobId": "job-1", "shardIndex": 3}


def test_the_queue_sends_through_one_sender_in_batches() -> None:
    queue = ServiceBusJobQueue("example.servicebus.windows.net", "shards", credential=object())
    sender = RecordingSender()
    queue._sender = sender  # what get_queue_sender would open; no connection is made here

    queue.enqueue(shards_of_a_2_gb_file()[:3000])
    queue.enqueue([])

    assert len(sent_messages(sender)) == 3000 and len(sender.sent) > 1
