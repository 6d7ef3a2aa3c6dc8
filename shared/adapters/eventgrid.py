"""EventPublisher on an Event Grid domain (topic = tenant); the local broker speaks the same protocol."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from azure.core.credentials import AzureKeyCredential
from azure.eventgrid import EventGridEvent, EventGridPublisherClient

from shared.domain.events import PlatformEvent


def to_eventgrid_event(event: PlatformEvent) -> EventGridEvent:
    return EventGridEvent(
        subject=event.subject,
        event_type=event.event_type,
        data=event.data,
        data_version=event.data_version,
        topic=event.topic,
        id=event.id,
        event_time=datetime.fromisoformat(event.event_time.replace("Z", "+00:00")),
    )


class EventGridEventPublisher:
    def __init__(self, endpoint: str, *, key: str | None = None, credential: Any = None) -> None:
        self._client = EventGridPublisherClient(endpoint, AzureKeyCredential(key) if key else credential)

    def publish(self, events: Sequence[PlatformEvent]) -> None:
        if events:
            self._client.send([to_eventgrid_event(event) for event in events])
