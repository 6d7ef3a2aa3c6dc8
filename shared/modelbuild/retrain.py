"""The local trainer: a model's own builder (the breast-cancer scaler + logistic regression) run on labelled data."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from shared.domain.errors import InvalidInput
from shared.domain.models import ModelCard
from shared.modelbuild import breast_cancer
from shared.modelbuild.common import data_fingerprint, library_versions, utc_now_iso
from shared.ports import TrainedModel, TrainingData

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

DATA_INVALID = "TrainingDataInvalid"
NO_TRAINER = "NoTrainer"
# Below this the stratified 25% held-out split has too few rows of a class to measure anything.
MIN_ROWS_PER_LABEL = 8
MAX_ROWS = 1_000_000
PROFILE_FILE = "profile.json"
# Card keys of the parent that describe its own bytes or build; the new version gets its own.
NOT_INHERITED = ("artifact", "files", "drift", "buildKey", "owner", "metrics", "trainingData", "createdAt", "lineage")


def builder_of(parent: ModelCard) -> str | None:
    """Which builder made the parent (its card's training parameters say), or None when none here can."""
    params = parent.raw.get("trainingParameters") or {}
    if (
        isinstance(params, dict)
        and params.get("estimator") == breast_cancer.TRAINING_PARAMETERS["estimator"]
        and parent.raw.get("handler") == "tabular-classifier"
        and len(parent.raw.get("labels") or []) == 2
        and parent.raw.get("features")
    ):
        return "breast_cancer"
    return None


class LocalTrainer:
    """Trains in this process with the parent's builder (scikit-learn, skl2onnx: the dev environment's)."""

    def train(
        self,
        parent: ModelCard,
        data: TrainingData,
        *,
        version: str,
        started: Callable[[dict[str, Any]], None] | None = None,
    ) -> TrainedModel:
        if builder_of(parent) is None:
            raise InvalidInput(
                f"{parent.name}@{parent.version} was not made by a builder the platform can run again "
                '(its card\'s "trainingParameters.estimator")',
                code=NO_TRAINER,
            )
        features = [str(f) for f in parent.raw["features"]]
        labels = [str(label) for label in parent.raw["labels"]]
        x, y = labelled_matrix(data, features, labels)
        if started is not None:
            started({"local": {"builder": builder_of(parent), "rows": len(y)}})
        split = _split(x, y, features)
        pipeline = breast_cancer.train(split)
        model_bytes = breast_cancer.export_onnx(pipeline, len(features))
        metrics = breast_cancer.verify_onnx(pipeline, model_bytes, split)
        card = {k: v for k, v in parent.raw.items() if k not in NOT_INHERITED}
        card.update(
            version=version,
            metrics=metrics,
            trainingData={
                "source": f"{data.container}/{data.blob_path}",
                "rows": len(split.train_idx),
                "totalRows": len(y),
                "fingerprint": data_fingerprint(split.x, split.y),
            },
            createdAt=utc_now_iso(),
            buildEnvironment=library_versions(breast_cancer.LIBRARIES),
        )
        files = _profile_files(card, split, model_bytes)
        logger.info("retrained %s as version %s on %d rows: %s", parent.name, version, len(y), metrics)
        return TrainedModel(card=card, artifact=model_bytes, files=files, metrics=metrics)


def labelled_matrix(data: TrainingData, features: list[str], labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Features and label indices of every record; a record that cannot be read refuses the whole data set."""
    import numpy as np

    rows: list[list[float]] = []
    targets: list[int] = []
    for number, record in _records(data):
        if len(rows) >= MAX_ROWS:
            raise InvalidInput(f"at most {MAX_ROWS} labelled records per retraining", code=DATA_INVALID)
        label = record.get(data.label_field)
        if isinstance(label, str) and label in labels:
            targets.append(labels.index(label))
        elif type(label) is int and 0 <= label < len(labels):
            targets.append(label)
        else:
            raise InvalidInput(
                f"record {number}: {data.label_field!r} must be one of {labels}, not {str(label)[:64]!r}",
                code=DATA_INVALID,
            )
        try:
            rows.append([float(record[f]) for f in features])
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidInput(
                f"record {number}: feature {err} is missing or not a number", code=DATA_INVALID
            ) from None
    counts = [targets.count(i) for i in range(len(labels))]
    if min(counts) < MIN_ROWS_PER_LABEL:
        raise InvalidInput(
            f"each label needs at least {MIN_ROWS_PER_LABEL} records; "
            f"the data has {dict(zip(labels, counts, strict=True))}",
            code=DATA_INVALID,
        )
    x = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(x).all():
        raise InvalidInput("a feature value is not finite", code=DATA_INVALID)
    return x, np.asarray(targets, dtype=np.int64)


def _records(data: TrainingData) -> Any:
    if data.file_type == ".jsonl":
        for number, line in enumerate(data.content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise InvalidInput(f"record {number} is not JSON", code=DATA_INVALID) from None
            if not isinstance(record, dict):
                raise InvalidInput(f"record {number} is not a JSON object", code=DATA_INVALID)
            yield number, record
    elif data.file_type == ".csv":
        try:
            text = data.content.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InvalidInput("the CSV file is not UTF-8", code=DATA_INVALID) from None
        for number, row in enumerate(csv.DictReader(io.StringIO(text)), start=1):
            yield number, dict(row)
    else:
        raise InvalidInput(
            f"labelled data must be .jsonl or .csv, not {data.file_type or 'no extension'}", code=DATA_INVALID
        )


def _split(x: np.ndarray, y: np.ndarray, features: list[str]) -> breast_cancer.Split:
    """The builder's own split (stratified, 25% held out, its random state) of the new rows."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    train_idx, test_idx = train_test_split(
        np.arange(len(y)),
        test_size=breast_cancer.TEST_SIZE,
        random_state=breast_cancer.SPLIT_RANDOM_STATE,
        stratify=y,
    )
    return breast_cancer.Split(x, y, features, train_idx, test_idx)


def _profile_files(card: dict[str, Any], split: breast_cancer.Split, model_bytes: bytes) -> dict[str, bytes]:
    """The new version's drift reference profile, as the builder makes one (every feature over the training rows,
    the new model's labels on the held-out rows): profile.json, hashed in the card's "files", and card["drift"]."""
    from shared.domain import drift
    from shared.modelbuild.common import file_entry

    labels = [str(label) for label in card["labels"]]
    held_out = breast_cancer.onnx_probabilities(model_bytes, split.x_test).argmax(axis=1)
    features = [drift.numeric_reference(name, split.x_train[:, i]) for i, name in enumerate(split.feature_names)]
    profile = drift.make_profile(
        str(card["name"]),
        str(card["version"]),
        features,
        drift.label_reference([labels[int(i)] for i in held_out], known=labels),
        reference=f"the {len(split.train_idx)} training rows of the retraining data",
        prediction_reference=f"predicted labels of its {len(split.test_idx)} held-out rows",
    )
    data = orjson.dumps(profile) + b"\n"
    card["files"] = [file_entry(PROFILE_FILE, data)]
    card["drift"] = drift.card_drift_section(profile)
    return {PROFILE_FILE: data}


def write_package(trained: TrainedModel, out_dir: Path) -> Path:
    """The trained model as a package folder (card.json last, as the registry writes one)."""
    from shared.modelbuild.common import MODEL_FILE, sha256_bytes

    out_dir.mkdir(parents=True, exist_ok=True)
    card = dict(trained.card)
    card["artifact"] = {"file": MODEL_FILE, "sha256": sha256_bytes(trained.artifact), "bytes": len(trained.artifact)}
    (out_dir / MODEL_FILE).write_bytes(trained.artifact)
    for name, data in trained.files.items():
        (out_dir / name).write_bytes(data)
    (out_dir / "card.json").write_text(json.dumps(card, indent=2))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """What an Azure ML training job runs (shared.adapters.azureml.TRAINING_COMMAND): the parent's card and the
    labelled file in, a package folder out."""
    parser = argparse.ArgumentParser(prog="python -m shared.modelbuild.retrain")
    parser.add_argument("--parent", type=Path, required=True, help="the parent version's card.json")
    parser.add_argument("--data", type=Path, required=True, help="the labelled records (.jsonl or .csv)")
    parser.add_argument("--file-type", default="")
    parser.add_argument("--label-field", default="label")
    parser.add_argument("--version", required=True)
    parser.add_argument("--out", type=Path, required=True, help="the package folder to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    parent = ModelCard(json.loads(args.parent.read_text()))
    content = args.data.read_bytes()
    data = TrainingData(
        tenant_id=str(parent.owner or ""),
        container="",
        blob_path=args.data.name,
        etag="",
        sha256=hashlib.sha256(content).hexdigest(),
        file_type=args.file_type or args.data.suffix.lower(),
        content=content,
        label_field=args.label_field,
    )
    write_package(LocalTrainer().train(parent, data, version=args.version), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
