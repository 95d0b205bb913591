"""evaluate: metrics per task against a naive baseline, the bootstrap, the threshold chosen on
validation, the business value, the quality gate; the stage on the real demo data via DVC."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn import metrics as skm

from lifecycle import evaluation as ev
from lifecycle.params import BusinessParams, EvaluateParams
from tests.conftest import ROOT, run
from tests.helpers_stages import assert_one_error_line, run_stage, set_params

BUSINESS = BusinessParams(value_per_retained=500, cost_per_contact=30, success_rate=0.3)


def params(**changes) -> EvaluateParams:
    everything = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]
    return EvaluateParams.model_validate({**everything, **changes})


def binary_predictions(n=400, seed=0) -> ev.Predictions:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    scores = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1).round(2)  # rounded: ties on purpose
    return ev.Predictions("binary", y, scores, (0, 1))


def wine() -> tuple[ev.Predictions, ev.Predictions, ev.Predictions]:
    """Multiclass (string labels, as `features.target_vector` gives): validation, test, baseline."""
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_wine(return_X_y=True)
    y = np.array([f"cultivar_{v}" for v in y], dtype=object)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.5, random_state=0, stratify=y)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05)).fit(X_tr, y_tr)
    test = ev.predict(model, X_te, y_te, "multiclass")
    validation = ev.predict(model, X_tr, y_tr, "multiclass")
    return validation, test, ev.baseline_predictions("multiclass", y_tr, y_te, test.classes)


def diabetes() -> tuple[ev.Predictions, ev.Predictions, ev.Predictions]:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import train_test_split

    X, y = load_diabetes(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0)
    model = Ridge(alpha=0.1).fit(X_tr, y_tr)
    test = ev.predict(model, X_te, y_te, "regression")
    return (ev.predict(model, X_tr, y_tr, "regression"), test,
            ev.baseline_predictions("regression", y_tr, y_te))


# --- pure functions ------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_bootstrap_metrics_equal_sklearn_at_unit_weights(task):
    if task == "binary":
        pred, threshold = binary_predictions(), 0.5
    else:
        pred, threshold = (wine() if task == "multiclass" else diabetes())[1], None
    expected = ev.metrics(pred, threshold)
    for name in ev.METRICS[task]:
        got = ev.weighted_metric(pred, name, threshold, np.ones((1, len(pred.y))))[0]
        assert got == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name


def test_bootstrap_interval_holds_the_estimate_and_is_seeded():
    pred = binary_predictions(n=1000)
    point = ev.metrics(pred, 0.5)
    for name in ("roc_auc", "pr_auc", "f1", "log_loss", "brier"):
        ci = ev.bootstrap_ci(pred, name, 0.5, resamples=500, confidence=0.95, seed=1)
        assert ci["low"] < point[name] < ci["high"], name
        assert ci == ev.bootstrap_ci(pred, name, 0.5, resamples=500, confidence=0.95, seed=1)
    wider = ev.bootstrap_ci(pred, "roc_auc", 0.5, resamples=500, confidence=0.99, seed=1)
    narrow = ev.bootstrap_ci(pred, "roc_auc", 0.5, resamples=500, confidence=0.8, seed=1)
    assert wider["low"] < narrow["low"] and narrow["high"] < wider["high"]


def test_bootstrap_of_a_sample_rescaled_matches_the_full_bootstrap():
    # evaluate.bootstrap.rows bounds the cost on big test sets: m-out-of-n, rescaled
    pred = binary_predictions(n=40_000)
    point = ev.metrics(pred, 0.5)
    for name in ("roc_auc", "pr_auc", "log_loss"):
        full = ev.bootstrap_ci(pred, name, 0.5, resamples=300, confidence=0.95, seed=1)
        part = ev.bootstrap_ci(pred, name, 0.5, resamples=300, confidence=0.95, seed=1,
                               rows=5_000)
        assert (full["rows"], full["method"]) == (40_000, "percentile")
        assert (part["rows"], part["method"]) == (5_000, "m_out_of_n")
        assert part["low"] < point[name] < part["high"], name
        width = full["high"] - full["low"]
        assert abs(part["high"] - part["low"] - width) < 0.25 * width, name
        assert abs(part["low"] - full["low"]) < 0.25 * width, name
    small = ev.bootstrap_ci(pred, "roc_auc", 0.5, resamples=300, confidence=0.95, seed=1,
                            rows=40_000)
    assert small == ev.bootstrap_ci(pred, "roc_auc", 0.5, resamples=300, confidence=0.95, seed=1)


def test_campaign_value_arithmetic_on_a_hand_made_example():
    # value = TP * success_rate * value_per_retained - (TP + FP) * cost_per_contact
    assert ev.campaign_value(10, 5, value_per_retained=100, cost_per_contact=2,
                             success_rate=0.5) == 10 * 0.5 * 100 - 15 * 2
    y = np.array([1, 1, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    # flag >= 0.75: rows 0 and 1, both churners: 2 * 0.3 * 500 - 2 * 30 = 240
    report = ev.business_report(y, scores, 0.75, BUSINESS)
    assert report["model"] == pytest.approx(240)
    assert report["contacted"] == 2 and report["expected_retained"] == pytest.approx(0.6)
    # everybody: 3 churners kept at 30% of 500, 5 contacts of 30 -> 450 - 150 = 300 > nobody (0)
    assert report["baseline"] == pytest.approx(300)
    assert report["baseline_policy"] == "contact_everybody"
    # hindsight over thresholds 0.9/0.8/0.7/0.2/0.1 -> 120/240/210/180/300: best 300 at 0.1
    assert report["best_on_test"] == pytest.approx(300)
    assert report["best_threshold_on_test"] == 0.1
    assert report["perfect"] == pytest.approx(3 * 150 - 3 * 30)
    costly = BusinessParams(value_per_retained=100, cost_per_contact=90, success_rate=0.5)
    report = ev.business_report(y, scores, 0.75, costly)
    assert (report["baseline"], report["baseline_policy"]) == (0, "contact_nobody")
    assert report["model"] == pytest.approx(2 * 50 - 2 * 90)


@pytest.mark.parametrize("objective", ["f1", "value"])
def test_threshold_maximises_the_objective_over_every_cut(objective):
    pred = binary_predictions(n=300, seed=3)
    choice = ev.choose_threshold(pred.y, pred.scores, objective, BUSINESS)

    def gain(t):
        flagged = pred.scores >= t
        if objective == "f1":
            return skm.f1_score(pred.y, flagged)
        tp, fp = (flagged & (pred.y == 1)).sum(), (flagged & (pred.y == 0)).sum()
        return ev.campaign_value(tp, fp, **BUSINESS.model_dump())

    best = max(gain(t) for t in np.unique(pred.scores))
    assert gain(choice["threshold"]) == pytest.approx(best)
    assert choice[f"validation_{objective}"] == pytest.approx(best)


def test_threshold_comes_from_validation_and_is_applied_to_test():
    """Validation and test disagree on the best cut: the report uses validation's, and its test
    metrics are those at that cut."""
    rng = np.random.default_rng(7)
    test = binary_predictions(n=500, seed=11)
    # validation: churners score high only above 0.8, so its best cut is far from test's
    y_val = (rng.random(500) < 0.3).astype(int)
    val_scores = np.where(y_val == 1, rng.uniform(0.8, 1, 500), rng.uniform(0, 0.85, 500))
    validation = ev.Predictions("binary", y_val, val_scores.round(3), (0, 1))
    baseline = ev.baseline_predictions("binary", y_val, test.y, (0, 1))
    p = params(threshold_objective="f1")
    scores, _ = ev.report(test, baseline, validation, p, {1: "Yes", 0: "No"})
    on_validation = ev.choose_threshold(validation.y, validation.scores, "f1", p.business)
    on_test = ev.choose_threshold(test.y, test.scores, "f1", p.business)
    assert scores["threshold"] == pytest.approx(on_validation["threshold"])
    assert abs(on_validation["threshold"] - on_test["threshold"]) > 0.1
    assert scores["threshold_choice"]["chosen_on"] == "validation"
    at_cut = ev.metrics(test, on_validation["threshold"])
    assert scores["f1"] == pytest.approx(at_cut["f1"], abs=1e-6)
    assert scores["f1"] < on_test["validation_f1"]  # test's own best cut would flatter it


def test_gate_messages_name_the_metric_and_the_param():
    assert ev.gate_failures("roc_auc", 0.85, 0.5, 0.8, 0.2) == []
    [floor] = ev.gate_failures("roc_auc", 0.85, 0.5, 0.9, None)
    assert "roc_auc 0.8500 on test is below the floor 0.9" in floor
    assert "evaluate.gate.worst_acceptable" in floor
    [ceiling] = ev.gate_failures("rmse", 60.0, 75.0, 55.0, None)  # errors: a ceiling
    assert "rmse 60.0000 on test is above the ceiling 55.0" in ceiling
    [weak] = ev.gate_failures("roc_auc", 0.55, 0.5, None, 0.2)  # skill (0.55-0.5)/0.5 = 0.1
    assert "skill over the naive baseline 0.1000" in weak and "evaluate.gate.min_skill" in weak
    assert ev.gate_failures("rmse", 60.0, 75.0, None, 0.2) == []  # (75-60)/75 = 0.2


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_report_for_multiclass_and_regression(task):
    validation, test, baseline = wine() if task == "multiclass" else diabetes()
    primary = "roc_auc" if task == "multiclass" else "rmse"
    p = params(primary_metric=primary, gate={"worst_acceptable": None, "min_skill": 0.1})
    scores, plots = ev.report(test, baseline, validation, p, {})
    assert set(ev.METRICS[task]) <= set(scores) and set(ev.METRICS[task]) <= set(scores["baseline"])
    assert scores["threshold"] is None and "business" not in scores
    assert scores["gate"]["passed"], scores["gate"]
    ci = scores["ci"][primary]
    assert ci["low"] <= scores[primary] <= ci["high"]
    assert scores["skill"][primary] > 0.1
    assert plots["calibration"] and not plots["value_by_threshold"]
    if task == "multiclass":
        assert scores["accuracy"] > scores["baseline"]["accuracy"]
        cells = scores["confusion_matrix"]
        assert sum(sum(row.values()) for row in cells.values()) == scores["test_rows"]
        assert set(cells) == set(test.classes)
        assert len(plots["confusion"]) == scores["test_rows"] and plots["roc"]
    else:
        assert scores["rmse"] < scores["baseline"]["rmse"] and scores["r2"] > 0
        assert scores["lift"]["rmse"] > 0  # lower is better: lift = baseline - model
        assert "confusion_matrix" not in scores and not plots["roc"] and not plots["confusion"]
    drawn = sorted(name for name, rows in plots.items() if rows)  # DVC draws these files
    assert drawn == (["calibration", "confusion", "precision_recall", "roc"]
                     if task == "multiclass" else ["calibration", "predicted_vs_actual"])
    if task == "regression":
        points = plots["predicted_vs_actual"]
        assert len(points) == min(ev.SCATTER_POINTS, scores["test_rows"])
        assert {round(p["actual"], 6) for p in points} <= {round(v, 6) for v in test.y}


def test_curves_are_thinned_and_rounded():
    pred = binary_predictions(n=3000)
    plots = ev.plot_data(pred, 0.5, BUSINESS, {1: "Yes", 0: "No"}, points=50)
    assert len(plots["roc"]) <= 50 and len(plots["precision_recall"]) <= 50
    assert plots["roc"][0] == {"fpr": 0.0, "tpr": 0.0} and plots["roc"][-1]["tpr"] == 1.0
    assert {row["actual"] for row in plots["confusion"]} == {"Yes", "No"}
    assert ev.rounded({"a": [1 / 3, float("nan")], "b": np.int64(2)}) == {"a": [0.333333, None],
                                                                          "b": 2}


# --- the stage on the real demo data -----------------------------------------------------------
def test_demo_scores_beat_the_baseline(reproduced):
    scores = json.loads((reproduced / "metrics" / "scores.json").read_text())
    for name in ev.METRICS["binary"]:
        assert isinstance(scores[name], float) and isinstance(scores["baseline"][name], float)
    assert 0.75 < scores["roc_auc"] <= 1 and scores["baseline"]["roc_auc"] == 0.5
    for name in ("roc_auc", "pr_auc", "f1"):
        assert scores[name] > scores["baseline"][name], name
    for name in ("log_loss", "brier"):
        assert scores[name] < scores["baseline"][name], name
    ci = scores["ci"]["roc_auc"]
    assert ci["low"] < scores["roc_auc"] < ci["high"] and ci["resamples"] == 1000
    assert 0 < scores["threshold"] < 1 and scores["threshold_choice"]["chosen_on"] == "validation"
    cells = scores["confusion_matrix"]
    assert sum(cells.values()) == scores["test_rows"]
    assert scores["recall"] == pytest.approx(cells["tp"] / (cells["tp"] + cells["fn"]), abs=1e-6)
    business = scores["business"]
    assert business["baseline"] < business["model"] <= business["best_on_test"]
    assert business["best_on_test"] <= business["perfect"]
    assert scores["business_value"] == business["model"] and scores["gate"]["passed"]
    text = (reproduced / "metrics" / "scores.json").read_text()
    assert len(text) < 5000  # small, git-friendly, floats rounded:
    assert all(round(v, 6) == v for v in scores.values() if isinstance(v, float))


def test_demo_plots_are_small_and_declared(reproduced):
    stages = yaml.safe_load((reproduced / "dvc.yaml").read_text())["stages"]
    declared = [next(iter(entry)) for name in ("evaluate", "explain")
                for entry in stages[name]["plots"]]
    for path in declared:
        assert (reproduced / path).stat().st_size < 60_000, path
    roc = json.loads((reproduced / "metrics/plots/evaluate/roc.json").read_text())
    assert 10 < len(roc) <= 200
    assert not (reproduced / "metrics" / "figures").exists()  # vega plots, drawn by DVC
    shown = json.loads(run(["dvc", "plots", "show", "--json"], reproduced).stdout)
    assert not shown.get("errors")
    regression_only = "metrics/plots/evaluate/predicted_vs_actual.json"
    assert (reproduced / regression_only).read_text() == "[]\n"  # no rows for a binary task
    for path in declared:
        if path != regression_only:
            assert shown["data"][path][0]["content"]["data"]["values"], path


def test_only_evaluate_reads_the_test_split():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    readers = [name for name, s in stages.items()
               if any("test.parquet" in str(d) for d in s.get("deps", []))
               or "test.parquet" in s["cmd"]]
    assert readers == ["evaluate"]


@pytest.fixture(scope="module")
def copy(reproduced, tmp_path_factory) -> Path:
    """A private copy of the reproduced project (DAG up to date) to change params in."""
    dest = tmp_path_factory.mktemp("evaluate") / "project"
    shutil.copytree(reproduced, dest, symlinks=True)
    return dest


def test_rerun_gives_identical_outputs(copy, reproduced):
    for stage in ("evaluate", "explain"):
        code, err = run_stage(copy, stage)
        assert code == 0, err
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    written = ["metrics/scores.json", "metrics/explain.json"] + [
        next(iter(entry)) for stage in ("evaluate", "explain") for entry in stages[stage]["plots"]]
    for path in written:
        assert (copy / path).read_bytes() == (reproduced / path).read_bytes(), path


def test_gate_stops_the_dag_with_one_clear_line_after_writing_scores(copy):
    set_params(copy, {"evaluate.gate.worst_acceptable": 0.99})
    proc = run(["dvc", "repro", "evaluate"], copy, check=False)
    assert proc.returncode != 0
    line = next(x for x in proc.stderr.splitlines() if x.startswith("evaluate: error:"))
    assert "quality gate failed: roc_auc" in line and "below the floor 0.99" in line
    assert "evaluate.gate.worst_acceptable" in line
    scores = json.loads((copy / "metrics" / "scores.json").read_text())
    assert scores["gate"]["passed"] is False and scores["roc_auc"] < 0.99
    set_params(copy, {"evaluate.gate.worst_acceptable": 0.75})


def test_threshold_follows_the_validation_split(copy):
    """Same model and test rows, validation labels inverted: another threshold; the test metrics
    that do not depend on it stay the same (the test split plays no part in the choice)."""
    import pandas as pd

    before = json.loads((copy / "metrics" / "scores.json").read_text())
    path = copy / "data" / "processed" / "validation.parquet"
    original = path.read_bytes()
    frame = pd.read_parquet(path)
    frame["churn"] = frame["churn"].map({"Yes": "No", "No": "Yes"})
    path.unlink()  # a new file: never write through a link into the DVC cache
    frame.to_parquet(path)
    try:
        code, err = run_stage(copy, "evaluate")
    finally:
        path.unlink()
        path.write_bytes(original)
    assert code == 0, err
    after = json.loads((copy / "metrics" / "scores.json").read_text())
    assert after["threshold"] != before["threshold"]
    for name in ("roc_auc", "pr_auc", "log_loss", "brier"):
        assert after[name] == before[name], name


def test_primary_metric_must_fit_the_task(copy):
    set_params(copy, {"evaluate.primary_metric": "rmse"})
    try:
        code, err = run_stage(copy, "evaluate")
    finally:
        set_params(copy, {"evaluate.primary_metric": "roc_auc"})
    assert code == 2
    assert_one_error_line(err, "evaluate", "evaluate.primary_metric", "'rmse'", "roc_auc")
