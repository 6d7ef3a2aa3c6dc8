"""Publishing the platform's events: into the tenant's event log first, then to Event Grid."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from shared.domain.events import PlatformEvent
from shared.services.platform import Platform

logger = logging.getLogger(__name__)


def publish_events(platform: Platform, events: Sequence[PlatformEvent]) -> None:
    """Records the events in the event log, then publishes them (at least once, their ids unchanged).

    The log comes first: an event Event Grid accepted is always in the log, so redelivery and replay can find
    it; a publish that fails leaves it recorded, and the caller's retry (or the sweeper's) records it again (an
    upsert by tenant and id: still one entry) and publishes it with the same id.
    """
    if not events:
        return
    platform.event_log.record(events)
    platform.events.publish(events)
    logger.debug("published %d event(s): %s", len(events), ", ".join(e.id for e in events))
