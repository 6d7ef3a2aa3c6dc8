"""Retraining in Azure ML against the azure-ai-ml SDK's own requests: a real MLClient whose transport records every
HttpRequest and answers with canned ARM JSON (no workspace is reachable from here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

pytest.importorskip("azure.ai.ml")

import requests

from shared.adapters.azureml import AzureMLTrainer, training_job_name
from shared.domain.errors import InvalidInput
from shared.domain.models import ModelCard
from shared.ports import TrainingData
from tests.fakes import model_package_dir
from tests.sdk_transport import FakeCredential, RecordingTransport

WORKSPACE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg"
    "/providers/Microsoft.MachineLearningServices/workspaces/ws"
)
PARENT = ModelCard({"name": "bc-private", "version": "1", "owner": "acme", "handler": "tabular-classifier"})
DATA = TrainingData(
    tenant_id="acme",
    container="tenant-acme",
    blob_path="inbox/bc-private/0a/labelled.jsonl",
    etag='"0x8D"',
    sha256="ab" * 32,
    file_type=".jsonl",
    content=b"",
    label_field="diagnosis",
    run_id="0123456789abcdef0123456789abcdef",
)


class Workspace:
    """Answers as the workspace's jobs API does: a PUT job is kept; GET reads it with the next state in `states`."""

    def __init__(self, states: list[str]) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.states = states

    def reply(self, request: requests.PreparedRequest) -> tuple[int, dict[str, Any]]:
        path = urlsplit(request.url or "").path
        name = path.rsplit("/", 1)[1]
        if request.method == "PUT":
            body = json.loads(request.body or b"{}")  # type: ignore[arg-type]
            body["properties"]["status"] = "NotStarted"
            body["properties"]["services"] = {}
            self.jobs[name] = {
                "id": path,
                "name": name,
                "type": "Microsoft.MachineLearningServices/workspaces/jobs",
                **body,
            }
            return 201, self.jobs[name]
        job = json.loads(json.dumps(self.jobs[name]))
        job["properties"]["status"] = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return 200, job


def trainer(workspace: Workspace) -> tuple[AzureMLTrainer, RecordingTransport]:
    transport = RecordingTransport(workspace.reply)
    made = AzureMLTrainer.for_workspace_id(
        FakeCredential(),
        WORKSPACE,
        compute="cpu-cluster",
        environment="azureml:aiaas-train:3",
        tenant_blob_endpoint="https://tenants.blob.core.windows.net/",
        models_blob_endpoint="https://platform.blob.core.windows.net",
        models_container="models",
        poll_seconds=0,
        sleep=lambda _: None,
        transport=transport,
    )
    return made, transport


def test_a_retraining_run_is_one_command_job_with_the_data_the_parent_and_a_model_output() -> None:
    workspace = Workspace(["Running"])
    aml, transport = trainer(workspace)

    name = aml.submit(PARENT, DATA, version="2", run_id=DATA.run_id)

    (put,) = transport.requests
    assert name == training_job_name(DATA.run_id) == f"aiaas-retrain-{DATA.run_id}"
    assert put.method == "PUT" and put.url.split("?")[0] == f"https://management.azure.com{WORKSPACE}/jobs/{name}"
    assert parse_qs(urlsplit(put.url).query)["api-version"] == ["2025-01-01-preview"]
    assert put.headers["Authorization"] == "Bearer test-token"
    job = json.loads(put.body)["properties"]
    assert job["jobType"] == "Command" and job["experimentName"] == "aiaas-retraining"
    assert job["command"].startswith("python -m shared.modelbuild.retrain --parent ${{inputs.parent}}")
    assert job["computeId"] == f"{WORKSPACE}/computes/cpu-cluster"
    assert job["environmentId"] == f"{WORKSPACE}/environments/aiaas-train/versions/3"
    assert job["inputs"]["data"] == {
        "uri": "https://tenants.blob.core.windows.net/tenant-acme/inbox/bc-private/0a/labelled.jsonl",
        "mode": "Download",
        "jobInputType": "uri_file",
    }
    assert (
        job["inputs"]["parent"]["uri"]
        == "https://platform.blob.core.windows.net/models/tenants/acme/bc-private/1/card.json"
    )
    assert job["inputs"]["label_field"] == {"value": "diagnosis", "jobInputType": "literal"}
    assert job["inputs"]["version"] == {"value": "2", "jobInputType": "literal"}
    assert job["outputs"]["model"] == {"mode": "ReadWriteMount", "jobOutputType": "uri_folder"}
    assert job["identity"] == {"identityType": "Managed"}
    assert job["limits"]["timeout"] == "PT1H"
    assert job["tags"] == {"aiaas.tenant": "acme", "aiaas.model": "bc-private", "aiaas.run": DATA.run_id}


def test_train_waits_for_the_job_and_collects_the_package_it_wrote(monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = Workspace(["Queued", "Running", "Completed"])
    aml, transport = trainer(workspace)
    package = model_package_dir()
    downloads = []

    def download(name: str, output_name: str, download_path: str) -> None:
        downloads.append((name, output_name))
        folder = Path(download_path) / "named-outputs" / output_name
        folder.mkdir(parents=True)
        card = {**json.loads((package / "card.json").read_text()), "name": "bc-private", "version": "2"}
        (folder / "card.json").write_text(json.dumps(card))
        for built in package.iterdir():  # the artifact and the drift profile the card names
            if built.name != "card.json":
                (folder / built.name).write_bytes(built.read_bytes())

    monkeypatch.setattr(aml._client.jobs, "download", download)
    seen: list[dict[str, Any]] = []
    trained = aml.train(PARENT, DATA, version="2", started=seen.append)

    # The run records its job as soon as it is submitted, not only when it ends.
    assert seen == [{"azureml": {"job": training_job_name(DATA.run_id), "experiment": "aiaas-retraining"}}]
    methods = [r.method for r in transport.requests]
    assert methods == ["PUT", "GET", "GET", "GET"]  # submitted, then polled until Completed
    assert downloads == [(training_job_name(DATA.run_id), "model")]
    assert trained.card["version"] == "2" and trained.artifact == (package / "model.onnx").read_bytes()
    assert trained.metrics["accuracy"] > 0.9
    assert set(trained.files) == {f["file"] for f in trained.card.get("files") or []}
    assert trained.run == {"azureml": {"job": training_job_name(DATA.run_id)}}


@pytest.mark.parametrize("state", ["Failed", "Canceled"])
def test_a_job_that_does_not_complete_is_a_failed_run_with_its_state(state: str) -> None:
    aml, _ = trainer(Workspace(["Running", state]))
    with pytest.raises(InvalidInput, match=f"ended {state}") as caught:
        aml.train(PARENT, DATA, version="2")
    assert caught.value.code == "TrainingFailed"


def test_a_workspace_id_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="not a workspace"):
        AzureMLTrainer.for_workspace_id(FakeCredential(), "/subscriptions/x/resourceGroups/rg", compute="c")
