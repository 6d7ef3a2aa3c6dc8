"""transaction-anomaly-detector: the built package through its handler; card metrics re-checked on held-out rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shared.domain.errors import InvalidRecord
from shared.inference.handlers_tabular import HANDLERS
from shared.modelbuild import anomaly
from tests.unit._model_packages import check_card, load_handler


@pytest.fixture(scope="module")
def handler() -> Any:
    return load_handler(anomaly.NAME, HANDLERS)


def test_card_metrics_recheck_on_held_out_rows(handler: Any) -> None:
    check_card(handler.card)
    card = handler.card.raw
    split = anomaly.load_split()
    test = split["test_idx"]
    rows = [dict(zip(anomaly.FEATURES, row, strict=True)) for row in split["x"][test]]
    scores = handler.scores([handler.prepare(r) for r in rows])
    metrics = anomaly.compute_metrics(split["y"][test], scores, card["threshold"], split["kind"][test])
    for key in ("rocAuc", "averagePrecision", "precision", "recall", "falsePositiveRate", "heldOutRows"):
        assert metrics[key] == pytest.approx(card["metrics"][key], abs=1e-6), key
    assert card["metrics"]["rocAuc"] > 0.95
    assert card["trainingData"]["fingerprint"].startswith("sha256:")
    assert "synthetic" in card["limitations"].lower()


def test_predict_output_and_threshold(handler: Any) -> None:
    normal = {
        "amount": "35.20",
        "hourOfDay": 14,
        "merchantRiskScore": 0.1,
        "distanceFromHomeKm": 3.0,
        "transactionsLast24h": 2,
        "accountAgeDays": 900,
        "amountToAvgRatio": 1.0,
    }
    strange = dict(normal, amount=4800.0, hourOfDay=3, amountToAvgRatio=40.0, accountAgeDays=2, merchantRiskScore=0.9)
    out = handler.predict([handler.prepare(normal), handler.prepare(strange)])
    assert set(out[0]) == {"score", "isAnomaly"}
    assert out[0]["isAnomaly"] is False and out[1]["isAnomaly"] is True
    assert 0 < out[0]["score"] < out[1]["score"] <= 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": None}, "amount"),
        ({"hourOfDay": ""}, "hourOfDay"),
        ({"merchantRiskScore": "high"}, "merchantRiskScore"),
        ({"distanceFromHomeKm": "nan"}, "distanceFromHomeKm"),
        ({"transactionsLast24h": float("inf")}, "transactionsLast24h"),
        ({"accountAgeDays": True}, "accountAgeDays"),
        ({"amountToAvgRatio": [1]}, "amountToAvgRatio"),
    ],
)
def test_bad_records_name_the_field(handler: Any, change: dict[str, Any], field: str) -> None:
    record = dict.fromkeys(anomaly.FEATURES, "1")
    record.update(change)
    with pytest.raises(InvalidRecord) as err:
        handler.prepare(record)
    assert err.value.field == field


def test_generator_is_deterministic() -> None:
    x1, y1, _ = anomaly.generate(rows=500)
    x2, y2, _ = anomaly.generate(rows=500)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert y1.sum() == 10
