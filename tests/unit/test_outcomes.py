"""One terminal event per job, at the publisher: the local broker (like Event Grid) delivers every publish."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shared.domain.jobs import PLAN, Job, JobStatus, ShardMessage
from shared.services.ingest import admit_blob_created
from shared.services.platform import Platform
from shared.services.shards import run_shard
from shared.services.sweeper import sweep
from tests.fakes import MODEL_NAME, Fakes, sample_bytes, upload

LONG_AGO = "2000-01-01T00:00:00.000Z"


def ended_but_unsent(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Job:
    """A job whose worker died after it wrote the terminal status and published, before it marked the event
    sent (the one window the outbox cannot close), idle since long ago."""
    path = f"inbox/{MODEL_NAME}/rows.jsonl"
    data = b"".join(sample_bytes("breast-cancer.jsonl").splitlines(keepends=True)[:3])
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, data))
    assert job is not None
    jobs = platform.jobs
    real_replace = jobs.replace_job

    def dies_at_the_mark(changed: Job) -> Job:
        if changed.event_published:
            raise ConnectionError("worker killed")
        return real_replace(changed)

    monkeypatch.setattr(jobs, "replace_job", dies_at_the_mark)
    for message in platform.queue.drain():  # type: ignore[attr-defined]
        with pytest.raises(ConnectionError):
            run_shard(platform, message)
    monkeypatch.setattr(jobs, "replace_job", real_replace)
    ended = jobs.get_job("acme", job.job_id)
    assert ended.terminal and not ended.event_published
    ended.updated_at = LONG_AGO
    return real_replace(ended)


def test_the_sweeper_sends_an_event_left_unsent_once_with_its_id(
    platform: Platform, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = ended_but_unsent(platform, monkeypatch)
    [first] = fakes.events.of_job(job.job_id)

    for _ in range(3):
        sweep(platform, stalled_after=timedelta(seconds=0), max_sweeps=5)

    assert [e.id for e in fakes.events.of_job(job.job_id)] == [first.id, first.id]  # the crash's one duplicate
    assert platform.jobs.get_job("acme", job.job_id).event_published


def test_a_sweep_with_a_stale_listing_does_not_publish_an_event_that_went_out_since(
    platform: Platform, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the sweeper's query and its turn at the job, the late publisher (or another sweep) sent it."""
    job = ended_but_unsent(platform, monkeypatch)
    jobs = platform.jobs
    listing = jobs.list_unfinished

    def then_it_is_sent(**kwargs: Any) -> list[Job]:
        stale = listing(**kwargs)
        sent = jobs.get_job("acme", job.job_id)
        sent.event_published = True
        jobs.replace_job(sent)
        return stale

    monkeypatch.setattr(jobs, "list_unfinished", then_it_is_sent)

    sweep(platform, stalled_after=timedelta(seconds=0), max_sweeps=5)

    assert len(fakes.events.of_job(job.job_id)) == 1


def test_of_two_sweeps_racing_for_an_unsent_event_one_publishes(
    platform: Platform, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = ended_but_unsent(platform, monkeypatch)
    jobs = platform.jobs
    real_replace = jobs.replace_job
    claims: list[Job] = []

    def other_sweep_first(changed: Job) -> Job:
        if not claims:  # the other sweep's claim lands between this one's read and its own claim
            claims.append(real_replace(jobs.get_job("acme", job.job_id)))
        return real_replace(changed)

    monkeypatch.setattr(jobs, "replace_job", other_sweep_first)

    sweep(platform, stalled_after=timedelta(seconds=0), max_sweeps=5)

    assert claims and len(fakes.events.of_job(job.job_id)) == 1  # the worker's publish; this sweep lost the claim
    assert not jobs.get_job("acme", job.job_id).event_published  # still the other sweep's to send


def test_a_plan_message_for_a_job_that_ended_publishes_nothing(
    platform: Platform, fakes: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the writer of the terminal status publishes; a redelivered message that finds the job ended does not."""
    job = ended_but_unsent(platform, monkeypatch)

    run_shard(platform, ShardMessage("acme", job.job_id, 0, 0, kind=PLAN))
    run_shard(platform, ShardMessage("acme", job.job_id, 0, 1))

    assert len(fakes.events.of_job(job.job_id)) == 1
    assert platform.jobs.get_job("acme", job.job_id).status == JobStatus.SUCCEEDED
