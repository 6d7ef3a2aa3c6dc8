"""text-embedding and zero-shot-text-classifier: built packages through their handlers; card metrics re-checked."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shared.domain.errors import InvalidInput, InvalidRecord
from shared.domain.models import ModelCard
from shared.inference.handlers_text import HANDLERS, NO_LABELS, TextEmbedding
from shared.modelbuild import text_models
from tests.unit._model_packages import check_card, load_handler


@pytest.fixture(scope="module")
def embedder() -> Any:
    return load_handler(text_models.EMBED_NAME, HANDLERS)


@pytest.fixture(scope="module")
def zero_shot() -> Any:
    return load_handler(text_models.ZERO_SHOT_NAME, HANDLERS)


def test_embedding_card_metrics_recheck(embedder: Any) -> None:
    check_card(embedder.card)
    card = embedder.card.raw
    assert [f["file"] for f in card["files"]] == ["tokenizer.json", "profile.json"]
    try:
        from sentence_transformers import SentenceTransformer  # build-time only; present after `make models`
    except ImportError:
        reference = None
    else:
        reference = SentenceTransformer(str(text_models.source_model_dir()), device="cpu")
    metrics = text_models.embedding_metrics(embedder, reference)
    for key in ("paraphraseCosineMean", "unrelatedCosineMean", "paraphraseCloserThanUnrelated"):
        assert metrics[key] == pytest.approx(card["metrics"][key], abs=1e-3), key
    assert metrics["paraphraseCloserThanUnrelated"] == 1.0
    if reference is not None:
        assert metrics["cosineAgreementMin"] >= 0.9999
        assert card["metrics"]["cosineAgreementMin"] >= 0.9999


def test_embedding_output(embedder: Any) -> None:
    texts = ["A short one.", "A much longer sentence " * 100, "Ünïcödé and emoji 😀"]
    out = embedder.predict([embedder.prepare({"text": t}) for t in texts])
    for item in out:
        vector = np.asarray(item["embedding"])
        assert vector.shape == (384,)
        assert np.linalg.norm(vector) == pytest.approx(1, abs=1e-4)
    # batching and order do not change an embedding
    alone = embedder.predict([texts[1]])[0]["embedding"]
    assert np.allclose(alone, out[1]["embedding"], atol=1e-4)


@pytest.mark.parametrize("record", [{"text": ""}, {"text": "   "}, {"text": 3}, {"body": "x"}, "plain", None])
def test_embedding_bad_records(embedder: Any, record: Any) -> None:
    with pytest.raises(InvalidRecord) as err:
        embedder.prepare(record)
    assert err.value.field == "text"


def test_embedding_needs_its_tokenizer(embedder: Any) -> None:
    with pytest.raises(RuntimeError, match=r"tokenizer\.json"):
        TextEmbedding(ModelCard({"name": "x", "version": "1"}), embedder._session)
    with pytest.raises(RuntimeError, match=r"tokenizer\.json"):
        TextEmbedding.from_package(ModelCard({"name": "x", "version": "1"}), embedder._session, {})


def test_zero_shot_card_accuracy_recheck(zero_shot: Any) -> None:
    check_card(zero_shot.card)
    card = zero_shot.card.raw
    assert card["parameters"]["labels"]["required"] is True
    metrics = text_models.zero_shot_metrics(zero_shot, card["zeroShot"]["temperature"])
    assert metrics["accuracy"] == pytest.approx(card["metrics"]["accuracy"], abs=1e-6)
    assert metrics["logLoss"] == pytest.approx(card["metrics"]["logLoss"], abs=1e-3)
    assert metrics["accuracy"] >= 0.9


def test_zero_shot_labels_per_job_and_per_record(zero_shot: Any) -> None:
    bound = zero_shot.with_parameters({"labels": ["sport", "cooking", "money"]})
    records = [
        {"text": "The goalkeeper saved a penalty."},
        {"text": "Stir the risotto slowly."},
        {"text": "The goalkeeper saved a penalty.", "labels": ["weather", "football"]},
    ]
    out = bound.predict([bound.prepare(r) for r in records])
    assert [o["label"] for o in out] == ["sport", "cooking", "football"]
    assert set(out[2]["scores"]) == {"weather", "football"}
    assert sum(out[0]["scores"].values()) == pytest.approx(1, abs=1e-4)
    templated = zero_shot.with_parameters({"labels": ["sport", "cooking"], "hypothesisTemplate": "A story on {}"})
    assert templated.predict([templated.prepare(records[1])])[0]["label"] == "cooking"
    assert zero_shot._labels is None  # binding made a copy


def test_zero_shot_without_labels(zero_shot: Any) -> None:
    with pytest.raises(InvalidRecord) as err:
        zero_shot.prepare({"text": "hello"})
    assert err.value.message == NO_LABELS and err.value.field == "labels"


@pytest.mark.parametrize(
    "parameters",
    [
        {"labels": ["only one"]},
        {"labels": "a,b"},
        {"labels": ["a", "a"]},
        {"labels": ["a", ""]},
        {"labels": ["a", 2]},
        {"labels": [str(i) for i in range(65)]},
        {"labels": ["a", "b"], "hypothesisTemplate": "no placeholder"},
        {"labels": ["a", "b"], "temperature": 1},
        ["a", "b"],
    ],
)
def test_zero_shot_bad_parameters(zero_shot: Any, parameters: Any) -> None:
    with pytest.raises(InvalidInput) as err:
        zero_shot.with_parameters(parameters)
    assert err.value.code == "InvalidParameters"
    assert not isinstance(err.value, InvalidRecord)


def test_zero_shot_bad_record_labels(zero_shot: Any) -> None:
    bound = zero_shot.with_parameters({"labels": ["a", "b"]})
    with pytest.raises(InvalidRecord) as err:
        bound.prepare({"text": "hi", "labels": ["x"]})
    assert err.value.field == "labels"
