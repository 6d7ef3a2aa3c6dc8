"""Drift in jobs over the fakes: shard sketches, the job's drift section, its one DriftDetected event, the listing."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.domain import drift as drift_math
from shared.domain.errors import UnknownModel
from shared.domain.events import DRIFT_DETECTED
from shared.domain.jobs import Job, JobStatus
from shared.services import drift as drift_service
from shared.services.drift import MAX_SHARD_SKETCHES, SKETCHES_BUDGET_BYTES, drift_event_id, drift_report
from shared.services.ingest import admit_blob_created
from shared.services.outcomes import republish_unsent_event
from shared.services.platform import Platform
from shared.services.shards import ShardOutcome, record_shard, run_shard
from tests.fakes import API_URL, Fakes, add_tenant, fakes_of, make_platform, model_package_dir, upload
from tests.unit.test_shards import jsonl, run_queue, sample_rows

DRIFT_MODEL = "bc-drift"


def scaled(rows: list[dict[str, Any]], factor: float = 1.5) -> list[dict[str, Any]]:
    return [{k: v * factor if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def shuffled(rows: list[dict[str, Any]], features: list[str]) -> list[dict[str, Any]]:
    """Each row's feature values moved one column on (a file whose columns were mixed up)."""
    return [
        {"id": row["id"], **{f: row[features[(i + 1) % len(features)]] for i, f in enumerate(features)}} for row in rows
    ]


def make_profile(card: dict[str, Any]) -> dict[str, Any]:
    """A reference profile as the build makes one (shared.domain.drift), over the held-out sample rows."""
    rows = sample_rows()
    features = [drift_math.numeric_reference(name, [row[name] for row in rows]) for name in card["features"]]
    prediction = drift_math.label_reference([row["expected"] for row in rows], known=card["labels"])
    return drift_math.make_profile(card["name"], card["version"], features, prediction, reference="held-out sample")


def publish_copy(
    platform: Platform, directory: Path, name: str = DRIFT_MODEL, *, with_profile: bool = True, **card_fields: Any
) -> dict[str, Any]:
    """The built breast-cancer package as public model `name`, with a profile.json of ours listed in its files
    (or, `with_profile` False, none at all); returns the profile."""
    source = model_package_dir()
    card = orjson.loads((source / "card.json").read_bytes())
    card.update(name=name, **card_fields)
    card.pop("drift", None)
    card["files"] = [f for f in card.get("files") or [] if f["file"] != "profile.json"]
    directory.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {}
    if with_profile:
        profile = make_profile(card)
        card["drift"] = drift_math.card_drift_section(profile)
        card["files"].append({"file": "profile.json"})
        (directory / "profile.json").write_bytes(orjson.dumps(profile))
    for item in card["files"]:
        if item["file"] != "profile.json":
            (directory / item["file"]).write_bytes((source / item["file"]).read_bytes())
    (directory / "card.json").write_bytes(orjson.dumps(card))
    (directory / "model.onnx").write_bytes((source / "model.onnx").read_bytes())
    platform.models.publish_package(directory)  # type: ignore[attr-defined]
    return profile


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    plat = make_platform()
    add_tenant(plat, "acme")
    add_tenant(plat, "globex")
    publish_copy(plat, tmp_path / "pkg")
    return plat


@pytest.fixture
def fakes(platform: Platform) -> Fakes:
    return fakes_of(platform)


def run_file(
    platform: Platform, rows: list[Any], *, tenant: str = "acme", model: str = DRIFT_MODEL, name: str = "rows.jsonl"
) -> Job:
    path = f"inbox/{model}/{name}"
    job = admit_blob_created(platform, tenant, path, upload(platform, tenant, path, jsonl(rows)))
    assert job is not None
    while run_queue(platform):
        pass
    done = platform.jobs.get_job(tenant, job.job_id)
    assert done.terminal, done
    return done


def test_held_out_rows_do_not_drift_and_publish_no_drift_event(platform: Platform, fakes: Fakes) -> None:
    job = run_file(platform, sample_rows())

    assert job.status == JobStatus.SUCCEEDED and job.drift is not None
    assert job.drift["status"] == "ok" and job.drift["rows"] == 143
    card = orjson.loads((model_package_dir() / "card.json").read_bytes())
    assert [f["name"] for f in job.drift["features"]] == card["features"]
    for feature in job.drift["features"]:
        assert feature["metric"] == "ks" and feature["threshold"] == 0.05 and feature["drifted"] is False
    assert job.drift["prediction"]["drifted"] is False
    assert job.public_view(API_URL)["drift"] == job.drift
    assert [e.event_type for e in fakes.events.events] == ["AIaaS.Job.Succeeded"]


@pytest.mark.parametrize("shift", ["scaled", "shuffled"])
def test_shifted_rows_drift_and_publish_one_drift_event_after_the_terminal_one(
    platform: Platform, fakes: Fakes, shift: str
) -> None:
    rows = sample_rows()
    card = orjson.loads((model_package_dir() / "card.json").read_bytes())
    job = run_file(platform, scaled(rows) if shift == "scaled" else shuffled(rows, card["features"]))

    assert job.drift is not None and job.drift["status"] == "drifted", job.drift
    assert job.drift["share"] >= 0.5
    terminal, detected = fakes.events.events
    assert terminal.event_type.startswith("AIaaS.Job.") and detected.event_type == DRIFT_DETECTED
    assert detected.id == drift_event_id(job.job_id) != terminal.id
    assert detected.subject == f"/tenants/acme/models/{DRIFT_MODEL}" and detected.topic == "acme"
    assert detected.data["jobId"] == job.job_id
    assert detected.data["model"] == {"name": DRIFT_MODEL, "version": job.model_version}
    assert detected.data["drift"] == job.drift
    # Recorded in the tenant's event log too (redelivery and replay find it there).
    assert [e.id for e in platform.event_log.get_events("acme", [detected.id])] == [detected.id]


def test_a_republished_terminal_event_brings_the_same_drift_event_again(platform: Platform, fakes: Fakes) -> None:
    """A publisher that died before marking its event sent: the sweeper's re-drive publishes both, same ids."""
    job = run_file(platform, scaled(sample_rows()))
    first = [(e.event_type, e.id) for e in fakes.events.events]
    job.event_published = False
    platform.jobs.replace_job(job)
    republish_unsent_event(platform, platform.jobs.get_job("acme", job.job_id))
    assert [(e.event_type, e.id) for e in fakes.events.events] == first * 2


def test_many_shards_give_the_drift_of_one_sketch_over_the_whole_file(platform: Platform, tmp_path: Path) -> None:
    """A file cut into more shards than keep a sketch each: the folded sketches judge it as one pass would."""
    profile = publish_copy(platform, tmp_path / "small", name="bc-drift-small", shardBytes=4096)
    rows = [dict(row, id=f"row-{i}") for i, row in enumerate(scaled(sample_rows(), 1.1) * 2)]
    job = run_file(platform, rows, model="bc-drift-small")

    assert job.shard_count > MAX_SHARD_SKETCHES + 1
    assert len(job.shard_sketches) <= MAX_SHARD_SKETCHES + 1
    assert sum(len(orjson.dumps(doc)) for doc in job.shard_sketches.values()) <= SKETCHES_BUDGET_BYTES
    outputs = [item["output"] for page in platform.results.iter_pages("acme", job.job_id) for item in page.items]
    whole = drift_math.DriftSketch.empty(profile)
    whole.add(rows, outputs)
    expected = drift_math.evaluate(profile, whole)
    assert job.drift is not None and expected is not None
    assert job.drift["rows"] == len(rows) and job.drift["status"] == expected["status"]
    for got, want in zip(job.drift["features"], expected["features"], strict=True):
        assert (got["name"], got["drifted"]) == (want["name"], want["drifted"])
        assert got["value"] == pytest.approx(want["value"], rel=1e-9, abs=1e-12)


def test_failed_records_are_not_in_the_sketch(platform: Platform) -> None:
    rows = sample_rows()[:40]
    broken = [*rows, {"id": "bad", "mean radius": "twelve"}, [1, 2, 3]]
    job = run_file(platform, broken)
    assert job.status == JobStatus.PARTIALLY_SUCCEEDED
    assert job.drift is not None and job.drift["rows"] == 40
    assert all(f["rows"] == 40 for f in job.drift["features"])


def test_a_redelivered_shard_keeps_one_sketch(platform: Platform) -> None:
    """The sketch is recorded with the shard: a second recording of the same shard changes nothing."""
    path = f"inbox/{DRIFT_MODEL}/twice.jsonl"
    rows = sample_rows()[:30]
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, jsonl(rows)))
    assert job is not None
    [message] = platform.queue.drain()  # type: ignore[attr-defined]
    recorded = run_shard(platform, message)
    sketch = recorded.shard_sketches[0]
    again = record_shard(platform, "acme", job.job_id, 0, ShardOutcome(sketch=sketch))
    assert again.drift is not None and again.drift["rows"] == 30
    assert again.shard_sketches == {0: sketch}


def test_a_model_without_a_profile_has_no_drift_section(platform: Platform, fakes: Fakes, tmp_path: Path) -> None:
    publish_copy(platform, tmp_path / "plain", name="bc-plain", with_profile=False)
    job = run_file(platform, scaled(sample_rows()), model="bc-plain")
    assert job.status == JobStatus.SUCCEEDED
    assert job.drift is None and job.shard_sketches == {}
    assert "drift" not in job.public_view(API_URL)
    assert [e.event_type for e in fakes.events.events] == ["AIaaS.Job.Succeeded"]
    report = drift_report(platform, "acme", "bc-plain", start=None, end=None)
    assert report["items"] == []


def test_the_drift_listing_is_the_tenants_own_newest_first_and_paged(platform: Platform) -> None:
    clean = run_file(platform, sample_rows(), name="clean.jsonl")
    shifted = run_file(platform, scaled(sample_rows()), name="shifted.jsonl")
    run_file(platform, scaled(sample_rows()), tenant="globex", name="theirs.jsonl")

    report = drift_report(platform, "acme", DRIFT_MODEL, start=None, end=None)
    assert [(i["jobId"], i["drift"]["status"]) for i in report["items"]] == [
        (shifted.job_id, "drifted"),
        (clean.job_id, "ok"),
    ]
    assert report["items"][0]["drift"] == shifted.drift and report["continuationToken"] is None
    first = drift_report(platform, "acme", DRIFT_MODEL, start=None, end=None, limit=1)
    assert [i["jobId"] for i in first["items"]] == [shifted.job_id]
    rest = drift_report(platform, "acme", DRIFT_MODEL, start=None, end=None, continuation=first["continuationToken"])
    assert [i["jobId"] for i in rest["items"]] == [clean.job_id]
    assert drift_report(platform, "acme", DRIFT_MODEL, start="2020-01-01", end="2020-01-31")["items"] == []
    [theirs] = drift_report(platform, "globex", DRIFT_MODEL, start=None, end=None)["items"]
    assert theirs["jobId"] not in {clean.job_id, shifted.job_id}
    with pytest.raises(UnknownModel):
        drift_report(platform, "acme", "no-such-model", start=None, end=None)


def test_a_drifted_job_is_handed_to_retraining_whose_failure_is_only_logged(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    handed: list[str] = []

    def on_drift(plat: Platform, job: Job) -> None:
        handed.append(job.job_id)
        raise RuntimeError("trainer down")

    fake = types.ModuleType("shared.services.retraining")
    fake.on_drift = on_drift  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "shared.services.retraining", fake)
    monkeypatch.setattr("shared.services.retraining", fake, raising=False)
    clean = run_file(platform, sample_rows(), name="clean.jsonl")
    with caplog.at_level(logging.ERROR, logger=drift_service.__name__):
        shifted = run_file(platform, scaled(sample_rows()), name="shifted.jsonl")
    assert handed == [shifted.job_id] != [clean.job_id]
    assert shifted.status == JobStatus.SUCCEEDED and shifted.event_published
    assert "trainer down" in caplog.text


def test_sketches_past_the_byte_budget_fold_into_one_with_the_same_verdict(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job document is one Cosmos DB item (2 MB): the kept sketches never pass their budget, however many."""
    publish_copy(platform, tmp_path / "small", name="bc-drift-small", shardBytes=16384)
    rows = [dict(row, id=f"row-{i}") for i, row in enumerate(scaled(sample_rows(), 1.1))]
    unbounded = run_file(platform, rows, model="bc-drift-small", name="a.jsonl")
    one_sketch = max(len(orjson.dumps(doc)) for doc in unbounded.shard_sketches.values())
    assert len(unbounded.shard_sketches) == unbounded.shard_count > 3

    monkeypatch.setattr(drift_service, "SKETCHES_BUDGET_BYTES", 2 * one_sketch + 1)
    bounded = run_file(platform, rows, model="bc-drift-small", name="b.jsonl")
    assert sum(len(orjson.dumps(doc)) for doc in bounded.shard_sketches.values()) <= 2 * one_sketch + 1
    assert bounded.drift is not None and unbounded.drift is not None
    assert [(f["name"], f["drifted"]) for f in bounded.drift["features"]] == [
        (f["name"], f["drifted"]) for f in unbounded.drift["features"]
    ]
    assert bounded.drift["rows"] == unbounded.drift["rows"] == len(rows)


def test_a_sketch_too_big_to_keep_is_logged_and_the_job_ends_without_drift(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(drift_service, "MAX_SKETCH_DOC_BYTES", 1000)
    with caplog.at_level(logging.WARNING, logger=drift_service.__name__):
        job = run_file(platform, sample_rows())
    assert job.status == JobStatus.SUCCEEDED and job.drift is None
    assert "not kept" in caplog.text


def test_the_drift_route_answers_the_listing_as_typed_in_the_openapi_document(platform: Platform) -> None:
    from fastapi.testclient import TestClient

    from shared.api.app import create_app

    key = add_tenant(platform, "initech")
    shifted = run_file(platform, scaled(sample_rows()), tenant="initech")
    client = TestClient(create_app(lambda: platform), raise_server_exceptions=False)
    auth = {"Authorization": f"Bearer {key}"}
    answer = client.get(f"/api/v1/models/{DRIFT_MODEL}/drift", headers=auth)
    assert answer.status_code == 200, answer.text
    assert answer.json() == drift_report(platform, "initech", DRIFT_MODEL, start=None, end=None)
    assert answer.json()["items"][0]["drift"] == shifted.drift  # every figure, none added
    bad = client.get(f"/api/v1/models/{DRIFT_MODEL}/drift", headers=auth, params={"continuationToken": "abc"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidContinuationToken"
    assert client.get(f"/api/v1/models/{DRIFT_MODEL}/drift").status_code == 401
    schema = client.get("/api/openapi.json").json()
    operation = schema["paths"]["/api/v1/models/{name}/drift"]["get"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DriftPage"
    }
