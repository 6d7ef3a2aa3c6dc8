"""Publishing events: each goes into the tenant's event log before Event Grid sees it, so redelivery and replay
always find what subscribers were sent, and a failed publish leaves it there for the re-drive."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest

from shared.domain.events import PlatformEvent
from shared.domain.jobs import Job
from shared.services.events import publish_events
from shared.services.ingest import admit_blob_created
from shared.services.platform import Platform
from shared.services.shards import run_shard
from shared.services.sweeper import sweep
from tests.fakes import MODEL_NAME, Fakes, sample_bytes, upload

LONG_AGO = "2000-01-01T00:00:00.000Z"


def event(tenant: str = "acme", event_id: str = "e1") -> PlatformEvent:
    return PlatformEvent(
        id=event_id,
        event_type="AIaaS.Job.Succeeded",
        subject=f"/tenants/{tenant}/jobs/j1",
        data={"jobId": "j1"},
        event_time="2026-11-01T10:00:00.000Z",
        topic=tenant,
    )


class DownPublisher:
    """Event Grid refusing every publish, noting what the event log held at each attempt."""

    def __init__(self, platform: Platform, *, fail: bool = True) -> None:
        self._platform = platform
        self.fail = fail
        self.logged_at_publish: list[list[PlatformEvent]] = []
        self.published: list[PlatformEvent] = []

    def publish(self, events: Sequence[PlatformEvent]) -> None:
        self.logged_at_publish.append(self._platform.event_log.get_events("acme", [e.id for e in events]))
        if self.fail:
            raise ConnectionError("Event Grid unreachable")
        self.published.extend(events)


def test_events_are_in_the_log_before_they_are_published(platform: Platform) -> None:
    publisher = DownPublisher(platform, fail=False)
    platform.events = publisher
    first, second = event(event_id="e1"), event(event_id="e2")

    publish_events(platform, [first, second])

    assert publisher.logged_at_publish == [[first, second]]
    assert publisher.published == [first, second]


def test_a_failed_publish_leaves_the_event_in_the_log_and_a_retry_keeps_one_entry(platform: Platform) -> None:
    publisher = DownPublisher(platform)
    platform.events = publisher
    sent = event()

    with pytest.raises(ConnectionError):
        publish_events(platform, [sent])
    assert platform.event_log.list_events("acme") == ([sent], None)

    publisher.fail = False
    publish_events(platform, [sent])  # the re-drive: the same event, the same id

    assert publisher.published == [sent]
    assert platform.event_log.list_events("acme") == ([sent], None)


def test_publishing_nothing_touches_neither_log_nor_grid(platform: Platform) -> None:
    publisher = DownPublisher(platform)
    platform.events = publisher

    publish_events(platform, [])

    assert publisher.logged_at_publish == []


def run_job(platform: Platform) -> Job:
    path = f"inbox/{MODEL_NAME}/rows.jsonl"
    data = b"".join(sample_bytes("breast-cancer.jsonl").splitlines(keepends=True)[:3])
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, data))
    assert job is not None
    for message in platform.queue.drain():  # type: ignore[attr-defined]
        run_shard(platform, message)
    return platform.jobs.get_job("acme", job.job_id)


def test_a_finished_jobs_event_is_in_the_tenants_event_log_with_the_id_subscribers_got(
    platform: Platform, fakes: Fakes
) -> None:
    job = run_job(platform)

    [published] = fakes.events.of_job(job.job_id)
    assert platform.event_log.get_events("acme", [published.id]) == [published]
    assert platform.event_log.get_events("someone-else", [published.id]) == []


def test_an_event_event_grid_refused_is_logged_and_the_sweeper_sends_it_with_the_same_id(
    platform: Platform, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_publish = fakes.events.publish

    def grid_down(events: Sequence[PlatformEvent]) -> None:
        raise ConnectionError("Event Grid unreachable")

    monkeypatch.setattr(fakes.events, "publish", grid_down)
    with pytest.raises(ConnectionError):
        run_job(platform)
    [job] = platform.jobs.list_unfinished(updated_before="9999")
    assert job.terminal and not job.event_published
    [logged], _ = platform.event_log.list_events("acme")

    monkeypatch.setattr(fakes.events, "publish", real_publish)
    job.updated_at = LONG_AGO
    platform.jobs.replace_job(job)
    sweep(platform, stalled_after=timedelta(seconds=0), max_sweeps=5)

    assert [e.id for e in fakes.events.of_job(job.job_id)] == [logged.id]
    assert platform.event_log.list_events("acme") == ([logged], None)
    assert platform.jobs.get_job("acme", job.job_id).event_published
