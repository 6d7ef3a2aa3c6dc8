"""Drift sketches and metrics: real shifts of the breast-cancer rows, merging, documents, p-values against scipy."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
import scipy.spatial.distance
import scipy.stats

from shared.domain import drift
from shared.domain.drift import DriftSketch, evaluate
from shared.domain.events import (
    DEFAULT_SUBSCRIPTION_EVENT_TYPES,
    DRIFT_DETECTED,
    EVENT_TYPES,
    MODEL_EVENT_TYPES,
    Subscription,
    model_event,
)
from shared.modelbuild import breast_cancer as bc


@pytest.fixture(scope="module")
def split() -> bc.Split:
    return bc.load_split()


@pytest.fixture(scope="module")
def pipeline(split: bc.Split) -> Any:
    return bc.train(split)


@pytest.fixture(scope="module")
def profile(split: bc.Split, pipeline: Any) -> dict[str, Any]:
    """As `make models` builds it: training rows per feature, predicted labels of the held-out rows."""
    return bc.drift_profile(split, [bc.LABELS[i] for i in pipeline.predict(split.x_test)])


def records(split: bc.Split, x: np.ndarray) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", **dict(zip(split.feature_names, map(float, row), strict=True))} for i, row in enumerate(x)]


def outputs(pipeline: Any, x: np.ndarray) -> list[dict[str, Any] | None]:
    return [{"label": bc.LABELS[i], "probabilities": {}} for i in pipeline.predict(x)]


def job_drift(profile: dict[str, Any], split: bc.Split, pipeline: Any, x: np.ndarray) -> dict[str, Any]:
    sketch = DriftSketch.empty(profile)
    sketch.add(records(split, x), outputs(pipeline, x))
    result = evaluate(profile, sketch)
    assert result is not None
    return result


def test_held_out_rows_do_not_drift(profile: dict[str, Any], split: bc.Split, pipeline: Any) -> None:
    result = job_drift(profile, split, pipeline, split.x_test)
    assert result["status"] == "ok"
    assert result["rows"] == len(split.test_idx)
    assert [f["name"] for f in result["features"]] == split.feature_names
    # 426 reference rows (<= 1000): every feature is tested with KS at p 0.05, the labels with chi-square.
    assert {(f["metric"], f["threshold"]) for f in result["features"]} == {("ks", 0.05)}
    assert result["prediction"]["metric"] == "chi-square"
    assert result["prediction"]["drifted"] is False
    assert result["share"] < 0.5


def test_scaled_rows_drift(profile: dict[str, Any], split: bc.Split, pipeline: Any) -> None:
    result = job_drift(profile, split, pipeline, split.x_test * 1.5)
    assert result["status"] == "drifted"
    assert result["share"] >= 0.9
    assert all(f["value"] < 0.05 for f in result["features"] if f["drifted"])


def test_columns_shuffled_across_drift(profile: dict[str, Any], split: bc.Split, pipeline: Any) -> None:
    permutation = np.random.default_rng(7).permutation(len(split.feature_names))
    result = job_drift(profile, split, pipeline, split.x_test[:, permutation])
    assert result["status"] == "drifted"
    assert result["share"] >= 0.9


def test_false_positive_rate_over_clean_jobs(profile: dict[str, Any], split: bc.Split, pipeline: Any) -> None:
    """200 jobs of 50-100 random held-out rows: (almost) none may be called drifted (bench/drift_fpr.py reports)."""
    rng = np.random.default_rng(20261201)
    drifted = 0
    for _ in range(200):
        idx = rng.choice(len(split.test_idx), size=int(rng.integers(50, 101)), replace=False)
        drifted += job_drift(profile, split, pipeline, split.x_test[idx])["status"] == "drifted"
    assert drifted / 200 <= 0.02


def test_a_small_shift_of_few_features_is_not_a_dataset_drift(
    profile: dict[str, Any], split: bc.Split, pipeline: Any
) -> None:
    x = split.x_test.copy()
    x[:, :3] *= 2.0  # three of thirty features: they drift, the job does not (Evidently's half-the-columns rule)
    result = job_drift(profile, split, pipeline, x)
    assert [f["drifted"] for f in result["features"][:3]] == [True, True, True]
    assert result["status"] == "ok"


def test_three_merged_parts_equal_one_sketch(profile: dict[str, Any], split: bc.Split, pipeline: Any) -> None:
    x = split.x_test
    whole = DriftSketch.empty(profile)
    whole.add(records(split, x), outputs(pipeline, x))
    parts = []
    for chunk in np.array_split(np.arange(len(x)), 3):
        part = DriftSketch.empty(profile)
        part.add(records(split, x[chunk]), outputs(pipeline, x[chunk]))
        parts.append(DriftSketch.from_doc(orjson.loads(orjson.dumps(part.to_doc()))))  # as stored on the job
    merged = DriftSketch.merge(parts)
    one, other = whole.to_doc(), merged.to_doc()
    assert [f["counts"] for f in one["features"]] == [f["counts"] for f in other["features"]]
    for a, b in zip(one["features"], other["features"], strict=True):
        assert b["sums"] == pytest.approx(a["sums"], rel=1e-12)
    assert one["prediction"] == other["prediction"]
    assert (one["records"], one["failed"]) == (other["records"], other["failed"])
    assert evaluate(profile, merged) == evaluate(profile, whole)


def test_document_round_trip_and_keeps_adding(profile: dict[str, Any], split: bc.Split, pipeline: Any) -> None:
    x = split.x_test
    sketch = DriftSketch.empty(profile)
    sketch.add(records(split, x[:70]), outputs(pipeline, x[:70]))
    doc = orjson.loads(orjson.dumps(sketch.to_doc()))
    again = DriftSketch.from_doc(doc)
    assert again.to_doc() == sketch.to_doc()
    assert evaluate(profile, again) == evaluate(profile, sketch)
    with pytest.raises(ValueError):
        again.add(records(split, x[70:]), outputs(pipeline, x[70:]))  # no profile: it cannot place new rows
    resumed = DriftSketch.from_doc(doc, profile)
    resumed.add(records(split, x[70:]), outputs(pipeline, x[70:]))
    assert evaluate(profile, resumed) == job_drift(profile, split, pipeline, x)


def test_document_size_does_not_grow_with_rows(profile: dict[str, Any], split: bc.Split, pipeline: Any) -> None:
    one = DriftSketch.empty(profile)
    one.add(records(split, split.x_test[:1]), outputs(pipeline, split.x_test[:1]))
    many = DriftSketch.empty(profile)
    rng = np.random.default_rng(1)
    for _ in range(100):  # 100,000 rows
        x = split.x_test[rng.integers(0, len(split.test_idx), 1000)]
        many.add(records(split, x), outputs(pipeline, x))
    assert many.rows == 100_000
    small, large = len(orjson.dumps(one.to_doc())), len(orjson.dumps(many.to_doc()))
    # Bounded by the profile's bins (count and sum, <= 25 characters each, per bin), never by rows.
    bins = sum(len(f["counts"]) for f in profile["features"]) + len(profile["prediction"]["categories"])
    bound = bins * 2 * 25 + 2_000
    assert small < bound and large < bound < 100_000  # far under a Cosmos item's 2 MB


def test_failed_records_count_inputs_not_predictions(profile: dict[str, Any], split: bc.Split, pipeline: Any) -> None:
    x = split.x_test[:20]
    outs = outputs(pipeline, x)
    outs[3] = None
    outs[9] = None
    sketch = DriftSketch.empty(profile)
    sketch.add(records(split, x), outs)
    result = evaluate(profile, sketch)
    assert result is not None
    assert result["rows"] == 20 and sketch.failed == 2
    assert result["features"][0]["rows"] == 20
    assert result["prediction"]["rows"] == 18


def test_missing_and_non_numeric_values_are_missing_not_zero(profile: dict[str, Any]) -> None:
    name = profile["features"][0]["name"]
    sketch = DriftSketch.empty(profile)
    sketch.add([{name: "big"}, {name: None}, {name: [1.0]}, {}, {name: float("nan")}], [None] * 5)
    assert sketch.features[0].rows == 0 and sketch.features[0].missing == 5
    result = evaluate(profile, sketch)
    assert result is not None and result["status"] == "ok"
    assert result["features"][0]["value"] is None


def test_sketches_of_another_profile_do_not_mix(profile: dict[str, Any], split: bc.Split) -> None:
    other = bc.drift_profile(split, ["benign"] * 10)
    assert other["id"] != profile["id"]
    with pytest.raises(ValueError):
        DriftSketch.merge([DriftSketch.empty(profile), DriftSketch.empty(other)])
    with pytest.raises(ValueError):
        evaluate(profile, DriftSketch.empty(other))


def test_no_profile_no_drift_section(profile: dict[str, Any]) -> None:
    assert evaluate(None, DriftSketch.empty(profile)) is None


# ------------------------------------------------------------------ large samples: the distance metrics


def numeric_profile(rows: int, seed: int = 0) -> tuple[dict[str, Any], np.random.Generator]:
    rng = np.random.default_rng(seed)
    features = [
        drift.numeric_reference("a", rng.normal(10, 2, rows)),
        drift.numeric_reference("b", rng.lognormal(1, 0.5, rows)),
    ]
    labels = drift.label_reference(rng.choice(["x", "y", "z"], rows, p=[0.5, 0.3, 0.2]).tolist())
    return drift.make_profile("m", "1", features, labels, reference="synthetic"), rng


def synthetic_job(profile: dict[str, Any], rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, Any]:
    a, b = rng.normal(10 + shift, 2, n), rng.lognormal(1, 0.5, n)
    labels = rng.choice(["x", "y", "z"], n, p=[0.5, 0.3, 0.2])
    sketch = DriftSketch.empty(profile)
    sketch.add([{"a": float(p), "b": float(q)} for p, q in zip(a, b, strict=True)], [{"label": str(v)} for v in labels])
    result = evaluate(profile, sketch)
    assert result is not None
    return result


def test_large_reference_and_job_use_wasserstein_and_jensen_shannon() -> None:
    profile, rng = numeric_profile(20_000)
    clean = synthetic_job(profile, rng, 5000)
    assert [(f["metric"], f["threshold"]) for f in clean["features"]] == [("wasserstein", 0.1)] * 2
    assert (clean["prediction"]["metric"], clean["prediction"]["threshold"]) == ("jensen-shannon", 0.1)
    assert clean["status"] == "ok"
    shifted = synthetic_job(profile, rng, 5000, shift=1.0)  # half a standard deviation: W1 / std = 0.5
    assert shifted["features"][0]["drifted"] is True
    assert shifted["features"][0]["value"] == pytest.approx(0.5, abs=0.05)
    assert shifted["features"][1]["drifted"] is False


def test_a_small_job_against_a_large_reference_is_tested_not_measured() -> None:
    """Evidently would use the distance (reference > 1000 rows); 30 clean rows would then look drifted."""
    profile, rng = numeric_profile(20_000)
    drifted = 0
    for _ in range(50):
        result = synthetic_job(profile, rng, 30)
        assert {f["metric"] for f in result["features"]} == {"ks"}
        drifted += result["status"] == "drifted"
    assert drifted <= 2


def test_unseen_categories_are_capped_into_other() -> None:
    profile, _ = numeric_profile(200)
    sketch = DriftSketch.empty(profile)
    sketch.add([{"a": 10.0, "b": 3.0}] * 500, [{"label": f"new-{i}"} for i in range(500)])
    categories = sketch.to_doc()["prediction"]["categories"]
    assert len(categories) == drift.MAX_NEW_CATEGORIES + 1
    assert categories[drift.OTHER] == 500 - drift.MAX_NEW_CATEGORIES
    result = evaluate(profile, sketch)
    assert result is not None and result["prediction"]["drifted"] is True
    # Merged shards keep the cap too (and lose no count): 3 shards of 15 new labels each.
    shards = []
    for part in range(3):
        shard = DriftSketch.empty(profile)
        shard.add([{"a": 10.0, "b": 3.0}] * 16, [{"label": "x"}] + [{"label": f"s{part}-{i}"} for i in range(15)])
        shards.append(DriftSketch.from_doc(shard.to_doc()))
    merged = DriftSketch.merge(shards).to_doc()["prediction"]["categories"]
    assert len(merged) == 1 + drift.MAX_NEW_CATEGORIES + 1  # "x", 20 new ones, "__other__"
    assert merged["x"] == 3 and sum(merged.values()) == 48


# ------------------------------------------------------------------ the numbers, against scipy


@pytest.mark.parametrize("x", [0.05, 0.1, 0.19, 0.2, 0.3, 0.5, 0.8, 1.0, 1.2, 1.36, 1.63, 2.0, 3.0, 5.0])
def test_kolmogorov_survival_matches_scipy(x: float) -> None:
    assert drift.kolmogorov_sf(x) == pytest.approx(float(scipy.stats.kstwobign.sf(x)), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("df", [1, 2, 3, 5, 9, 29, 100, 383.7])
@pytest.mark.parametrize("q", [0.001, 0.05, 0.5, 0.95, 0.999999])
def test_chi_square_survival_matches_scipy(df: float, q: float) -> None:
    x = float(scipy.stats.chi2.ppf(q, df))
    assert drift.chi2_sf(x, df) == pytest.approx(float(scipy.stats.chi2.sf(x, df)), rel=1e-9, abs=1e-300)


def test_chi_square_far_tail_matches_scipy() -> None:
    assert drift.chi2_sf(900.0, 29) == pytest.approx(float(scipy.stats.chi2.sf(900.0, 29)), rel=1e-8)


def test_ks_from_bins_is_a_lower_bound_within_one_bin(profile: dict[str, Any], split: bc.Split) -> None:
    for i, ref in enumerate(profile["features"]):
        current = split.x_test[:, i] * (1.0 + 0.01 * i)
        sketch = DriftSketch.empty(profile)
        sketch.add(records(split, split.x_test * (1.0 + 0.01 * i)), [None] * len(current))
        binned = drift.binned_ks(np.asarray(ref["counts"], dtype=float), sketch.features[i].counts.astype(float))
        exact = scipy.stats.ks_2samp(split.x_train[:, i], current).statistic
        assert binned <= exact + 1e-12
        assert exact - binned <= max(ref["counts"]) / ref["rows"] + 1 / len(current) + 1e-12
        # The p-value is the asymptotic one at the binned statistic.
        n, m = ref["rows"], len(current)
        assert drift.ks_p_value(binned, n, m) == pytest.approx(
            float(scipy.stats.kstwobign.sf(np.sqrt(n * m / (n + m)) * binned)), rel=1e-9, abs=1e-15
        )


def test_chi_square_homogeneity_matches_scipy_contingency() -> None:
    ref, cur = np.array([120.0, 80, 30, 0, 5]), np.array([40.0, 50, 4, 3, 0])
    statistic, p = drift.chi2_homogeneity(ref, cur)
    expected = scipy.stats.chi2_contingency(np.vstack([ref, cur])[:, (ref + cur) > 0], correction=False)
    assert statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)


def test_jensen_shannon_matches_scipy() -> None:
    ref, cur = np.array([120.0, 80, 30, 0]), np.array([40.0, 50, 4, 3])
    assert drift.jensen_shannon(ref, cur) == pytest.approx(
        float(scipy.spatial.distance.jensenshannon(ref / ref.sum(), cur / cur.sum())), rel=1e-12
    )


def test_weighted_wasserstein_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 40), rng.normal(0.5, 2, 30)
    wa, wb = rng.integers(1, 9, 40).astype(float), rng.integers(1, 9, 30).astype(float)
    assert drift.weighted_wasserstein(a, wa, b, wb) == pytest.approx(
        float(scipy.stats.wasserstein_distance(a, b, wa, wb)), rel=1e-12
    )


def test_binned_wasserstein_is_close_to_exact() -> None:
    rng = np.random.default_rng(5)
    ref_values, cur_values = rng.normal(10, 2, 5000), rng.normal(10.6, 2.5, 3000)
    profile = drift.make_profile("m", "1", [drift.numeric_reference("a", ref_values)], None, reference="synthetic")
    sketch = DriftSketch.empty(profile)
    sketch.add([{"a": float(v)} for v in cur_values], [None] * len(cur_values))
    result = evaluate(profile, sketch)
    assert result is not None
    exact = scipy.stats.wasserstein_distance(ref_values, cur_values) / np.std(ref_values)
    assert result["features"][0]["value"] == pytest.approx(exact, abs=0.01)


# ------------------------------------------------------------------ model events


def test_model_event_shape_and_default_subscriptions() -> None:
    event = model_event("acme", "breast-cancer-classifier", DRIFT_DETECTED, {"jobId": "j1", "drift": {}}, "e1")
    assert event.subject == "/tenants/acme/models/breast-cancer-classifier"
    assert event.topic == "acme" and event.id == "e1"
    assert event.data["model"] == {"name": "breast-cancer-classifier"} and event.data["jobId"] == "j1"
    assert set(MODEL_EVENT_TYPES) == {"AIaaS.Model.DriftDetected", "AIaaS.Model.Promoted", "AIaaS.Model.RolledBack"}
    assert DEFAULT_SUBSCRIPTION_EVENT_TYPES == EVENT_TYPES + MODEL_EVENT_TYPES
    sub = Subscription("acme", "s1", "https://example.test/hook", model_names=["breast-cancer-classifier"])
    assert sub.matches(event)
    assert not Subscription("acme", "s2", "https://example.test/hook", model_names=["other"]).matches(event)
    assert not Subscription("acme", "s3", "https://example.test/hook", event_types=list(EVENT_TYPES)).matches(event)
    with pytest.raises(ValueError):
        model_event("acme", "m", "AIaaS.Job.Succeeded", {}, "e2")


def test_the_fast_and_the_careful_path_count_alike(profile: dict[str, Any], split: bc.Split, pipeline: Any) -> None:
    """A batch of plain numbers goes through one numpy conversion; one odd record sends it value by value."""
    x = split.x_test[:40]
    rows, outs = records(split, x), outputs(pipeline, x)
    fast = DriftSketch.empty(profile)
    fast.add(rows, outs)
    careful = DriftSketch.empty(profile)
    odd = {"id": "odd", split.feature_names[0]: "n/a"}  # a string: the whole batch takes the careful path
    careful.add([*rows, odd], [*outs, None])
    a, b = fast.to_doc(), careful.to_doc()
    assert [f["counts"] for f in a["features"][1:]] == [f["counts"] for f in b["features"][1:]]
    assert b["features"][1]["missing"] == 1 and b["features"][0]["counts"] == a["features"][0]["counts"]
    assert b["features"][0]["missing"] == 1
    infinite = DriftSketch.empty(profile)
    infinite.add([{**rows[0], split.feature_names[0]: float("inf")}], [None])
    assert infinite.features[0].missing == 1 and infinite.features[0].rows == 0
