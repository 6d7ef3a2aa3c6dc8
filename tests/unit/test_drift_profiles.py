"""The reference profiles `make models` writes into every package, and drift measured with them on real inputs."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from PIL import Image

from shared.domain import drift
from shared.domain.drift import DriftSketch, evaluate
from shared.inference.handlers_image import HANDLERS as IMAGE_HANDLERS
from shared.inference.handlers_tabular import HANDLERS as TABULAR_HANDLERS
from shared.inference.handlers_text import HANDLERS as TEXT_HANDLERS
from shared.modelbuild import anomaly, breast_cancer, digits, text_models
from tests.unit._model_packages import load_handler, package

MODELS = [
    breast_cancer.NAME,
    anomaly.NAME,
    digits.NAME,
    text_models.EMBED_NAME,
    text_models.ZERO_SHOT_NAME,
]


def profile_of(name: str) -> dict[str, Any]:
    data = orjson.loads((package(name) / drift.PROFILE_FILE).read_bytes())
    assert isinstance(data, dict)
    return data


def run(profile: dict[str, Any], records: list[dict[str, Any]], outputs: list[dict[str, Any] | None]) -> dict[str, Any]:
    sketch = DriftSketch.empty(profile)
    for start in range(0, len(records), 500):  # in batches, as a shard feeds it
        sketch.add(records[start : start + 500], outputs[start : start + 500])
    result = evaluate(profile, sketch)
    assert result is not None
    return result


@pytest.mark.parametrize("name", MODELS)
def test_every_package_carries_a_hashed_profile_named_by_its_card(name: str) -> None:
    pkg = package(name)
    card = orjson.loads((pkg / "card.json").read_bytes())
    entry = next(f for f in card["files"] if f["file"] == drift.PROFILE_FILE)
    data = (pkg / drift.PROFILE_FILE).read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    profile = orjson.loads(data)
    assert card["drift"]["profile"] == drift.PROFILE_FILE
    assert card["drift"]["profileId"] == profile["id"] == drift.profile_id(profile)
    assert profile["model"] == {"name": name, "version": card["version"]}
    assert set(card["drift"]["metrics"]["features"]) == {f["name"] for f in profile["features"]}
    assert len(data) < 100_000  # read at every job's finalise


def test_tabular_profiles_cover_every_numeric_field_of_the_input_schema() -> None:
    for name in (breast_cancer.NAME, anomaly.NAME):
        card = orjson.loads((package(name) / "card.json").read_bytes())
        numeric = [k for k, v in card["inputSchema"]["properties"].items() if v.get("type") == "number"]
        profile = profile_of(name)
        assert [f["field"] for f in profile["features"]] == numeric
        assert all(f["kind"] == "numeric" and len(f["counts"]) == len(f["edges"]) + 1 for f in profile["features"])


def test_a_profile_change_changes_the_build_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = breast_cancer.current_build_key()
    changed = tmp_path / "drift.py"
    changed.write_bytes(drift.__loader__.get_source(drift.__name__).encode() + b"\n# changed\n")  # type: ignore[union-attr]
    monkeypatch.setattr(breast_cancer, "DRIFT_SOURCE", changed)
    assert breast_cancer.current_build_key() != before


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_anomaly_held_out_traffic_is_clean_and_scaled_traffic_drifts() -> None:
    """12,000 held-out transactions: both sides over 1,000 rows, so the normalised Wasserstein rules."""
    profile = profile_of(anomaly.NAME)
    handler = load_handler(anomaly.NAME, TABULAR_HANDLERS)
    split = anomaly.load_split()
    x = split["x"][split["test_idx"]]

    def job(rows: np.ndarray) -> dict[str, Any]:
        records = [dict(zip(anomaly.FEATURES, map(float, row), strict=True)) for row in rows]
        outputs: list[dict[str, Any] | None] = []
        for start in range(0, len(records), 1000):
            chunk = records[start : start + 1000]
            outputs += handler.predict([handler.prepare(r) for r in chunk])
        return run(profile, records, outputs)

    clean = job(x)
    assert {f["metric"] for f in clean["features"]} == {"wasserstein"}
    assert clean["prediction"]["metric"] == "wasserstein"
    assert clean["status"] == "ok"
    assert max(f["value"] for f in clean["features"]) < 0.1
    shifted = job(x * 1.5)
    assert shifted["status"] == "drifted"


def test_digits_rendered_held_out_is_clean_and_noise_photos_drift() -> None:
    profile = profile_of(digits.NAME)
    handler = load_handler(digits.NAME, IMAGE_HANDLERS)
    split = digits.load_split()

    def job(images: list[bytes]) -> dict[str, Any]:
        records = [{"image": data, "id": f"{i}.png"} for i, data in enumerate(images)]
        return run(profile, records, handler.predict([handler.prepare(r) for r in records]))

    held_out = [digits.render_png(row) for row in split["x"][split["test_idx"][:200]]]
    clean = job(held_out)
    assert [f["name"] for f in clean["features"]] == ["meanIntensity", "inkFraction"]
    assert clean["status"] == "ok", clean

    rng = np.random.default_rng(0)
    noise = []
    for _ in range(100):  # grainy grey photos, not digits
        out = io.BytesIO()
        Image.fromarray(rng.integers(60, 200, (64, 64), dtype=np.uint8), mode="L").save(out, format="PNG")
        noise.append(out.getvalue())
    drifted = job(noise)
    assert drifted["status"] == "drifted"
    assert all(f["drifted"] for f in drifted["features"])


@pytest.fixture(scope="module")
def embedded() -> dict[str, list[float]]:
    """Every reference text's embedding from the built text-embedding package (174 texts, embedded once)."""
    embedder = load_handler(text_models.EMBED_NAME, TEXT_HANDLERS)
    texts = text_models.reference_texts()
    return {t: out["embedding"] for t, out in zip(texts, embedder.predict(texts), strict=True)}


def test_embeddings_of_other_texts_like_the_reference_are_clean_and_one_topic_drifts(
    embedded: dict[str, list[float]],
) -> None:
    """Half the reference texts build a profile; the other half is a clean job, one topic's sentences are not."""
    texts = list(embedded)
    order = np.random.default_rng(3).permutation(len(texts))
    half, rest = [texts[i] for i in order[: len(texts) // 2]], [texts[i] for i in order[len(texts) // 2 :]]
    profile = text_models.drift_profile(text_models.EMBED_NAME, half, np.asarray([embedded[t] for t in half]))

    def job(batch: list[str]) -> dict[str, Any]:
        return run(profile, [{"text": t} for t in batch], [{"embedding": embedded[t]} for t in batch])

    clean = job(rest)
    assert clean["prediction"]["metric"] == "centroid-shift"
    assert clean["prediction"]["drifted"] is False and clean["status"] == "ok"

    sports = [r["text"] for r in text_models.zero_shot_eval_rows() if r["label"] == "sports"]
    drifted = job(sports)
    assert drifted["prediction"]["drifted"] is True
    assert drifted["prediction"]["centroidShift"] > clean["prediction"]["centroidShift"]
    assert drifted["status"] == "drifted"  # one of two columns (length, embedding) is half


def test_the_built_embedding_profile_flags_one_topic(embedded: dict[str, list[float]]) -> None:
    profile = profile_of(text_models.EMBED_NAME)
    sports = [r["text"] for r in text_models.zero_shot_eval_rows() if r["label"] == "sports"]
    result = run(profile, [{"text": t} for t in sports], [{"embedding": embedded[t]} for t in sports])
    assert result["prediction"]["drifted"] is True and result["status"] == "drifted"
    failed = run(profile, [{"text": t} for t in sports], [None] * len(sports))  # no outputs: only lengths count
    assert failed["prediction"]["value"] is None and failed["columns"] == 1


def test_zero_shot_has_no_label_reference_and_long_texts_drift() -> None:
    profile = profile_of(text_models.ZERO_SHOT_NAME)
    assert profile["prediction"] is None  # labels come with each job: no fixed set to compare
    texts = text_models.reference_texts()
    outputs: list[dict[str, Any] | None] = [{"label": "a", "scores": {"a": 1.0}}] * len(texts)
    assert run(profile, [{"text": t} for t in texts], outputs)["status"] == "ok"
    long = run(profile, [{"text": " ".join([t] * 6)} for t in texts], outputs)
    assert long["status"] == "drifted" and long["prediction"] is None
