"""Monitoring checks on synthetic data whose answer is known (no project run needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lifecycle import params
from lifecycle.monitoring import drift, multivariate, performance, quality, windows
from lifecycle.monitoring.reference import Reference
from tests.conftest import ROOT

P = params.load("monitor", ROOT / "params.yaml")


def make_reference(features: pd.DataFrame, val_scores=None, val_labels=None, evaluate=None,
                   threshold=0.5) -> Reference:
    kinds = {c: "number" if pd.api.types.is_numeric_dtype(features[c]) else "category"
             for c in features}
    columns = {}
    for c, k in kinds.items():
        info = {"kind": k, "null_share": float(features[c].isna().mean())}
        if k == "number":
            info.update(min=float(features[c].min()), max=float(features[c].max()))
        else:
            info["categories"] = sorted(features[c].dropna().astype(str).unique())
        columns[c] = info
    rng = np.random.default_rng(0)
    if val_scores is None:
        val_scores = rng.random(2000)
        val_labels = (rng.random(2000) < val_scores).astype(np.int8)
    return Reference(version="v1", task="binary", features=features, kinds=kinds,
                     columns=columns, validation_scores=np.asarray(val_scores, dtype=float),
                     validation_labels=np.asarray(val_labels), evaluate=evaluate or {},
                     threshold=threshold, positive_class="Yes", classes=["No", "Yes"])


def window_of(rows: pd.DataFrame, index: int = 0) -> windows.Window:
    return windows.Window(index, None, None, rows.reset_index(drop=True), "v1")


def frame(n: int, seed: int, shift: float = 0.0, corr: float = 0.0,
          share_a: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(shift, 1, n)
    x2 = corr * x1 + np.sqrt(1 - corr ** 2) * rng.normal(0, 1, n)
    return pd.DataFrame({"x1": x1, "x2": x2, "plan": np.where(rng.random(n) < share_a, "a",
                                                               rng.choice(["b", "c"], n))})


def verdicts(results, check=None) -> dict:
    return {r.target: r.verdict for r in results if check is None or r.check == check}


def test_data_drift_flags_the_shifted_column_only():
    ref = make_reference(frame(3000, 0))
    calm = verdicts(drift.data_drift(window_of(frame(1000, 1)), ref, P.data_drift))
    assert calm == {"x1": "ok", "x2": "ok", "plan": "ok", "dataset": "ok"}
    moved = drift.data_drift(window_of(frame(1000, 2, shift=0.5, share_a=0.7)), ref,
                             P.data_drift)
    assert verdicts(moved) == {"x1": "drift", "x2": "ok", "plan": "drift", "dataset": "drift"}
    x1 = next(r for r in moved if r.target == "x1")
    # 3,000 reference rows: Evidently's statistic is the normalised Wasserstein distance
    assert x1.statistic == "wasserstein_norm" and x1.value == pytest.approx(0.5, abs=0.1)
    assert x1.p_value < 1e-10 and x1.n_reference == 3000 and x1.n_window == 1000


def test_small_reference_gets_a_test_statistic():
    ref = make_reference(frame(800, 0))
    results = drift.data_drift(window_of(frame(1000, 1)), ref, P.data_drift)
    assert {r.target: r.statistic for r in results} == {
        "x1": "ks", "x2": "ks", "plan": "chisquare", "dataset": "drifted_columns"}


def test_effect_floor_ignores_a_trivial_shift_in_a_huge_window():
    """0.05 std is significant on 200k rows (p tiny) but under the effect floor: no alarm."""
    ref = make_reference(frame(20_000, 0))
    result = drift.data_drift(window_of(frame(200_000, 3, shift=0.05)), ref, P.data_drift)
    x1 = next(r for r in result if r.target == "x1")
    assert x1.p_value < 1e-6 and x1.effect < P.data_drift.effect_floor.number
    assert x1.verdict == "ok"


def test_small_window_is_insufficient():
    ref = make_reference(frame(3000, 0))
    results = drift.data_drift(window_of(frame(P.data_drift.min_rows - 1, 1, shift=3)), ref,
                               P.data_drift)
    assert {r.verdict for r in results} == {"insufficient"}


def test_benjamini_hochberg_keeps_false_alarms_down():
    """40 unshifted windows x 3 columns: the dataset-level false-alarm rate stays <= alpha-ish
    (BH across columns), while per-column raw tests at the same alpha would alarm more."""
    ref = make_reference(frame(3000, 0))
    p = P.data_drift.model_copy(update={"effect_floor": P.data_drift.effect_floor.model_copy(
        update={"number": 0.0, "category": 0.0}), "alpha": 0.05})
    alarms = sum(drift.data_drift(window_of(frame(1000, 100 + i)), ref, p)[-1].verdict
                 == "drift" for i in range(40))
    assert alarms <= 5  # 5% of 40 is 2; binomial slack


def test_joint_shift_with_unchanged_marginals_is_caught_by_the_domain_classifier():
    ref = make_reference(frame(2000, 0, corr=0.9))
    window = window_of(frame(600, 5, corr=-0.9))
    assert verdicts(drift.data_drift(window, ref, P.data_drift))["dataset"] == "ok"
    p = P.multivariate_drift
    [result] = multivariate.domain_classifier(window, ref, p)
    assert result.verdict == "drift" and result.value > 0.8 and result.p_value < 1e-6
    [calm] = multivariate.domain_classifier(window_of(frame(600, 6, corr=0.9)), ref, p)
    assert calm.verdict == "ok" and calm.value < 0.6


def test_the_domain_classifier_does_not_alarm_on_a_resampled_stream():
    # production repeats records (a replayed stream, one profile asked twice): a window drawn
    # with replacement from 400 records, reference from the same population. Without
    # de-duplication and a split grouped by record, the classifier recognises the window's
    # repeated rows on the held-out side and "detects" drift that is not there.
    ref = make_reference(frame(3000, 0))
    pool = frame(400, 1)
    alarms, aucs = 0, []
    for i in range(20):
        rows = pool.iloc[np.random.default_rng(100 + i).integers(0, 400, 5000)]
        [r] = multivariate.domain_classifier(window_of(rows, i), ref, P.multivariate_drift)
        alarms += r.verdict == "drift"
        aucs.append(r.value)
        assert r.n_window <= 400  # distinct records only
    assert alarms <= 1 and np.mean(aucs) < 0.56


def test_records_are_keyed_by_value_nan_included():
    x = np.array([[1.0, np.nan], [1.0, np.nan], [-0.0, 2.0], [0.0, 2.0], [1.0, 2.0]])
    keys = multivariate.record_keys(x)
    assert keys[0] == keys[1] and keys[2] == keys[3] and len(set(keys)) == 3
    assert len(multivariate.distinct(x)) == 3


def scored_window(n: int, seed: int, flip: float = 0.0) -> pd.DataFrame:
    """Calibrated scores: y ~ Bernoulli(score); `flip`: share of rows whose label is flipped."""
    rng = np.random.default_rng(seed)
    score = rng.beta(2, 3, n)
    y = rng.random(n) < score
    y = np.where(rng.random(n) < flip, ~y, y)
    return pd.DataFrame({"score": score, "prediction": np.where(score >= 0.5, "Yes", "No"),
                         "outcome": np.where(y, "Yes", "No")})


def calibrated_reference() -> Reference:
    rng = np.random.default_rng(1)
    scores = rng.beta(2, 3, 5000)
    return make_reference(frame(100, 0), scores, (rng.random(5000) < scores).astype(np.int8),
                          evaluate={"roc_auc": 0.75, "accuracy": 0.70})


def test_cbpe_estimate_matches_realized_without_labels():
    ref = calibrated_reference()
    inside = 0
    for i in range(20):
        w = window_of(scored_window(1000, 10 + i), i)
        est = {r.target: r for r in performance.estimated(w, ref, P.performance_estimate)}
        real = {r.target: r for r in performance.realized(w, ref, P.performance)}
        inside += all(real[m].low <= est[m].value <= real[m].high for m in ("roc_auc",
                                                                           "accuracy"))
    assert inside >= 17
    # labels are not needed for the estimate
    unlabelled = scored_window(1000, 99).assign(outcome=None)
    est = performance.estimated(window_of(unlabelled), ref, P.performance_estimate)
    assert {r.verdict for r in est} == {"ok"}
    assert {r.verdict for r in performance.realized(window_of(unlabelled), ref,
                                                    P.performance)} == {"insufficient"}


def test_expected_auc_equals_auc_for_certain_labels():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    scores, y = rng.random(500), rng.random(500) < 0.4
    assert performance.expected_auc(scores, y.astype(float)) == pytest.approx(
        roc_auc_score(y, scores), abs=1e-9)
    assert performance.auc_interval(scores, y, 0.95)[0] == pytest.approx(
        roc_auc_score(y, scores), abs=1e-12)


@pytest.mark.parametrize("name", ["roc_auc", "accuracy", "mae", "rmse"])
def test_analytic_intervals_match_a_percentile_bootstrap(name):
    # the realized metrics' intervals are analytic (a 100,000-row window costs one sort); on a
    # 1,000-row window they must say what 2,000 bootstrap resamples say
    from sklearn.metrics import roc_auc_score

    rows = scored_window(1000, 21)
    scores = rows["score"].to_numpy()
    labels = (rows["outcome"] == "Yes").to_numpy()
    correct = (labels == (scores >= 0.5)).astype(float)
    errors = scores - labels  # a regression-like error, for MAE / RMSE
    value, low, high = performance.interval(name, scores, labels.astype(np.int8), correct,
                                            errors, 0.95)
    metric = {"roc_auc": lambda i: roc_auc_score(labels[i], scores[i]),
              "accuracy": lambda i: correct[i].mean(),
              "mae": lambda i: np.abs(errors[i]).mean(),
              "rmse": lambda i: np.sqrt((errors[i] ** 2).mean())}[name]
    rng = np.random.default_rng(5)
    draws = [metric(rng.integers(0, 1000, 1000)) for _ in range(2000)]
    b_low, b_high = np.quantile(draws, [0.025, 0.975])
    assert value == pytest.approx(metric(np.arange(1000)))
    assert low == pytest.approx(b_low, abs=0.006) and high == pytest.approx(b_high, abs=0.006)
    assert low < value < high


def test_concept_drift_when_labels_flip_but_inputs_hold():
    ref = calibrated_reference()
    calm = performance.concept_drift(window_of(scored_window(1000, 7)), ref, P.concept_drift)
    assert verdicts(calm) == {"accuracy": "ok", "roc_auc": "ok", "error_stream": "ok"}
    flipped = window_of(scored_window(1000, 8, flip=0.3))
    results = performance.concept_drift(flipped, ref, P.concept_drift)
    assert verdicts(results) == {"accuracy": "drift", "roc_auc": "drift",
                                 "error_stream": "drift"}
    # the estimate holds (inputs unchanged) while the realized metric falls
    assert {r.verdict for r in performance.estimated(flipped, ref,
                                                     P.performance_estimate)} == {"ok"}
    assert verdicts(performance.realized(flipped, ref, P.performance))["accuracy"] == "drift"


def test_harder_rows_are_not_a_concept_change():
    # a covariate shift towards rows near the decision boundary: the error rate rises (ADWIN
    # sees it) but the calibrated scores expect exactly that rise, so no concept drift
    ref = calibrated_reference()
    rng = np.random.default_rng(9)
    score = rng.beta(8, 8, 1000)
    y = rng.random(1000) < score
    rows = pd.DataFrame({"score": score, "prediction": np.where(score >= 0.5, "Yes", "No"),
                         "outcome": np.where(y, "Yes", "No")})
    results = {r.target: r for r in performance.concept_drift(window_of(rows), ref,
                                                              P.concept_drift)}
    assert results["error_stream"].value >= 1  # ADWIN detected the rise
    assert {r.verdict for r in results.values()} == {"ok"}


def test_quality_counts_nulls_unknown_categories_and_out_of_range():
    ref = make_reference(frame(3000, 0))
    rows = frame(1000, 1)
    rows.loc[:49, "x1"] = np.nan                # 5% nulls
    rows.loc[50:99, "plan"] = "zzz"              # 5% unknown category
    rows.loc[100:101, "x2"] = 99.0               # 0.2% out of range: under the floor
    results = {r.target: r for r in quality.data_quality(window_of(rows), ref, P.data_quality)}
    assert results["x1:nulls"].verdict == "drift" and results["x1:nulls"].value == 0.05
    assert results["plan:unknown_category"].verdict == "drift"
    assert results["x2:out_of_range"].verdict == "ok" and results["dataset"].value == 2
    clean = quality.data_quality(window_of(frame(1000, 2)), ref, P.data_quality)
    assert verdicts(clean)["dataset"] == "ok"


def test_windows_by_count_and_time_keep_model_versions_apart():
    rows = pd.DataFrame({"created_at": pd.date_range("2026-01-01", periods=10, freq="12h",
                                                     tz="UTC"),
                         "model_version": ["v1"] * 8 + ["v0"] * 2, "x": range(10)})
    by_count = windows.cut(rows, "count", 3, "1D", "v1")
    assert [len(w.rows) for w in by_count] == [3, 3, 2]
    by_day = windows.cut(rows, "time", 1000, "1D", "v1")
    assert [len(w.rows) for w in by_day] == [2, 2, 2, 2]
    assert by_day[1].header()["start"].startswith("2026-01-02")
