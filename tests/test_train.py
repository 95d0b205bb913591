"""train: every family fits the demo feature table, saves with skops and converts to ONNX with
the same predictions; class weights; the in-stage search; clear errors for bad params; and two
runs that give the same bytes."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from lifecycle import features, io, metrics, models, params, persistence
from lifecycle.contract import load_contract
from lifecycle.errors import StageError
from tests.helpers_stages import assert_one_error_line, run_stage_process, stage_dir

# every family in the registry; those skl2onnx converts on its own (the others: test_package)
ALL_FAMILIES = list(models.FAMILIES)
FAMILIES = [n for n, f in models.FAMILIES.items() if f.onnx and f.onnx.converter == "skl2onnx"]
TREES = {n for n in FAMILIES if "tree" in models.FAMILIES[n].traits}
FAST = {"random_forest": {"n_estimators": 20}, "gradient_boosting": {"max_iter": 30},
        "mlp": {"max_iter": 60}, "lightgbm": {"n_estimators": 30},
        "xgboost": {"n_estimators": 30}}  # small settings: the point is that each family works


def train_params(featurized, family: str, **changes):
    p = params.load("train", featurized / "params.yaml", model=models.TrainParams)
    small = p.with_hyperparameters(FAST.get(family, {}), family)
    return p.model_copy(update={"model": family, family: small, **changes})


def tables(featurized, scale: str | None = None):
    """(featurizer, X, y, X_val, y_val): the stage's own, or refitted with another scale."""
    root = featurized
    if scale is None:
        featurizer = persistence.load(root / "models" / "featurizer.skops")
        X, y = features.split_target(io.read_parquet(root / "data" / "features" / "train.parquet"))
        X_val, y_val = features.split_target(
            io.read_parquet(root / "data" / "features" / "validation.parquet"))
        return featurizer, X, y, X_val, y_val
    contract, frames, targets = demo_frames(featurized)
    p = params.load("featurize", root / "params.yaml").model_copy(update={"scale": scale})
    featurizer, _ = features.fit_featurizer(frames["train"], targets["train"], contract, p,
                                            "binary")
    return (featurizer, featurizer.transform(frames["train"]), targets["train"],
            featurizer.transform(frames["validation"]), targets["validation"])


def demo_frames(featurized):
    contract = load_contract(featurized / "contract.yaml")
    derived = params.load("featurize", featurized / "params.yaml").derived
    splits = {n: io.read_parquet(featurized / "data" / "processed" / f"{n}.parquet")
              for n in ("train", "validation")}
    return (contract, {n: features.model_frame(s, contract, derived) for n, s in splits.items()},
            {n: features.target_vector(s, contract, "binary") for n, s in splits.items()})


def onnx_probabilities(pipeline, frame: pd.DataFrame) -> np.ndarray:
    """The featurizer + model Pipeline in ONNX as the bundle has it: one [None, 1] input per
    model-frame column (float32 numbers, strings), probabilities without ZipMap."""
    import onnxruntime as rt
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    numeric = {c: pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns}
    types = [(c, FloatTensorType([None, 1]) if numeric[c] else StringTensorType([None, 1]))
             for c in frame.columns]
    model = pipeline.steps[-1][1]
    onx = to_onnx(pipeline, initial_types=types, options={id(model): {"zipmap": False}},
                  target_opset={"": 18, "ai.onnx.ml": 3})
    session = rt.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {c: frame[[c]].to_numpy(np.float32 if numeric[c] else object) for c in frame.columns}
    return session.run(None, feeds)[1]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_saves_and_converts_to_onnx(featurized, family):
    from sklearn.pipeline import Pipeline

    # Plain skl2onnx with float32 inputs, as a user would try it. Trees then take unscaled
    # numbers: float32 scaling moves values across split thresholds (up to 0.45 in probability
    # for gradient boosting here). The bundle's ONNX keeps numbers in double (packaging).
    featurizer, X, y, X_val, y_val = tables(featurized, "none" if family in TREES else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small MLP stops before it converges
        model, report = models.train("binary", train_params(featurized, family), X, y, X_val,
                                     y_val)
    assert report["model"] == family and report["metric"] == "roc_auc"
    assert report["validation"]["roc_auc"] > 0.8  # the naive baseline scores 0.5
    assert report["hyperparameters"] == train_params(featurized, family).hyperparameters()

    reloaded = persistence.loads(persistence.dumps(model))  # (a forest sums its trees in thread
    np.testing.assert_allclose(reloaded.predict_proba(X_val),  # order: last-bit differences)
                               model.predict_proba(X_val), rtol=1e-12, atol=1e-15)

    _, frames, _ = demo_frames(featurized)
    pipeline = Pipeline([("features", featurizer), ("model", model)])
    gap = np.abs(onnx_probabilities(pipeline, frames["validation"])
                 - pipeline.predict_proba(frames["validation"])).max(axis=1)
    assert np.quantile(gap, 0.99) < 1e-4 and gap.max() < 0.05, (gap.max(), (gap > 1e-4).sum())


@pytest.mark.parametrize("family", ["logistic_regression", "mlp"])
def test_balanced_class_weights_lift_the_minority_class(featurized, family):
    _, X, y, X_val, y_val = tables(featurized)
    share = {}
    for weight in ("none", "balanced"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = train_params(featurized, family, class_weight=weight)
            model, report = models.train("binary", p, X, y, X_val, y_val)
        share[weight] = model.predict(X_val).mean()
        assert report["class_weight"] == weight
    assert y.mean() < 0.3 and share["balanced"] > share["none"] + 0.1, share


def test_mlp_gets_balanced_sample_weights():
    y = np.array([0, 0, 0, 1])
    p = params.load("train", model=models.TrainParams).model_copy(update={"model": "mlp"})
    weights = models.sample_weights("binary", p, y)
    assert weights[y == 0].sum() == pytest.approx(weights[y == 1].sum())
    assert models.sample_weights("binary", p.model_copy(update={"model": "random_forest"}),
                                 y) is None  # the others take class_weight


@pytest.mark.parametrize("method", ["cv", "validation"])
def test_search_picks_the_best_point_of_the_grid(featurized, method):
    _, X, y, X_val, y_val = tables(featurized)
    p = params.load("train", featurized / "params.yaml", model=models.TrainParams)
    search = p.search.model_copy(update={"method": method, "folds": 3})
    grid = p.search.grid.model_copy(update={
        "decision_tree": p.search.grid.decision_tree.model_copy(
            update={"max_depth": [1, 5], "min_samples_leaf": [20]})})
    p = p.model_copy(update={"model": "decision_tree",
                             "search": search.model_copy(update={"grid": grid})})
    model, report = models.train("binary", p, X, y, X_val, y_val)
    found = report["search"]
    assert found["method"] == method and found["candidates"] == 2
    scores = {r["params"]["max_depth"]: r["score"] for r in found["results"]}
    assert found["best_params"] == {"max_depth": 5, "min_samples_leaf": 20}
    assert scores[5] > scores[1] and found["best_score"] == scores[5]
    assert report["hyperparameters"]["max_depth"] == model.max_depth == 5
    if method == "validation":
        assert report["validation"]["roc_auc"] == found["best_score"]


def test_random_search_samples_n_iter_points_with_the_seed(featurized):
    _, X, y, X_val, y_val = tables(featurized)
    p = params.load("train", featurized / "params.yaml", model=models.TrainParams)
    p = p.model_copy(update={"search": p.search.model_copy(
        update={"method": "validation", "n_iter": 2})})
    runs = [models.search("binary", p, X, y, X_val, y_val)[0] for _ in range(2)]
    assert runs[0]["candidates"] == 2 and runs[0] == runs[1]


def test_a_forest_grown_with_progress_is_the_same_forest(featurized, capsys):
    _, X, y, _, _ = tables(featurized)
    p = train_params(featurized, "random_forest")
    one = models.fit(models.build_model("binary", p, rows=len(X)), X, y, progress=False)
    p = p.model_copy(update={"random_forest": p.with_hyperparameters({"n_jobs": 1})})
    grown = models.fit(models.build_model("binary", p, rows=len(X)), X, y, progress=True)
    assert "trees" in capsys.readouterr().err  # the progress bar, on stderr
    assert not grown.warm_start and grown.n_estimators == one.n_estimators
    for a, b in zip(one.estimators_, grown.estimators_, strict=True):
        assert np.array_equal(a.tree_.threshold, b.tree_.threshold)
        assert np.array_equal(a.tree_.value, b.tree_.value)


def test_forest_max_samples_is_a_cap_on_rows():
    p = params.load("train", model=models.TrainParams).model_copy(update={"model": "random_forest"})
    cap = p.random_forest.max_samples
    assert models.build_model("binary", p, rows=cap // 10).max_samples is None  # all rows
    assert models.build_model("binary", p, rows=cap * 5).max_samples == cap


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_every_family_fits_other_tasks(task):
    from sklearn.datasets import make_classification, make_regression

    if task == "multiclass":
        X, y = make_classification(300, 8, n_informative=5, n_classes=3, random_state=0)
        y = np.array(["low", "mid", "high"], dtype=object)[y]
    else:
        X, y = make_regression(300, 8, noise=10, random_state=0)
    X = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)])
    base = params.load("train", model=models.TrainParams)
    for family in [n for n in ALL_FAMILIES if task in models.FAMILIES[n].tasks]:
        p = base.model_copy(update={"model": family,
                                    family: base.with_hyperparameters(FAST.get(family, {}),
                                                                      family)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model, report = models.train(task, p, X[:200], y[:200], X[200:], y[200:])
        metric = metrics.DEFAULT[task]
        assert report["metric"] == metric and np.isfinite(report["validation"][metric])
        assert report["class_weight"] is (None if task == "regression" else "balanced")
        reloaded = persistence.loads(persistence.dumps(model), models.trusted_prefixes(family))
        if task == "regression":
            np.testing.assert_allclose(reloaded.predict(X), model.predict(X), rtol=1e-12)
        else:
            np.testing.assert_array_equal(reloaded.predict(X), model.predict(X))
        if task == "regression":
            assert report["validation"]["rmse"] < np.std(y[200:])  # beats the mean


def test_xgboost_multiclass_is_refused_with_one_line_naming_family_and_task():
    """XGBoost's classifier takes classes 0..k-1 only, and multiclass targets here are the
    data's own labels: train refuses before fitting, in one line (onnxmltools itself converts
    a multi:softprob XGBClassifier)."""
    p = params.load("train", model=models.TrainParams).model_copy(update={"model": "xgboost"})
    with pytest.raises(StageError) as refused:
        models.build_model("multiclass", p)
    message = str(refused.value)
    assert "\n" not in message and "xgboost" in message and "multiclass" in message
    assert "lightgbm" in message   # and what to choose instead


@pytest.mark.parametrize(("stage", "override", "words"), [
    ("train", {"train.model": "xgbost"}, ["train.model", "xgbost"]),
    ("train", {"evaluate.primary_metric": "rmse"}, ["evaluate.primary_metric", "rmse", "binary"]),
    ("train", {"train.search.metric": "r2", "train.search.method": "validation"},
     ["train.search.metric", "r2"]),
    ("train", {"train.search.grid.random_forest": {"max_depht": [3]}},
     ["train.search.grid.random_forest.max_depht"]),
    ("train", {"train.search.method": "grid"}, ["train.search.method"]),
    ("train", {"train.random_forest.max_samples": 2.5}, ["train.random_forest.max_samples"]),
    ("featurize", {"featurize.scale": "minmax"}, ["featurize.scale", "minmax"]),
    ("featurize", {"featurize.select_k_best": 0}, ["featurize.select_k_best"]),
])
def test_bad_params_stop_the_stage_with_one_line(tmp_path, stage, override, words):
    where = stage_dir(tmp_path, override)
    proc = run_stage_process(where, stage)
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, stage, *words)


def test_two_runs_give_identical_bytes(featurized, tmp_path):
    """Featurize and train, twice, each as its own process: the same files to the byte
    (metrics too, but for train's fit time)."""
    outputs = ["models/featurizer.skops", "models/model.skops", "data/features/train.parquet",
               "data/features/validation.parquet", "metrics/features.json",
               "metrics/plots/featurize/importance.json"]
    digests = []
    for run in ("a", "b"):
        where = stage_dir(tmp_path / run)
        shutil.copytree(featurized / "data" / "processed", where / "data" / "processed")
        for stage in ("featurize", "train"):
            proc = run_stage_process(where, stage)
            assert proc.returncode == 0, proc.stderr
        train = json.loads((where / "metrics" / "train.json").read_text())
        assert "fit_seconds" not in train  # wall time would make identical runs differ
        digests.append(({f: io.sha256_file(where / f) for f in outputs}, train))
    assert digests[0] == digests[1]
    assert digests[0][0]["models/model.skops"] == io.sha256_file(
        featurized / "models" / "model.skops")  # and the same as in this process


def test_adding_a_family_touches_two_files(tmp_path):
    """README: a family is its registry entry in lifecycle/models.py and its params section.
    Add ExtraTrees that way to a copy of the project; train, the search grid, explain's traits
    and the ONNX export pick it up, and git sees exactly two files changed."""
    from tests.conftest import make_workspace, run

    ws = make_workspace(tmp_path / "project")
    models_py = ws / "lifecycle" / "models.py"
    text = models_py.read_text()
    entry = '''    Family("extra_trees", ExtraTreesParams,
           ("sklearn.ensemble.ExtraTreesClassifier", "sklearn.ensemble.ExtraTreesRegressor"),
           _plain, frozenset({"tree", "class_weight"})),
)}'''
    params_model = '''class ExtraTreesParams(Section):
    n_estimators: PositiveInt
    min_samples_leaf: PositiveInt


FAMILIES: dict[str, Family] = {'''
    text = text.replace("FAMILIES: dict[str, Family] = {", params_model, 1)
    text = text.replace("\n)}\n", "\n" + entry + "\n", 1)
    models_py.write_text(text)
    params_yaml = ws / "params.yaml"
    params_yaml.write_text(params_yaml.read_text().replace(
        "\n  xgboost:", "\n  extra_trees: {n_estimators: 30, min_samples_leaf: 5}\n  xgboost:", 1))
    changed = run(["git", "status", "--porcelain"], ws).stdout.split("\n")
    assert sorted(line[3:] for line in changed if line) == ["lifecycle/models.py", "params.yaml"]
    script = """
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from lifecycle import models, params
from lifecycle.packaging.onnx_export import export
p = params.load("train", model=models.TrainParams).model_copy(update={"model": "extra_trees"})
X, y = make_classification(300, 4, random_state=0)
X = pd.DataFrame(X, columns=list("abcd"))
model, report = models.train("binary", p, X[:200], y[:200], X[200:], y[200:], "roc_auc")
scale = ColumnTransformer([("num", StandardScaler(), list("abcd"))])
pipe = Pipeline([("features", scale), ("model", model)]).fit(X, y)
family = models.FAMILIES["extra_trees"]
onnx, _ = export(pipe, [{"name": c, "kind": "number"} for c in "abcd"], "t", 18, family.onnx)
print(report["estimator"], report["validation"]["roc_auc"] > 0.8, onnx is not None,
      ",".join(sorted(family.traits)), "extra_trees" in p.search.grid.model_fields)
"""
    out = run(["python", "-c", script], ws).stdout.split()
    assert out == ["ExtraTreesClassifier", "True", "True", "class_weight,tree", "True"]
