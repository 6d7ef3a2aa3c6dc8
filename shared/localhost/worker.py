"""A local worker process: pulls shard messages from the Azurite queue and calls the registered worker function."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from shared.adapters.storage_queue import ReceivedShard, StorageQueueJobQueue
from shared.bootstrap import build_job_queue, get_platform, tune_gc_for_batch_work
from shared.config import get_settings
from shared.localhost.functions_host import registered_function, servicebus_message

logger = logging.getLogger(__name__)
# One line when a run starts and one when it ends, whatever the log level, as the Functions host logs
# "Executing"/"Executed" for every invocation: a shard's run can be found (and timed) in the worker's log.
invocations = logging.getLogger(f"{__name__}.invocations")
RETRY_BACKOFF_SECONDS = (1, 2, 5, 10, 30)
TIMEOUT_EXIT_STATUS = 75  # EX_TEMPFAIL: the shard is delivered again elsewhere


def handle(queue: StorageQueueJobQueue, received: ReceivedShard, max_deliveries: int) -> None:
    """Settles one message the way the Functions host settles a Service Bus message."""
    if received.message is None or received.delivery_count > max_deliveries:
        reason = "unreadable message" if received.message is None else "max delivery count exceeded"
        logger.error("message %s dead-lettered: %s", received.message_id, reason)
        queue.dead_letter(received, reason)
        return
    message = received.message
    fn = registered_function("run_shard")
    done = threading.Event()
    renewer = threading.Thread(target=_keep_locked, args=(queue, received, done), daemon=True)
    renewer.start()
    invocations.info(
        "Executing run_shard (messageId=%s, deliveryCount=%d)", message.message_id, received.delivery_count
    )
    try:
        fn(
            servicebus_message(
                received.body,
                message_id=message.message_id,
                delivery_count=received.delivery_count,
                session_id=None,  # the Service Bus queue has no sessions either
                enqueued_time_utc=getattr(received.handle, "inserted_on", None),  # the queue's own clock
            )
        )
    except Exception:
        invocations.info("Executed run_shard (messageId=%s, Failed)", message.message_id)
        logger.exception(
            "shard %s failed (delivery %d of %d)", message.message_id, received.delivery_count, max_deliveries
        )
        pause = RETRY_BACKOFF_SECONDS[min(received.delivery_count, len(RETRY_BACKOFF_SECONDS)) - 1]
        done.set()
        renewer.join()
        queue.abandon(received, retry_after_seconds=pause)
        return
    invocations.info("Executed run_shard (messageId=%s, Succeeded)", message.message_id)
    done.set()
    renewer.join()
    queue.complete(received)


def _keep_locked(queue: StorageQueueJobQueue, received: ReceivedShard, done: threading.Event) -> None:
    """Renews the message's lock at a third of its length until the shard is settled, up to the shard timeout.

    As the Functions host does (functionTimeout, with maxAutoLockRenewalDuration at least as long): a run past
    the timeout is ended by recycling the worker process, and its message is delivered again once its lock
    runs out. The local host restarts a worker that exits.
    """
    settings = get_settings()
    interval = max(1.0, settings.queue_visibility_seconds / 3)
    deadline = time.monotonic() + settings.shard_timeout_seconds
    while not done.wait(interval):
        if time.monotonic() >= deadline:
            logger.error(
                "shard %s ran past the shard timeout of %ss; this worker exits, as the Functions host would end it",
                received.message_id,
                settings.shard_timeout_seconds,
            )
            logging.shutdown()
            os._exit(TIMEOUT_EXIT_STATUS)
        try:
            queue.renew(received)
        except Exception:
            logger.warning("could not renew the lock of %s; it may be redelivered", received.message_id)
            return


def run_worker(stop: threading.Event, *, idle_sleep: float = 0.05) -> None:
    settings = get_settings()
    queue = build_job_queue(settings)
    assert isinstance(queue, StorageQueueJobQueue)
    get_platform()  # connect before the first message, not during it
    registered_function("run_shard")
    tune_gc_for_batch_work()
    idle = idle_sleep
    while not stop.is_set():
        messages = queue.receive(max_messages=1)
        if not messages:
            stop.wait(idle)
            idle = min(idle * 2, 0.1)
            continue
        idle = idle_sleep
        for received in messages:
            handle(queue, received, settings.max_delivery_count)


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("AIAAS_LOG_LEVEL", "WARNING"),
        format="%(asctime)s worker[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    invocations.setLevel(logging.INFO)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_worker(stop)


if __name__ == "__main__":
    main()
