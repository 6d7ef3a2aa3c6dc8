"""Azure Machine Learning as a source of model packages: resolve name/version/tags in a workspace or registry with
the `azure-ai-ml` SDK and download the artifact into a package (card.json + ONNX) the registry can publish.

The card is built from the AML model: `description`, `tags`, and card fields read from the model's properties
(then tags) under the card's own key names: `handler` (required), `task`, `inputTypes` (JSON list or comma
separated), `features`, `labels`, `onnx`, `exampleRecord`, `intendedUse`, `limitations`, `metrics` (JSON values
decoded), `onnxFile` (which downloaded file is the artifact, when there is more than one `.onnx`) and `files`
(comma separated: further downloaded files to carry in the package). `source.azureml` records where it came from.

How this is tested: no workspace is reachable from the test machines, so tests/unit/test_registry_azureml.py
builds a real MLClient with a custom azure-core transport (a RequestsTransport subclass over a requests adapter)
that records the HttpRequest objects the SDK builds and answers with canned ARM JSON; the tests assert the URLs,
methods and api-versions of `get`/`list` for a workspace and for a registry (including registry discovery), and
`download` is replaced by a function writing files where the SDK would, so that building the package is tested.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.domain.errors import InvalidInput, NotFound
from shared.domain.jobs import utcnow

logger = logging.getLogger(__name__)
CARD_FIELDS = ("task", "handler", "inputTypes", "features", "labels", "onnx", "exampleRecord", "intendedUse")
CARD_FIELDS_MORE = ("limitations", "metrics", "license")
DEFAULT_INPUT_TYPES = {"tabular-classifier": [".jsonl", ".csv"]}


@dataclass(frozen=True)
class AzureMLModel:
    """What the platform needs of an AML model version."""

    name: str
    version: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    path: str = ""
    asset_id: str = ""
    created_by: str | None = None
    created_at: str | None = None

    @classmethod
    def from_entity(cls, model: Any) -> AzureMLModel:
        context = getattr(model, "creation_context", None)
        created: Any = getattr(context, "created_at", None)
        created_at = created.isoformat() if hasattr(created, "isoformat") else (str(created) if created else None)
        return cls(
            name=str(model.name),
            version=str(model.version),
            description=str(model.description or ""),
            tags={str(k): str(v) for k, v in (model.tags or {}).items()},
            properties={str(k): str(v) for k, v in (model.properties or {}).items()},
            path=str(model.path or ""),
            asset_id=str(getattr(model, "id", "") or ""),
            created_by=getattr(context, "created_by", None),
            created_at=created_at,
        )

    def card_field(self, key: str) -> Any:
        """A card field from the model's properties, then tags; JSON values decoded."""
        raw = self.properties.get(key, self.tags.get(key))
        if raw is None:
            return None
        text = raw.strip()
        if text[:1] in "[{" or text in ("true", "false") or re.fullmatch(r"-?\d+(\.\d+)?", text):
            try:
                return json.loads(text)
            except ValueError:
                return raw
        return raw


class AzureMLModelSource:
    """Models of one AML workspace or registry, through an `azure.ai.ml.MLClient`."""

    def __init__(self, ml_client: Any, *, where: dict[str, str] | None = None) -> None:
        self._client = ml_client
        self._where = where or {}

    @classmethod
    def for_workspace(
        cls, credential: Any, subscription_id: str, resource_group: str, workspace: str, **client_kwargs: Any
    ) -> AzureMLModelSource:
        from azure.ai.ml import MLClient  # heavy: only for operators importing from AML

        client = MLClient(credential, subscription_id, resource_group, workspace, **client_kwargs)
        where = {"subscriptionId": subscription_id, "resourceGroup": resource_group, "workspace": workspace}
        return cls(client, where=where)

    @classmethod
    def for_registry(cls, credential: Any, registry_name: str, **client_kwargs: Any) -> AzureMLModelSource:
        from azure.ai.ml import MLClient

        client = MLClient(credential, registry_name=registry_name, **client_kwargs)
        return cls(client, where={"registry": registry_name})

    def get_model(self, name: str, *, version: str | None = None, label: str | None = None) -> AzureMLModel:
        """One model version (a version, a label such as `latest`, or the latest); raises NotFound."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            if version:
                entity = self._client.models.get(name, version=version)
            else:
                entity = self._client.models.get(name, label=label or "latest")
        except ResourceNotFoundError as err:
            raise NotFound(f"Azure ML has no model {name!r} version {version or label or 'latest'}") from err
        return AzureMLModel.from_entity(entity)

    def list_models(self, name: str | None = None, *, tags: dict[str, str] | None = None) -> list[AzureMLModel]:
        """The versions of `name`, or the latest version of every model; only those carrying all `tags`."""
        entities = self._client.models.list(name=name) if name else self._client.models.list()
        models = [AzureMLModel.from_entity(entity) for entity in entities]
        if tags:
            models = [m for m in models if all(m.tags.get(k) == v for k, v in tags.items())]
        return models

    def download_package(
        self,
        name: str,
        out_dir: Path,
        *,
        version: str | None = None,
        label: str | None = None,
        card_name: str | None = None,
    ) -> Path:
        """Downloads the model and writes a package dir `out_dir/<card name>/<version>/`; returns that dir."""
        model = self.get_model(name, version=version, label=label)
        with tempfile.TemporaryDirectory(prefix="aiaas-aml-") as tmp:
            self._client.models.download(name=model.name, version=model.version, download_path=tmp)
            return build_package(model, Path(tmp), out_dir, card_name=card_name, where=self._where)


def build_package(
    model: AzureMLModel,
    downloaded: Path,
    out_dir: Path,
    *,
    card_name: str | None = None,
    where: dict[str, str] | None = None,
) -> Path:
    """A package dir from downloaded AML model files: the ONNX artifact, named extra files and a card."""
    found = {p.relative_to(downloaded).as_posix(): p for p in sorted(downloaded.rglob("*")) if p.is_file()}
    wanted = model.card_field("onnxFile")
    if wanted:
        onnx = [rel for rel in found if rel == wanted or rel.endswith(f"/{wanted}")]
    else:
        onnx = [rel for rel in found if rel.endswith(".onnx")]
    if len(onnx) != 1:
        raise InvalidInput(
            f"Azure ML model {model.name}:{model.version} must hold exactly one .onnx file (or name one in the "
            f"`onnxFile` property); it holds {sorted(found)}",
            code="InvalidModelPackage",
        )
    handler = model.card_field("handler")
    if not handler:
        raise InvalidInput(
            f"Azure ML model {model.name}:{model.version} has no `handler` property or tag", code="InvalidModelPackage"
        )
    name = card_name or re.sub(r"[^a-z0-9._-]", "-", model.name.lower()).strip("-._")
    package = out_dir / name / model.version
    package.mkdir(parents=True, exist_ok=True)
    artifact = found[onnx[0]]
    artifact_bytes = artifact.read_bytes()
    shutil.copyfile(artifact, package / "model.onnx")
    card: dict[str, Any] = {"name": name, "version": model.version, "description": model.description}
    for key in CARD_FIELDS + CARD_FIELDS_MORE:
        value = model.card_field(key)
        if value is not None:
            card[key] = value
    input_types = card.get("inputTypes")
    if isinstance(input_types, str):
        card["inputTypes"] = [part.strip() for part in input_types.split(",") if part.strip()]
    elif input_types is None and str(handler) in DEFAULT_INPUT_TYPES:
        card["inputTypes"] = DEFAULT_INPUT_TYPES[str(handler)]
    card["tags"] = {k: v for k, v in model.tags.items() if k not in CARD_FIELDS + CARD_FIELDS_MORE}
    card["artifact"] = {
        "file": "model.onnx",
        "sha256": hashlib.sha256(artifact_bytes).hexdigest(),
        "bytes": len(artifact_bytes),
    }
    extra = [part.strip() for part in str(model.card_field("files") or "").split(",") if part.strip()]
    files = []
    for wanted_file in extra:
        matches = [rel for rel in found if rel == wanted_file or rel.endswith(f"/{wanted_file}")]
        if len(matches) != 1:
            raise InvalidInput(f"Azure ML model file {wanted_file!r} not found once", code="InvalidModelPackage")
        data = found[matches[0]].read_bytes()
        base = Path(wanted_file).name
        (package / base).write_bytes(data)
        files.append({"file": base, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)})
    if files:
        card["files"] = files
    card["source"] = {
        "azureml": {
            **(where or {}),
            "name": model.name,
            "version": model.version,
            "assetId": model.asset_id,
            "path": model.path,
            "createdBy": model.created_by,
            "createdAt": model.created_at,
        }
    }
    card["createdAt"] = utcnow()
    (package / "card.json").write_text(json.dumps(card, indent=2))
    logger.info("built package %s@%s from Azure ML model %s", name, model.version, model.asset_id or model.name)
    return package


# Retraining: an Azure ML command job runs the model's own builder (python -m shared.modelbuild.retrain) in an
# environment that carries this repo and its dev dependencies (scikit-learn, skl2onnx), reading the tenant's labelled
# blob and the parent's card straight from storage with the job's managed identity, and writing a package folder
# (card.json, model.onnx, ...) to its `model` output; when the job completes that folder is downloaded and becomes
# the new version. Tested like the model source: tests/unit/test_azureml_training.py records the SDK's requests.
TRAINING_EXPERIMENT = "aiaas-retraining"
TRAINING_COMMAND = (
    "python -m shared.modelbuild.retrain --parent ${{inputs.parent}} --data ${{inputs.data}} "
    "--file-type ${{inputs.file_type}} --label-field ${{inputs.label_field}} --version ${{inputs.version}} "
    "--out ${{outputs.model}}"
)
# Azure ML job states (azure.ai.ml.entities JobStatus; REST "JobStatus"): these end a job.
ENDED_STATES = {"Completed", "Failed", "Canceled", "NotResponding"}
# A training job must end within this (its `timeout`, seconds): Azure ML cancels it after that.
TRAINING_TIMEOUT_SECONDS = 3600
WORKSPACE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)"
    r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<ws>[^/]+)$",
    re.IGNORECASE,
)


def training_job_name(run_id: str) -> str:
    """A job name from the platform's run id: submitting the same run again names the same job (idempotent)."""
    return f"aiaas-retrain-{run_id}"[:255]


class AzureMLTrainer:
    """The Trainer port in Azure: one Azure ML command job per retraining run, through an `azure.ai.ml.MLClient`."""

    def __init__(
        self,
        ml_client: Any,
        *,
        compute: str,
        environment: str,
        tenant_blob_endpoint: str,
        models_blob_endpoint: str,
        models_container: str,
        poll_seconds: float = 30.0,
        timeout_seconds: float = TRAINING_TIMEOUT_SECONDS,
        sleep: Any = None,
    ) -> None:
        import time

        self._client = ml_client
        self._compute = compute
        self._environment = environment
        self._tenant_blobs = tenant_blob_endpoint.rstrip("/")
        self._models_blobs = models_blob_endpoint.rstrip("/")
        self._models_container = models_container
        self._poll_seconds = poll_seconds
        self._timeout_seconds = timeout_seconds
        self._sleep = sleep or time.sleep

    @classmethod
    def for_workspace_id(cls, credential: Any, workspace_id: str, **kwargs: Any) -> AzureMLTrainer:
        """From the workspace's ARM id (AIAAS_AZUREML_WORKSPACE_ID); `kwargs` as __init__, plus MLClient's own."""
        from azure.ai.ml import MLClient

        match = WORKSPACE_ID.fullmatch(workspace_id.strip())
        if match is None:
            raise ValueError(f"AIAAS_AZUREML_WORKSPACE_ID {workspace_id!r} is not a workspace's resource id")
        own = {k: kwargs.pop(k) for k in list(kwargs) if k in _TRAINER_OPTIONS}
        client = MLClient(credential, match["sub"], match["rg"], match["ws"], **kwargs)
        return cls(client, **own)

    def training_job(self, parent: Any, data: Any, *, version: str, run_id: str) -> Any:
        """The command job for one run (an azure.ai.ml Command), not yet submitted."""
        from azure.ai.ml import Input, Output, command
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import ManagedIdentityConfiguration

        from shared.inference.packages import package_prefix

        card_path = f"{package_prefix(parent.owner, parent.name)}/{parent.version}/card.json"
        return command(
            name=training_job_name(run_id),
            display_name=f"retrain {parent.name} {parent.version} -> {version}",
            experiment_name=TRAINING_EXPERIMENT,
            description=f"AIaaS retraining run {run_id} of tenant {data.tenant_id}'s model {parent.name}",
            tags={"aiaas.tenant": data.tenant_id, "aiaas.model": parent.name, "aiaas.run": run_id},
            command=TRAINING_COMMAND,
            environment=self._environment,
            compute=self._compute,
            inputs={
                "parent": Input(
                    type=AssetTypes.URI_FILE,
                    path=f"{self._models_blobs}/{self._models_container}/{card_path}",
                    mode="download",
                ),
                "data": Input(
                    type=AssetTypes.URI_FILE,
                    path=f"{self._tenant_blobs}/{data.container}/{data.blob_path}",
                    mode="download",
                ),
                "file_type": data.file_type,
                "label_field": data.label_field,
                "version": version,
            },
            outputs={"model": Output(type=AssetTypes.URI_FOLDER, mode="rw_mount")},
            # The compute's managed identity reads both blobs (Storage Blob Data Reader on the two accounts).
            identity=ManagedIdentityConfiguration(),
            timeout=int(self._timeout_seconds),
        )

    def submit(self, parent: Any, data: Any, *, version: str, run_id: str) -> str:
        """Submits the run's job (PUT: the same run id submits the same job); returns its name."""
        job = self._client.jobs.create_or_update(self.training_job(parent, data, version=version, run_id=run_id))
        logger.info("submitted Azure ML job %s for %s -> %s", job.name, parent.name, version)
        return str(job.name)

    def status(self, job_name: str) -> str:
        """The job's state as the service names it ("Running", "Completed", ...; the SDK hands back an enum)."""
        state = self._client.jobs.get(job_name).status
        return str(getattr(state, "value", state))

    def collect(self, job_name: str, out_dir: Path) -> Any:
        """The package the completed job wrote to its `model` output, as a TrainedModel."""
        from shared.ports import TrainedModel

        self._client.jobs.download(job_name, output_name="model", download_path=str(out_dir))
        cards = sorted(out_dir.rglob("card.json"))
        if len(cards) != 1:
            raise InvalidInput(
                f"Azure ML job {job_name} wrote {len(cards)} card.json files, not one", code="TrainingFailed"
            )
        package = cards[0].parent
        card = json.loads(cards[0].read_text())
        artifact = (package / str((card.get("artifact") or {}).get("file", "model.onnx"))).read_bytes()
        files = {str(f["file"]): (package / str(f["file"])).read_bytes() for f in card.get("files") or []}
        metrics = card.get("metrics") if isinstance(card.get("metrics"), dict) else {}
        return TrainedModel(
            card=card, artifact=artifact, files=files, metrics=metrics, run={"azureml": {"job": job_name}}
        )

    def train(self, parent: Any, data: Any, *, version: str, started: Any = None) -> Any:
        """The Trainer port: submits, waits for the job to end (the service runs this in the background) and collects
        the package; a failed or cancelled job is a failed run with its state."""
        import time

        run_id = (
            data.run_id or hashlib.sha256(f"{data.container}/{data.blob_path}@{data.etag}".encode()).hexdigest()[:32]
        )
        name = self.submit(parent, data, version=version, run_id=run_id)
        if started is not None:
            started({"azureml": {"job": name, "experiment": TRAINING_EXPERIMENT}})
        deadline = time.monotonic() + self._timeout_seconds + self._poll_seconds
        while (state := self.status(name)) not in ENDED_STATES:
            if time.monotonic() > deadline:
                raise InvalidInput(f"Azure ML job {name} did not end in time (state {state})", code="TrainingFailed")
            self._sleep(self._poll_seconds)
        if state != "Completed":
            raise InvalidInput(f"Azure ML job {name} ended {state}", code="TrainingFailed")
        with tempfile.TemporaryDirectory(prefix="aiaas-aml-train-") as tmp:
            return self.collect(name, Path(tmp))


_TRAINER_OPTIONS = {
    "compute",
    "environment",
    "tenant_blob_endpoint",
    "models_blob_endpoint",
    "models_container",
    "poll_seconds",
    "timeout_seconds",
    "sleep",
}
