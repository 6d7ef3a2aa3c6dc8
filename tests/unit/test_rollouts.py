"""Rollouts over the fakes: the deterministic canary split, the gates' verdicts, promotion and rollback with their
figures in the alias history, audit log and events, shadows kept apart, and evidence updates that race."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.domain.audit import AuditEntry
from shared.domain.errors import InvalidInput
from shared.domain.jobs import Job, JobStatus
from shared.services import rollouts
from shared.services.ingest import admit_blob_created
from shared.services.platform import Platform
from shared.services.shards import run_shard
from tests.fakes import MODEL_NAME, add_tenant, make_platform, model_package_dir, sample_bytes, upload

ROWS = [line + b"\n" for line in sample_bytes("breast-cancer.jsonl").splitlines() if line.strip()]


def publish_version(platform: Platform, root: Path, version: str, *, inverted: bool = False) -> None:
    """The built breast-cancer package as another public version; `inverted` swaps its labels (a broken model:
    the same weights, every answer the wrong way round)."""
    source, target = model_package_dir(), root / version
    shutil.copytree(source, target)
    card = json.loads((target / "card.json").read_text())
    card["version"] = version
    if inverted:
        card["labels"] = list(reversed(card["labels"]))
    (target / "card.json").write_text(json.dumps(card))
    platform.models.publish_package(target, set_alias=None)  # type: ignore[attr-defined]


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    plat = make_platform(batch_size=8)
    add_tenant(plat, "acme")
    add_tenant(plat, "globex")
    publish_version(plat, tmp_path, "2")
    publish_version(plat, tmp_path, "3", inverted=True)
    return plat


def run_job(platform: Platform, tenant: str = "acme", rows: int = 10) -> Job:
    path = f"inbox/{MODEL_NAME}/{uuid.uuid4().hex}.jsonl"
    job = admit_blob_created(platform, tenant, path, upload(platform, tenant, path, b"".join(ROWS[:rows])))
    assert job is not None
    while messages := platform.queue.drain():  # type: ignore[attr-defined]
        for message in messages:
            run_shard(platform, message)
    return platform.jobs.get_job(tenant, job.job_id)


def aliases(platform: Platform) -> dict[str, Any]:
    return rollouts.present(platform.models.get_aliases("acme", MODEL_NAME))


def canary(version: str, **extra: Any) -> dict[str, Any]:
    return {"version": version, "percent": 99, "evidence": {"jobs": 2, "records": 20}, **extra}


def test_the_split_is_by_job_id_alone_and_near_the_percent() -> None:
    ids = [uuid.uuid4().hex for _ in range(4000)]
    arms = [rollouts.arm_for(job_id, 20) for job_id in ids]
    assert arms == [rollouts.arm_for(job_id, 20) for job_id in ids]  # the same on every call (and machine)
    share = arms.count("canary") / len(ids)
    assert 0.17 < share < 0.23
    assert all(rollouts.canary_bucket(job_id) < 20 for job_id, arm in zip(ids, arms, strict=True) if arm == "canary")


def test_a_replayed_upload_is_the_same_job_in_the_same_arm(platform: Platform) -> None:
    rollouts.start_rollout(
        platform, owner=None, name=MODEL_NAME, alias="production", canary={"version": "2", "percent": 50}, by="op"
    )
    path = f"inbox/{MODEL_NAME}/replayed.jsonl"
    info = upload(platform, "acme", path, b"".join(ROWS[:3]))
    first = admit_blob_created(platform, "acme", path, info)
    again = admit_blob_created(platform, "acme", path, info)
    assert first is not None and again is not None and first.job_id == again.job_id
    arm = rollouts.arm_for(first.job_id, 50)
    assert first.rollout is not None
    assert first.rollout["arm"] == again.rollout["arm"] == arm  # type: ignore[index]
    assert first.model_version == ("2" if arm == "canary" else "1")
    assert first.public_view("http://x")["rollout"] == {
        "alias": "production",
        "arm": arm,
        "stableVersion": "1",
        "canaryVersion": "2",
        **({"compareWith": "1"} if arm == "canary" else {}),
    }


def test_a_good_canary_is_promoted_after_its_evidence_with_the_figures_everywhere(platform: Platform) -> None:
    rollouts.start_rollout(
        platform,
        owner=None,
        name=MODEL_NAME,
        alias="production",
        canary=canary("2", gates={"minAgreement": 0.95, "maxErrorRate": 0.05}),
        by="operator:ops",
    )
    jobs = [run_job(platform, tenant) for tenant in ("acme", "globex", "acme")]
    canary_jobs = [job for job in jobs if job.rollout and job.rollout["arm"] == "canary"]
    assert len(canary_jobs) >= 2 and all(job.model_version == "2" for job in canary_jobs)
    view = aliases(platform)
    assert view["aliases"]["production"] == "2"
    assert view["rollouts"] == {}
    decision = view["history"][-1]
    assert decision["rollout"] == "promoted" and (decision["from"], decision["to"]) == ("1", "2")
    assert "decidedBy" not in decision  # a public model's: it would name one tenant's job to all
    assert decision["figures"]["canary"]["agreement"] == 1.0
    assert decision["figures"]["canary"]["compared"] == 20 and decision["figures"]["canary"]["errorRate"] == 0.0
    assert {g["name"]: g["status"] for g in decision["gates"]} == {"maxErrorRate": "passed", "minAgreement": "passed"}
    # The comparison ran the stable version on the canary's records; the tenant got only the canary's results.
    for job in canary_jobs:
        items = [i for p in platform.results.iter_pages(job.tenant_id, job.job_id) for i in p.items]
        assert len(items) == job.counts.records == 10
    events = [e for e in platform.events.events if e.event_type == "AIaaS.Model.Promoted"]  # type: ignore[attr-defined]
    assert sorted(e.topic for e in events) == ["acme", "globex"]  # every tenant whose jobs were in the rollout
    assert events[0].subject == f"/tenants/{events[0].topic}/models/{MODEL_NAME}"
    assert events[0].data["figures"]["canary"]["agreement"] == 1.0 and events[0].data["to"] == "2"
    audit: list[AuditEntry] = platform.audit.entries  # type: ignore[attr-defined]
    promoted = [e for e in audit if e.action == "models.rollout.promote"]
    assert sorted(e.tenant_id for e in promoted) == ["acme", "globex"]
    assert promoted[0].details is not None and promoted[0].details["figures"]["canary"]["records"] >= 20
    # The next job of the alias runs the promoted version, with no rollout any more.
    after = run_job(platform)
    assert after.model_version == "2" and after.rollout is None


def test_an_inverted_canary_is_rolled_back_at_its_first_job(platform: Platform) -> None:
    rollouts.start_rollout(
        platform,
        owner=None,
        name=MODEL_NAME,
        alias="production",
        canary=canary("3", gates={"minAgreement": 0.9}, evidence={"jobs": 50, "records": 5000}),
        by="operator:ops",
    )
    first = run_job(platform)
    while not (first.rollout and first.rollout["arm"] == "canary"):  # 1 in 100 jobs stays on stable
        first = run_job(platform)
    view = aliases(platform)
    assert view["aliases"]["production"] == "1" and view["rollouts"] == {}
    decision = view["history"][-1]
    assert decision["rollout"] == "rolledBack" and decision["canaryVersion"] == "3"
    assert decision["evidence"]["jobs"] == {"needed": 50, "observed": 1}
    [gate] = decision["gates"]
    assert gate["name"] == "minAgreement" and gate["status"] == "failed" and gate["value"] < 0.2
    [event] = [e for e in platform.events.events if e.event_type == "AIaaS.Model.RolledBack"]  # type: ignore[attr-defined]
    assert event.data["gates"][0]["value"] == gate["value"] and event.data["to"] == "1"
    assert run_job(platform).model_version == "1"


def test_a_canary_that_fails_records_is_rolled_back_by_the_error_rate(platform: Platform, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_package_dir(), broken)
    card = json.loads((broken / "card.json").read_text())
    card["version"] = "4"
    card["features"] = [*card["features"][:-1], "a field no record has"]  # every record refused
    (broken / "card.json").write_text(json.dumps(card))
    platform.models.publish_package(broken, set_alias=None)  # type: ignore[attr-defined]
    rollouts.start_rollout(
        platform,
        owner=None,
        name=MODEL_NAME,
        alias="production",
        canary=canary("4", gates={"maxErrorRate": 0.1}),
        by="op",
    )
    job = run_job(platform)
    while not (job.rollout and job.rollout["arm"] == "canary"):
        job = run_job(platform)
    assert job.status == JobStatus.FAILED
    decision = aliases(platform)["history"][-1]
    assert decision["rollout"] == "rolledBack"
    assert decision["figures"]["canary"]["errorRate"] == 1.0


def test_a_shadow_is_compared_on_the_same_records_and_never_returned(platform: Platform) -> None:
    rollouts.start_rollout(
        platform, owner=None, name=MODEL_NAME, alias="production", shadow={"version": "3"}, by="operator:ops"
    )
    job = run_job(platform, rows=12)
    assert job.model_version == "1" and job.rollout is not None and job.rollout["compareWith"] == "3"
    items = [i for p in platform.results.iter_pages("acme", job.job_id) for i in p.items]
    stable = [i for p in platform.results.iter_pages("acme", run_job(platform, rows=12).job_id) for i in p.items]
    assert [i["output"] for i in items] == [i["output"] for i in stable]  # version 1's answers, not the shadow's
    shadow = aliases(platform)["rollouts"]["production"]["shadow"]
    assert shadow["version"] == "3"
    assert shadow["figures"]["compared"] == 24 and shadow["figures"]["agreement"] < 0.2
    assert aliases(platform)["aliases"]["production"] == "1"  # a shadow alone decides nothing


def test_comparison_is_bounded_per_shard(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollouts, "COMPARE_RECORDS_PER_SHARD", 5)
    rollouts.start_rollout(platform, owner=None, name=MODEL_NAME, alias="production", shadow={"version": "2"}, by="o")
    job = run_job(platform, rows=30)
    assert [c["compared"] for c in job.shard_comparisons.values()] == [5]
    assert job.counts.succeeded == 30


def test_two_jobs_finishing_at_once_are_both_counted(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """Job A reads the evidence, job B's worker writes its own meanwhile, A's write must not erase B's."""
    rollouts.start_rollout(platform, owner=None, name=MODEL_NAME, alias="production", shadow={"version": "2"}, by="o")
    monkeypatch.setattr(rollouts, "on_job_finished", lambda platform, job: None)  # finish them by hand below
    a, b = run_job(platform), run_job(platform, "globex")
    monkeypatch.undo()
    real_read = platform.blobs.read_bytes
    interleaved: list[str] = []

    def read_then_b_finishes(container: str, path: str) -> bytes:
        data = real_read(container, path)
        if path.endswith("aliases.json") and not interleaved:
            interleaved.append(path)
            rollouts.on_job_finished(platform, b)  # B's whole update lands between A's read and A's write
        return data

    monkeypatch.setattr(platform.blobs, "read_bytes", read_then_b_finishes)
    rollouts.on_job_finished(platform, a)
    rollouts.on_job_finished(platform, a)  # a finalise retried: counted once
    monkeypatch.undo()
    observed = platform.models.get_aliases("acme", MODEL_NAME)["rollouts"]["production"]["observed"]
    assert interleaved and observed["stable"]["jobs"] == 2 and observed["shadow"]["jobs"] == 2


def test_the_gates_fail_at_once_and_promote_only_when_measured_with_evidence() -> None:
    state: dict[str, Any] = {
        "canary": rollouts.parse_canary(
            {"version": "2", "percent": 10, "gates": {"maxErrorRate": 0.1, "noDrift": True}, "evidence": {"jobs": 2}}
        ),
        "observed": {"canary": {"jobs": 1, "records": 400, "failed": 4, "computeSeconds": 0.4}},
    }
    verdict = rollouts.evaluate(state)
    assert verdict["decision"] is None  # one job of two; and no drift verdict yet: pending, not passed
    assert {g["name"]: g["status"] for g in verdict["gates"]} == {"maxErrorRate": "passed", "noDrift": "pending"}
    state["observed"]["canary"].update(jobs=2, driftChecked=2, drifted=0)
    assert rollouts.evaluate(state)["decision"] == "promote"
    state["observed"]["canary"].update(failed=41)  # 10.25% of records
    failed = rollouts.evaluate(state)
    assert failed["decision"] == "rollback" and failed["figures"]["canary"]["errorRate"] == 0.1025
    state["observed"]["canary"].update(failed=0, drifted=1)
    assert rollouts.evaluate(state)["decision"] == "rollback"


@pytest.mark.parametrize(
    "raw",
    [
        {"version": "2", "percent": 0},
        {"version": "2", "percent": 100},
        {"version": "2", "percent": 20.5},
        {"version": "2", "percent": 20, "gates": {"maxErorRate": 0.1}},
        {"version": "2", "percent": 20, "gates": {"minAgreement": 1.5}},
        {"version": "2", "percent": 20, "evidence": {"jobs": 0}},
        {"version": "", "percent": 20},
    ],
)
def test_a_bad_canary_is_refused_with_the_reason(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as caught:
        rollouts.parse_canary(raw)
    assert caught.value.code == "InvalidRollout"


def test_a_rollout_needs_another_existing_version_and_a_hand_move_ends_it(platform: Platform) -> None:
    for version, code in (("1", "InvalidRollout"), ("9", "UnknownModel")):
        with pytest.raises(Exception) as caught:
            rollouts.start_rollout(
                platform, owner=None, name=MODEL_NAME, alias="production", canary=canary(version), by="o"
            )
        assert getattr(caught.value, "code", "") == code
    rollouts.start_rollout(platform, owner=None, name=MODEL_NAME, alias="production", canary=canary("2"), by="o")
    assert aliases(platform)["rollouts"]["production"]["canary"]["version"] == "2"
    platform.models.move_alias(MODEL_NAME, "production", "3", by="operator:ops")
    view = aliases(platform)
    assert view["rollouts"] == {} and view["history"][-1]["rollout"] == "cancelled"


def test_the_card_sets_default_gates_that_the_rollout_overrides() -> None:
    parsed = rollouts.parse_canary(
        {"version": "2", "percent": 5, "gates": {"minAgreement": 0.8}},
        {"minAgreement": 0.99, "maxErrorRate": 0.01},
    )
    assert parsed["gates"] == {"minAgreement": 0.8, "maxErrorRate": 0.01}
    assert orjson.dumps(parsed)  # stored as JSON in aliases.json


def test_a_canary_whose_jobs_drift_is_rolled_back_by_the_drift_gate(platform: Platform) -> None:
    rollouts.start_rollout(
        platform,
        owner=None,
        name=MODEL_NAME,
        alias="production",
        canary=canary("2", gates={"noDrift": True}),
        by="op",
    )
    scaled = [orjson.loads(line) for line in ROWS[:60]]
    for row in scaled:
        for key, value in row.items():
            if isinstance(value, float) and key not in ("id", "expected"):
                row[key] = value * 3  # every feature far off its reference profile
    data = b"".join(orjson.dumps(row) + b"\n" for row in scaled)
    while True:
        path = f"inbox/{MODEL_NAME}/{uuid.uuid4().hex}.jsonl"
        job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, data))
        assert job is not None
        while messages := platform.queue.drain():  # type: ignore[attr-defined]
            for message in messages:
                run_shard(platform, message)
        if job.rollout and job.rollout["arm"] == "canary":
            break
    assert platform.jobs.get_job("acme", job.job_id).drift["status"] == "drifted"  # type: ignore[index]
    decision = aliases(platform)["history"][-1]
    assert decision["rollout"] == "rolledBack"
    assert decision["gates"] == [{"name": "noDrift", "threshold": True, "value": 1, "status": "failed"}]
    assert decision["figures"]["canary"]["driftShare"] == 1.0
