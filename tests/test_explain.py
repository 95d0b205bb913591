"""explain: importance per input column, exact SHAP where the model allows (additive: base value
plus contributions is the model's output), occlusion otherwise, for every task; the demo's
explain.json with personal data masked."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lifecycle import explain as ex
from lifecycle.params import ExplainParams

P = ExplainParams(n_repeats=3, samples=4, top_features=4, shap_rows=100, seed=0)
COLUMNS = ["signal", "noise", "plan", "plan_type"]  # `plan` prefixes `plan_type` on purpose


def synthetic(task: str, n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A model frame (numbers with gaps, text categories) whose target follows `signal` and the
    premium plan; `noise` and `plan_type` carry nothing."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "signal": rng.normal(size=n),
        "noise": rng.normal(size=n),
        "plan": rng.choice(["basic", "premium", "gold"], n).astype(object),
        "plan_type": rng.choice(["a", "b"], n).astype(object),
    })
    frame.loc[::17, "noise"] = np.nan
    latent = 2.5 * frame["signal"] + 1.5 * (frame["plan"] == "premium") + rng.normal(0, .3, n)
    if task == "binary":
        return frame, (latent > 0.5).to_numpy(dtype=np.int64)
    if task == "multiclass":
        labels = np.array(["low", "mid", "high"], dtype=object)
        return frame, labels[np.digitize(latent, np.quantile(latent, [1 / 3, 2 / 3]))]
    return frame, latent.to_numpy()


def featurizer(frame: pd.DataFrame):
    """Shaped like the project's: imputed and scaled numbers, one-hot categories."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numbers = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    ct = ColumnTransformer([
        ("num", numbers, ["signal", "noise"]),
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["plan", "plan_type"]),
    ])
    return ct.set_output(transform="pandas").fit(frame)


def fitted(task: str, family: str):
    from sklearn import ensemble, linear_model, neural_network

    frame, y = synthetic(task)
    features = featurizer(frame)
    kind = "Classifier" if task != "regression" else "Regressor"
    linear = linear_model.LogisticRegression if task != "regression" else linear_model.Ridge
    model = {
        "linear": lambda: linear(),
        "forest": lambda: getattr(ensemble, f"RandomForest{kind}")(
            n_estimators=50, max_depth=5, random_state=0),
        "boosting": lambda: getattr(ensemble, f"HistGradientBoosting{kind}")(
            max_iter=20, random_state=0),
        "mlp": lambda: getattr(neural_network, f"MLP{kind}")(
            hidden_layer_sizes=(8,), learning_rate_init=0.01, max_iter=1000, random_state=0),
    }[family]()
    model.fit(features.transform(frame), y)
    return frame, y, features, model


def model_output(model, features, rows: pd.DataFrame, task: str, units: str,
                 explained: list) -> np.ndarray:
    """What SHAP values add up to, for the explained output of each row."""
    X = features.transform(rows)
    if task == "regression":
        return model.predict(X)
    index = [list(model.classes_).index(c) for c in explained]
    if units == "probability":
        return model.predict_proba(X)[np.arange(len(rows)), index]
    scores = model.decision_function(X)
    return scores if scores.ndim == 1 else scores[np.arange(len(rows)), index]


def test_outputs_are_traced_to_their_input_columns():
    frame, _ = synthetic("binary")
    groups = ex.input_groups(featurizer(frame), COLUMNS)
    # outputs: num__signal, num__noise, cat__plan_{basic,gold,premium}, cat__plan_type_{a,b}
    assert [g.tolist() for g in groups] == [[0], [1], [2, 3, 4], [5, 6]]


def test_a_featurizer_that_mixes_columns_falls_back_to_the_whole_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

    frame, y = synthetic("binary")
    frame = frame.fillna(0.0)
    mixing = FunctionTransformer(lambda X: X.assign(signal=X["signal"] + X["noise"]),
                                 feature_names_out="one-to-one")
    features = ColumnTransformer([
        ("num", mixing, ["signal", "noise"]),
        ("cat", OneHotEncoder(sparse_output=False), ["plan", "plan_type"]),
    ]).set_output(transform="pandas").fit(frame)
    transformed = features.transform(frame).to_numpy()
    groups = ex.input_groups(features, COLUMNS)
    assert groups is not None  # the names trace, but `signal` also reads `noise`:
    assert not ex.separable(features, frame, transformed, groups, seed=0)
    model = LogisticRegression().fit(features.transform(frame), y)
    result = ex.permutation_importance(features, model, frame, y, "binary", 2, seed=0)
    assert result["method"] == "pipeline" and set(result["mean"]) == set(COLUMNS)
    assert next(iter(result["mean"])) == "signal"


def test_fast_permutation_agrees_with_sklearn_over_the_pipeline():
    from sklearn.inspection import permutation_importance
    from sklearn.pipeline import Pipeline

    frame, y, features, model = fitted("binary", "linear")
    fast = ex.permutation_importance(features, model, frame, y, "binary", 20, seed=0)
    assert fast["method"] == "feature_blocks"
    slow = permutation_importance(Pipeline([("f", features), ("m", model)]), frame, y,
                                  scoring="roc_auc", n_repeats=20, random_state=0)
    for j, column in enumerate(COLUMNS):  # different shuffles: equal within their noise
        assert fast["mean"][column] == pytest.approx(slow.importances_mean[j], abs=0.01)
    assert list(fast["mean"])[:2] == ["signal", "plan"]


@pytest.mark.parametrize("task,family", [
    ("binary", "linear"), ("multiclass", "linear"), ("regression", "linear"),
    ("binary", "boosting"), ("multiclass", "forest"), ("regression", "forest"),
])
def test_shap_contributions_add_up_to_the_model_output(task, family):
    frame, y, features, model = fitted(task, family)
    ids = [f"masked:{i:04d}" for i in range(len(frame))]
    result = ex.explain(features, model, frame, y, ids, task, P, {}, shap_available=True)
    assert result["shap"]["method"] == ("linear" if family == "linear" else "tree")
    assert set(result["shap"]["mean_abs"]) == set(COLUMNS) == set(result["importance"])
    assert next(iter(result["importance"])) == "signal"
    assert next(iter(result["shap"]["mean_abs"])) == "signal"
    local = result["local"]
    assert local["method"] == f"shap_{result['shap']['method']}"
    samples = local["samples"]
    assert len(samples) == P.samples and all(s["customer"] in ids for s in samples)
    rows = frame.iloc[[ids.index(s["customer"]) for s in samples]]
    if task == "binary":
        explained = [1] * len(samples)
    else:
        explained = [s.get("prediction") for s in samples]
    expected = model_output(model, features, rows, task, local["units"], explained)
    for s, out in zip(samples, expected, strict=True):
        total = s["base_value"] + sum(f["contribution"] for f in s["top_features"])
        assert total + s["other_features"] == pytest.approx(out, abs=1e-6)
        assert s["output"] == pytest.approx(out, abs=1e-6)
        assert len(s["top_features"]) == 4
        assert {f["feature"] for f in s["top_features"]} == set(COLUMNS)
    if task == "multiclass":
        assert all(s["prediction"] in {"low", "mid", "high"} for s in samples)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_models_without_exact_shap_get_occlusion(task):
    frame, y, features, model = fitted(task, "mlp")
    ids = [f"row {i}" for i in range(len(frame))]
    result = ex.explain(features, model, frame, y, ids, task, P, {1: "Yes", 0: "No"},
                        shap_available=True)
    assert result["shap"] == {"method": None, "reason": f"no exact, fast SHAP for "
                                                        f"{type(model).__name__}"}
    assert result["local"]["method"] == "occlusion"
    assert set(result["importance"]) == set(COLUMNS)
    for s in result["local"]["samples"]:
        assert "base_value" not in s and len(s["top_features"]) == 4
        if task == "binary":
            assert 0 <= s["probability"] <= 1 and s["actual"] in {"Yes", "No"}
    strongest = [s["top_features"][0]["feature"] for s in result["local"]["samples"]]
    assert "signal" in strongest
    plots = ex.plot_data(result)
    assert [row["feature"] for row in plots["importance"]] == list(result["importance"])
    assert plots["shap"] == []  # no exact SHAP here: an empty plot, not a missing file
    assert len(plots["local"]) == sum(len(s["top_features"]) for s in result["local"]["samples"])
    assert len({row["feature"] for row in plots["local"]}) == len(plots["local"])  # one bar each


def test_tree_model_without_shap_installed_says_how_to_get_it():
    frame, y, features, model = fitted("binary", "forest")
    result = ex.explain(features, model, frame, y, list(range(len(frame))), "binary", P, {},
                        shap_available=False)
    assert result["local"]["method"] == "occlusion"
    assert "lifecycle[shap]" in result["shap"]["reason"]


def test_explanations_are_reproducible():
    frame, y, features, model = fitted("multiclass", "linear")
    ids = list(range(len(frame)))
    first = ex.explain(features, model, frame, y, ids, "multiclass", P, {}, True)
    assert first == ex.explain(features, model, frame, y, ids, "multiclass", P, {}, True)


def test_demo_explain(reproduced):
    text = (reproduced / "metrics" / "explain.json").read_text()
    result = json.loads(text)
    frame_columns = 21  # the demo's model frame: contract features + derived + indicator
    assert len(result["importance"]) == frame_columns == len(result["shap"]["mean_abs"])
    assert result["permutation"] == {"scoring": "roc_auc", "n_repeats": 3,
                                     "method": "feature_blocks",
                                     "baseline_score": result["permutation"]["baseline_score"]}
    top = list(result["importance"])[:5]
    assert "tenure" in top and "contract" in top
    assert result["shap"]["method"] == "linear" and result["local"]["method"] == "shap_linear"
    samples = result["local"]["samples"]
    assert len(samples) == 5
    split = pd.read_parquet(reproduced / "data" / "processed" / "validation.parquet")
    for s in samples:
        assert s["customer"].startswith("masked:") and 0 < s["probability"] < 1
        assert s["actual"] in {"Yes", "No"}
        assert 1 / (1 + np.exp(-s["output"])) == pytest.approx(s["probability"], abs=1e-5)
    assert "@" not in text  # no email
    assert not any(str(i) in text for i in split["customer_id"])
    plot = json.loads((reproduced / "metrics/plots/explain/importance.json").read_text())
    assert [row["feature"] for row in plot] == list(result["importance"])
    shap = json.loads((reproduced / "metrics/plots/explain/shap.json").read_text())
    assert [row["feature"] for row in shap] == list(result["shap"]["mean_abs"])
    local = json.loads((reproduced / "metrics/plots/explain/local.json").read_text())
    assert len(local) == 5 * len(samples[0]["top_features"])
    assert all(row["feature"].startswith("masked:") for row in local)


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_lightgbm_gets_tree_shap_and_lime(task):
    """A family from outside sklearn, through its registry traits: TreeSHAP that adds up to the
    model's raw score (log-odds), and LIME over the input columns that finds the signal."""
    from lifecycle import models

    frame, y = synthetic(task)
    features = featurizer(frame)
    cls = models.FAMILIES["lightgbm"].estimator_class(task)
    model = cls(n_estimators=40, random_state=0, verbose=-1, deterministic=True,
                force_row_wise=True).fit(features.transform(frame), y)
    ids = [f"masked:{i:04d}" for i in range(len(frame))]
    p = P.model_copy(update={"lime": True, "lime_samples": 500})
    result = ex.explain(features, model, frame, y, ids, task, p, {}, True,
                        models.FAMILIES["lightgbm"].traits)
    assert result["shap"]["method"] == "tree" and next(iter(result["shap"]["mean_abs"])) == "signal"
    samples = result["local"]["samples"]
    X = features.transform(frame.iloc[[ids.index(s["customer"]) for s in samples]])
    raw = model.predict(X, raw_score=True)
    for s, out in zip(samples, raw, strict=True):
        assert s["output"] == pytest.approx(out, abs=1e-6)   # log-odds for binary
        lime = s["lime"]
        assert len(lime["top_features"]) == 4
        assert {f["feature"] for f in lime["top_features"]} == set(COLUMNS)
    assert result["lime"]["method"] == "lime_tabular"
    # the signal column carries the largest LIME weight for most explained rows
    first = [s["lime"]["top_features"][0]["feature"] for s in samples]
    assert first.count("signal") >= len(samples) // 2 + 1, first
    again = ex.explain(features, model, frame, y, ids, task, p, {}, True,
                       models.FAMILIES["lightgbm"].traits)
    assert again["local"] == result["local"]   # seeded: the same explanations
