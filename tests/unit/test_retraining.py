"""Retraining: the policy, the two triggers (labelled data, a drifted job), the run's lineage, its failures, and the
local trainer (the breast-cancer builder) on real shifted data."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from shared.api.app import create_app
from shared.bootstrap import build_trainer
from shared.config import Settings
from shared.domain.errors import InvalidInput
from shared.domain.jobs import Job
from shared.domain.models import ModelCard, ModelRef
from shared.domain.tenants import container_for
from shared.modelbuild.retrain import LocalTrainer
from shared.ports import TrainingData
from shared.services import retraining
from shared.services.platform import Platform
from tests.fakes import RecordingTrainer, add_tenant, make_platform, model_package_dir, upload
from tests.unit.test_api import auth
from tests.unit.test_config import production

NAME = "bc-private"


def private_model(platform: Platform, tenant: str = "acme") -> dict[str, Any]:
    """The built breast-cancer package registered as the tenant's own model."""
    package = model_package_dir()
    card = json.loads((package / "card.json").read_text())
    card.update(name=NAME, version="1")
    files = {f["file"]: (package / f["file"]).read_bytes() for f in card.get("files") or []}
    return platform.models.register_private(tenant, card, (package / "model.onnx").read_bytes(), files=files)


def shifted_rows(factor: float = 1.6, *, label_field: str = "label") -> bytes:
    """Every breast-cancer row with its features scaled (a real shift) and its true label."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [str(n) for n in data.feature_names]
    lines = []
    for row, target in zip(data.data, data.target, strict=True):
        record: dict[str, Any] = {n: float(v) * factor for n, v in zip(names, row, strict=True)}
        record[label_field] = ["malignant", "benign"][int(target)]
        lines.append(orjson.dumps(record))
    return b"\n".join(lines) + b"\n"


def inline(work: Any) -> None:
    work()


@pytest.fixture
def platform() -> Platform:
    plat = make_platform(trainer=RecordingTrainer())
    add_tenant(plat, "acme")
    private_model(plat)
    return plat


def test_labelled_data_trains_a_new_version_with_its_lineage(platform: Platform) -> None:
    info = upload(platform, "acme", "data/labelled.jsonl", shifted_rows())

    run = retraining.request_retraining(platform, "acme", NAME, "data/labelled.jsonl", by="tenant:acme", runner=inline)
    assert run["status"] == "queued"  # what the request answers; training ran after it (inline here)

    done = retraining.get_run(platform, "acme", NAME, run["id"])
    assert done["status"] == "succeeded", done
    assert done["version"] == "2" and done["parentVersion"] == "1"
    assert done["trainer"] == {"fake": {"calls": 1}}  # where it trained, as the trainer said when it started
    card = platform.models.resolve("acme", ModelRef(NAME, "2"))
    lineage = card.raw["lineage"]
    assert lineage["parentVersion"] == "1" and lineage["trigger"] == "labelledData"
    assert lineage["data"]["blobPath"] == "data/labelled.jsonl" and lineage["data"]["etag"] == info.etag
    assert lineage["data"]["sha256"] == __import__("hashlib").sha256(shifted_rows()).hexdigest()
    assert lineage["metrics"]["accuracy"] == 0.97 and "trainedAt" in lineage
    # The stable version is still what jobs get unless the canary is chosen: the new one never takes the alias.
    aliases = platform.models.get_aliases("acme", NAME)
    assert aliases["aliases"]["production"] == "1"
    # ... it is the canary of the alias (the policy's default: half the jobs), and the gates decide from there.
    assert aliases["rollouts"]["production"]["canary"]["version"] == "2"
    assert aliases["rollouts"]["production"]["canary"]["percent"] == 50
    assert done["rollout"]["canary"]["version"] == "2" and done["rollout"]["stableVersion"] == "1"
    trainer = platform.trainer
    assert isinstance(trainer, RecordingTrainer)
    ((parent, data, version),) = trainer.calls
    assert (parent.version, data.blob_path, data.label_field, version) == ("1", "data/labelled.jsonl", "label", "2")
    # Asked again for the same data: the same run, not a second training.
    again = retraining.request_retraining(
        platform, "acme", NAME, "data/labelled.jsonl", by="tenant:acme", runner=inline
    )
    assert again["id"] == run["id"] and len(trainer.calls) == 1


def test_a_drifted_job_retrains_only_when_the_policy_asks_and_once(platform: Platform) -> None:
    info = upload(platform, "acme", f"inbox/{NAME}/x/shifted.jsonl", shifted_rows(label_field="diagnosis"))
    job = Job(
        tenant_id="acme", job_id="a" * 32, model_name=NAME, model_version="1", blob_path=info.name, etag=info.etag
    )

    assert retraining.on_drift(platform, job, runner=inline) is None  # no policy: no retraining on drift
    retraining.set_policy(
        platform, "acme", NAME, {"onDrift": True, "labelField": "diagnosis", "canary": {"percent": 30}}
    )
    run = retraining.on_drift(platform, job, runner=inline)
    assert run is not None and run["trigger"] == "drift" and run["jobId"] == job.job_id
    done = retraining.get_run(platform, "acme", NAME, run["id"])
    assert done["status"] == "succeeded" and done["lineage"]["jobId"] == job.job_id
    assert done["lineage"]["trigger"] == "drift"
    # The same job again (a redelivered event), or another drifted job while the canary is judged: no new training.
    assert retraining.on_drift(platform, job, runner=inline) is None
    other = upload(platform, "acme", f"inbox/{NAME}/y/shifted.jsonl", shifted_rows(1.7, label_field="diagnosis"))
    later = Job(
        tenant_id="acme", job_id="b" * 32, model_name=NAME, model_version="1", blob_path=other.name, etag=other.etag
    )
    assert retraining.on_drift(platform, later, runner=inline) is None
    assert len(platform.trainer.calls) == 1  # type: ignore[union-attr]
    assert platform.models.get_aliases("acme", NAME)["rollouts"]["production"]["canary"]["percent"] == 30


def test_a_public_model_or_no_trainer_is_refused_before_anything_runs(platform: Platform) -> None:
    upload(platform, "acme", "data/labelled.jsonl", shifted_rows())
    with pytest.raises(InvalidInput) as public:
        retraining.request_retraining(platform, "acme", "breast-cancer-classifier", "data/labelled.jsonl", by="t")
    assert public.value.code == "NotModelOwner"
    for path, code in [("data/missing.jsonl", "BlobNotFound"), ("data/labelled.txt", "UnsupportedFileType")]:
        with pytest.raises(InvalidInput) as caught:
            retraining.request_retraining(platform, "acme", NAME, path, by="t", runner=inline)
        assert caught.value.code == code
    platform.trainer = None
    with pytest.raises(InvalidInput) as none:
        retraining.request_retraining(platform, "acme", NAME, "data/labelled.jsonl", by="t", runner=inline)
    assert none.value.code == "RetrainingUnavailable"
    assert retraining.list_runs(platform, "acme", NAME) == []


def test_a_trainer_refusing_the_data_is_a_failed_run_with_its_reason() -> None:
    platform = make_platform(
        trainer=RecordingTrainer(fail=InvalidInput("record 3: no label", code="TrainingDataInvalid"))
    )
    add_tenant(platform, "acme")
    private_model(platform)
    upload(platform, "acme", "data/labelled.jsonl", shifted_rows())
    run = retraining.request_retraining(platform, "acme", NAME, "data/labelled.jsonl", by="t", runner=inline)
    done = retraining.get_run(platform, "acme", NAME, run["id"])
    assert done["status"] == "failed"
    assert done["error"] == {"code": "TrainingDataInvalid", "message": "record 3: no label"}
    assert platform.models.get_model("acme", NAME)["versions"] == ["1"]


def test_the_routes_answer_202_then_show_the_run_and_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retraining, "background", inline)  # the route's training, run before the next request
    platform = make_platform(trainer=RecordingTrainer())
    admin = auth(add_tenant(platform, "acme"))
    private_model(platform)
    client = TestClient(create_app(lambda: platform))
    upload(platform, "acme", "data/labelled.jsonl", shifted_rows())

    bad = client.put(f"/api/v1/models/{NAME}/retraining", json={"onDrift": "yes"}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidRequest"
    gate = client.put(f"/api/v1/models/{NAME}/retraining", json={"canary": {"gates": {"maxFun": 1}}}, headers=admin)
    assert gate.status_code == 400 and gate.json()["error"]["code"] == "InvalidRollout", gate.text
    policy = client.put(f"/api/v1/models/{NAME}/retraining", json={"onDrift": True}, headers=admin)
    assert policy.status_code == 200 and policy.json()["onDrift"] is True
    answer = client.post(f"/api/v1/models/{NAME}/retrain", json={"blobPath": "data/labelled.jsonl"}, headers=admin)
    assert answer.status_code == 202 and answer.json()["status"] == "queued", answer.text
    view = client.get(f"/api/v1/models/{NAME}/retraining", headers=admin).json()
    assert view["policy"]["onDrift"] is True
    assert [(r["status"], r["version"]) for r in view["runs"]] == [("succeeded", "2")]
    out = client.post(f"/api/v1/models/{NAME}/retrain", json={"blobPath": "../tenant-globex/x.jsonl"}, headers=admin)
    assert out.status_code == 400 and out.json()["error"]["code"] == "InvalidBlobPath"
    public = client.post(
        "/api/v1/models/breast-cancer-classifier/retrain", json={"blobPath": "data/labelled.jsonl"}, headers=admin
    )
    assert public.status_code == 400 and public.json()["error"]["code"] == "NotModelOwner"


def test_the_local_trainer_learns_shifted_data_the_parent_gets_wrong() -> None:
    """The breast-cancer builder on rows scaled by 1.6: the new version is accurate on them; the parent is not."""
    from shared.inference.registry import BlobModelRegistry
    from tests.fakes import InMemoryBlobStore

    package = model_package_dir()
    parent = ModelCard(json.loads((package / "card.json").read_text()))
    content = shifted_rows()
    data = TrainingData("acme", container_for("acme"), "data/x.jsonl", '"e"', "s", ".jsonl", content)
    trained = LocalTrainer().train(parent, data, version="2")
    assert trained.metrics["accuracy"] > 0.9 and trained.metrics["heldOutRows"] == 143
    assert trained.card["version"] == "2" and trained.card["trainingData"]["totalRows"] == 569
    assert [f["file"] for f in trained.card["files"]] == ["profile.json"]
    assert trained.card["drift"]["profile"] == "profile.json"

    registry = BlobModelRegistry(InMemoryBlobStore())
    registry.publish_package(package)
    registry.register_private("acme", {**trained.card, "name": NAME}, trained.artifact, files=trained.files)
    records = [orjson.loads(line) for line in content.splitlines()]
    new = registry.load(registry.resolve("acme", ModelRef(NAME, "2")))
    old = registry.load(registry.resolve("acme", ModelRef(parent.name, "1")))
    right_new = sum(
        o["label"] == r["label"] for o, r in zip(new.predict([new.prepare(r) for r in records]), records, strict=True)
    )
    right_old = sum(
        o["label"] == r["label"] for o, r in zip(old.predict([old.prepare(r) for r in records]), records, strict=True)
    )
    assert right_new / len(records) > 0.9 > right_old / len(records)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"label": "benign"}\n', "missing or not a number"),
        (b"not json\n", "not JSON"),
        (shifted_rows().replace(b'"benign"', b'"maybe"', 1), "must be one of"),
        (b"\n".join(shifted_rows().splitlines()[:10]) + b"\n", "at least 8 records"),
    ],
)
def test_the_local_trainer_refuses_data_it_cannot_learn_from_with_the_reason(content: bytes, message: str) -> None:
    parent = ModelCard(json.loads((model_package_dir() / "card.json").read_text()))
    data = TrainingData("acme", "tenant-acme", "d.jsonl", '"e"', "s", ".jsonl", content)
    with pytest.raises(InvalidInput, match=message) as caught:
        LocalTrainer().train(parent, data, version="2")
    assert caught.value.code == "TrainingDataInvalid"


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        pytest.param({"AIAAS_TRAINER": "local"}, "TRAINER local is for development only", id="local-in-production"),
        pytest.param({"AIAAS_TRAINER": "azureml"}, "AZUREML_WORKSPACE_ID", id="azureml-without-workspace"),
    ],
)
def test_production_refuses_the_local_trainer_and_an_incomplete_azure_ml_one(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, str], complaint: str
) -> None:
    production(monkeypatch, **overrides)
    with pytest.raises(ValueError, match=complaint):
        Settings()


def test_the_trainer_is_the_local_builder_in_development_and_none_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(build_trainer(Settings(environment="development")), LocalTrainer)
    production(monkeypatch)
    assert build_trainer(Settings()) is None


def test_a_run_whose_process_died_is_run_again_but_one_under_way_is_not(platform: Platform) -> None:
    upload(platform, "acme", "data/labelled.jsonl", shifted_rows())
    lost = retraining.request_retraining(platform, "acme", NAME, "data/labelled.jsonl", by="t", runner=lambda _: None)
    # Under way (queued, fresh): asked again, the same run and no second training.
    again = retraining.request_retraining(platform, "acme", NAME, "data/labelled.jsonl", by="t", runner=inline)
    assert again == lost and platform.trainer.calls == []  # type: ignore[union-attr]

    path = f"retraining/{NAME}/runs/{lost['id']}.json"
    stale = {**lost, "updatedAt": "2020-01-01T00:00:00.000Z"}  # its process never came back
    platform.blobs.write_bytes(container_for("acme"), path, json.dumps(stale).encode())
    retraining.request_retraining(platform, "acme", NAME, "data/labelled.jsonl", by="t", runner=inline)
    assert retraining.get_run(platform, "acme", NAME, lost["id"])["status"] == "succeeded"
    assert len(platform.trainer.calls) == 1  # type: ignore[union-attr]
