"""Model families, each built from its own params section; the fit that shows progress; the
optional in-stage search; and the task's primary metric."""

from __future__ import annotations

import contextlib
import sys
import time
import warnings

import numpy as np
import pandas as pd

from lifecycle.params import TrainParams

# The one number train reports and search maximises, per task (evaluate reports the rest).
PRIMARY_METRIC = {"binary": "roc_auc", "multiclass": "roc_auc_ovr", "regression": "rmse"}
_SCORER = {"roc_auc": "roc_auc", "roc_auc_ovr": "roc_auc_ovr",
           "rmse": "neg_root_mean_squared_error"}
LONG_FIT_ROWS = 100_000  # from this many rows a single fit reports its progress too
FOREST_CHUNKS = 20       # a forest grows in this many steps when it shows progress


def build_model(task: str, p: TrainParams, hyperparameters: dict | None = None,
                rows: int | None = None):
    """The unfitted estimator named by `train.model`, with its hyperparameters (default: the
    family's section of params), seed and class weights. `rows` (the train size) resolves a
    random forest's `max_samples` cap."""
    classify = task != "regression"
    hp = dict(hyperparameters or p.hyperparameters())
    weight = {}
    if classify:  # the MLP has none: it gets sample weights at fit (see sample_weights)
        weight = {"class_weight": None if p.class_weight == "none" else p.class_weight}
    family = p.model
    if family == "logistic_regression":
        if classify:
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(random_state=p.seed, **weight, **hp)
        from sklearn.linear_model import Ridge

        return Ridge(alpha=1 / hp["C"], max_iter=hp["max_iter"], random_state=p.seed)
    if family == "decision_tree":
        from sklearn import tree

        cls = tree.DecisionTreeClassifier if classify else tree.DecisionTreeRegressor
        return cls(random_state=p.seed, **weight, **hp)
    if family == "random_forest":
        from sklearn import ensemble

        cap = hp["max_samples"]
        if isinstance(cap, int) and rows is not None:  # a count: at most the rows there are
            hp["max_samples"] = cap if cap < rows else None
        cls = ensemble.RandomForestClassifier if classify else ensemble.RandomForestRegressor
        return cls(random_state=p.seed, **weight, **hp)
    if family == "gradient_boosting":
        from sklearn import ensemble

        cls = (ensemble.HistGradientBoostingClassifier if classify
               else ensemble.HistGradientBoostingRegressor)
        return cls(random_state=p.seed, **weight, **hp)
    from sklearn import neural_network

    cls = neural_network.MLPClassifier if classify else neural_network.MLPRegressor
    hp["hidden_layer_sizes"] = tuple(hp["hidden_layer_sizes"])
    return cls(random_state=p.seed, **hp)


def sample_weights(task: str, p: TrainParams, y: np.ndarray) -> np.ndarray | None:
    """Balanced sample weights for the MLP, which has no class_weight; None otherwise."""
    if task == "regression" or p.class_weight == "none" or p.model != "mlp":
        return None
    from sklearn.utils.class_weight import compute_sample_weight

    return compute_sample_weight("balanced", y)


def fit(model, X: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray | None = None,
        progress: bool | None = None):
    """Fit, showing progress on stderr when the data is large (`progress` None: from
    LONG_FIT_ROWS rows): a bar over a forest's trees (grown in chunks with warm_start: the
    same trees as one fit), the estimator's own per-iteration log for boosting and the MLP."""
    kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
    if not (len(X) >= LONG_FIT_ROWS if progress is None else progress):
        from threadpoolctl import threadpool_limits

        # Small data gains nothing from BLAS/OpenMP threads, and on a busy machine they
        # thrash: on 4k rows a logistic regression took 1.2 s with 2 threads (0.1 s with 1),
        # gradient boosting 48 s (5 s). One thread also gives the same bits on any machine
        # (boosting's parallel sums round differently with another thread count).
        with threadpool_limits(limits=1):
            return model.fit(X, y, **kwargs)
    name = type(model).__name__
    if name.startswith("RandomForest"):
        from tqdm import tqdm

        total = model.n_estimators
        steps = sorted({max(1, round(total * (i + 1) / FOREST_CHUNKS))
                        for i in range(FOREST_CHUNKS)})
        model.set_params(warm_start=True)
        with (tqdm(total=total, desc=f"{name} trees", file=sys.stderr, mininterval=2) as bar,
              warnings.catch_warnings()):
            # balanced class weights and warm_start are fine together on the same rows
            warnings.filterwarnings("ignore", "class_weight presets", UserWarning)
            for n in steps:
                model.set_params(n_estimators=n).fit(X, y, **kwargs)
                bar.update(n - bar.n)
        return model.set_params(warm_start=False)
    if hasattr(model, "verbose"):
        model.set_params(verbose=1)
        with contextlib.redirect_stdout(sys.stderr):
            model.fit(X, y, **kwargs)
        return model.set_params(verbose=0)  # the saved model does not depend on the data size
    return model.fit(X, y, **kwargs)


def score(model, X: pd.DataFrame, y: np.ndarray, task: str) -> float:
    """The task's primary metric (RMSE as a positive number)."""
    from sklearn.metrics import get_scorer

    value = get_scorer(_SCORER[PRIMARY_METRIC[task]])(model, X, y)
    return float(-value if PRIMARY_METRIC[task] == "rmse" else value)


def better(a: float, b: float, task: str) -> bool:
    """Is score a better than score b (RMSE: lower is better)?"""
    return a < b if PRIMARY_METRIC[task] == "rmse" else a > b


def train(task: str, p: TrainParams, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame,
          y_val: np.ndarray) -> tuple[object, dict]:
    """Fit the family named in params (after the search params ask for, if any); return the
    fitted model and the report for metrics/train.json."""
    metric = PRIMARY_METRIC[task]
    weights = sample_weights(task, p, y)
    found, hyperparameters = None, p.hyperparameters()
    if p.search.method == "none":
        model = build_model(task, p, hyperparameters, rows=len(X))
        start = time.perf_counter()  # the fit, not the import of its sklearn module
        model = fit(model, X, y, weights)
    else:
        start = time.perf_counter()
        found, model = search(task, p, X, y, X_val, y_val)
        hyperparameters = p.with_hyperparameters(found["best_params"]).model_dump()
        if model is None:
            model = fit(build_model(task, p, hyperparameters, rows=len(X)), X, y, weights)
    seconds = time.perf_counter() - start
    report = {
        "task": task,
        "model": p.model,
        "estimator": type(model).__name__,
        "hyperparameters": hyperparameters,
        "class_weight": p.class_weight if task != "regression" else None,
        "metric": metric,
        "train": {metric: round(score(model, X, y, task), 6)},
        "validation": {metric: round(score(model, X_val, y_val, task), 6)},
        "rows": {"train": len(X), "validation": len(X_val)},
        "features": X.shape[1],
        "fit_seconds": round(seconds, 3),  # for the log line; the stage keeps it out of metrics
        "search": found,
    }
    return model, report


def search(task: str, p: TrainParams, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame,
           y_val: np.ndarray) -> tuple[dict, object | None]:
    """Try the points of the family's grid (all, or `n_iter` sampled with the seed): by k-fold
    cross-validation on train, or fitted on train and scored on validation. Returns the report
    and, for `validation`, the best fitted model (cv leaves the final fit to the caller)."""
    from sklearn.model_selection import (
        KFold,
        ParameterGrid,
        ParameterSampler,
        StratifiedKFold,
        cross_val_score,
    )
    from tqdm import tqdm

    s, metric = p.search, PRIMARY_METRIC[task]
    grid = p.search_grid()
    points = (list(ParameterGrid(grid)) if s.n_iter is None
              else list(ParameterSampler(grid, min(s.n_iter, len(ParameterGrid(grid))),
                                         random_state=p.seed)))
    weights = sample_weights(task, p, y)
    folds = (KFold if task == "regression" else StratifiedKFold)(
        n_splits=s.folds, shuffle=True, random_state=p.seed)
    results, best, best_model = [], None, None
    for point in tqdm(points, desc=f"search {p.model} ({s.method})", file=sys.stderr,
                      unit="point", mininterval=1):
        model = build_model(task, p, p.with_hyperparameters(point).model_dump(), rows=len(X))
        if s.method == "cv":
            values = cross_val_score(model, X, y, cv=folds, scoring=_SCORER[metric],
                                     params=None if weights is None else {"sample_weight": weights})
            value = float(np.mean(-values if metric == "rmse" else values))
        else:
            model = fit(model, X, y, weights)
            value = score(model, X_val, y_val, task)
        results.append({"params": point, "score": round(value, 6)})
        if best is None or better(value, best, task):
            best, best_point, best_model = value, point, model
    report = {"method": s.method, "metric": metric, "candidates": len(points),
              "folds": s.folds if s.method == "cv" else None, "best_params": best_point,
              "best_score": round(best, 6), "results": results}
    return report, best_model if s.method == "validation" else None

