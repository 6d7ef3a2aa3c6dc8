"""Finds the functions that function_app.py registers and calls them as the Functions host would."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

import azure.functions as func


@cache
def _registered() -> dict[str, Callable[..., Any]]:
    # FunctionApp.get_functions() builds the functions anew and refuses a second call on the same app.
    import function_app

    return {str(fn.get_function_name()): fn.get_user_function() for fn in function_app.app.get_functions()}


_lock = threading.Lock()


def registered_function(name: str) -> Callable[..., Any]:
    """The user function registered under `name` in function_app.app (read once per process)."""
    with _lock:
        functions = _registered()
    try:
        return functions[name]
    except KeyError:
        raise LookupError(f"function_app registers no function named {name!r}") from None


def blob_created_event(
    *,
    account: str,
    container: str,
    blob: str,
    etag: str,
    size: int,
    content_type: str | None,
    url: str,
    sequencer: int,
    api: str = "PutBlob",
) -> func.EventGridEvent:
    """A Microsoft.Storage.BlobCreated event with the fields Azure's storage system topic sends."""
    return func.EventGridEvent(
        id=str(uuid.uuid4()),
        topic=f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local/providers/"
        f"Microsoft.Storage/storageAccounts/{account}",
        subject=f"/blobServices/default/containers/{container}/blobs/{blob}",
        event_type="Microsoft.Storage.BlobCreated",
        event_time=datetime.now(UTC),
        data_version="",
        data={
            "api": api,
            "clientRequestId": str(uuid.uuid4()),
            "requestId": str(uuid.uuid4()),
            "eTag": etag,
            "contentType": content_type or "application/octet-stream",
            "contentLength": size,
            "blobType": "BlockBlob",
            "url": url,
            "sequencer": f"{sequencer:032x}",
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
        },
    )


def servicebus_message(
    body: bytes,
    *,
    message_id: str,
    delivery_count: int,
    session_id: str | None,
    enqueued_time_utc: datetime | None = None,
) -> func.ServiceBusMessage:
    from azure.functions.servicebus import ServiceBusMessage

    return ServiceBusMessage(
        body=body,
        message_id=message_id,
        delivery_count=delivery_count,
        enqueued_time_utc=enqueued_time_utc,
        session_id=session_id,
        content_type="application/json",
        application_properties={},
        user_properties={},
    )
