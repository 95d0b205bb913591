"""Incremental retraining: continue the champion's fitted model on the new labelled rows only.

The champion's featurizer stays as it was fitted (the feature space must not move under a
model that continues), and its estimator continues from where it stopped:

- HistGradientBoosting: `warm_start` and `extra_iterations` more trees, fitted to the gradients
  of the new rows under the current ensemble;
- MLP: `epochs` passes of `partial_fit` over the new rows;
- linear models (logistic regression): SGD on the log loss started at the champion's weights
  (`coef_init`), `epochs` passes over the new rows at a constant step `eta0`; the result keeps
  the champion's class order and predicts through the same `predict_proba`.

Any other family has no way to continue: `continue_fit` says so in one line.

In the DAG (`train.mode: incremental`), featurize and train open the champion's bundle with
`champion` (the bundle's hash-checked load), featurize transforms with its featurizer and train
continues its estimator with `continue_estimator` on the new train features.
"""

from __future__ import annotations

import copy

import numpy as np

from lifecycle.errors import StageError

CONTINUABLE = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor",
               "MLPClassifier", "MLPRegressor", "LogisticRegression", "SGDClassifier")


def continue_fit(pipeline, X_new, y_new: np.ndarray, *, epochs: int = 5,
                 extra_iterations: int = 20, eta0: float = 0.01, seed: int = 0):
    """A copy of the fitted `pipeline` (featurizer + estimator) continued on the new rows."""
    featurizer, estimator = pipeline[:-1], pipeline[-1]
    _check_continuable(estimator)
    model = continue_estimator(estimator, featurizer.transform(X_new), y_new, epochs=epochs,
                               extra_iterations=extra_iterations, eta0=eta0, seed=seed)
    out = copy.deepcopy(pipeline)
    out.steps[-1] = (out.steps[-1][0], model)
    return out


def _check_continuable(estimator) -> None:
    name = type(estimator).__name__
    if name not in CONTINUABLE:
        raise StageError(f"train.mode incremental: {name} cannot continue from a fitted model "
                         f"(families that can: {', '.join(CONTINUABLE)})")


def continue_estimator(estimator, Z, y_new: np.ndarray, *, epochs: int = 5,
                       extra_iterations: int = 20, eta0: float = 0.01, seed: int = 0):
    """A copy of the fitted `estimator` continued on the new rows' features `Z`."""
    _check_continuable(estimator)
    name = type(estimator).__name__
    model = copy.deepcopy(estimator)
    if name.startswith("HistGradientBoosting"):
        model.set_params(warm_start=True, early_stopping=False,
                         max_iter=model.n_iter_ + extra_iterations)
        model.fit(Z, y_new)
    elif name.startswith("MLP"):
        classes = getattr(model, "classes_", None)
        for _ in range(epochs):
            model.partial_fit(Z, y_new, classes=classes) if classes is not None \
                else model.partial_fit(Z, y_new)
    else:
        model = _sgd_from(model, Z, y_new, epochs, eta0, seed)
    return model


def champion(path: str, task: str, derived: dict[str, str], model: str | None = None,
             continues: bool = True):
    """The champion's bundle at `path` (train.champion), hash-checked as serving loads it, once
    it is known it can be continued as params say: same task, a family that continues, the
    derived columns its featurizer was fitted with, and (given `model`) the family
    `train.model` names (a linear champion already continued by SGD counts as
    logistic_regression). With `continues` False (train.mode online: only its featurizer is
    reused) its model may be of any family. StageError (one line, naming train.champion)
    otherwise."""
    from lifecycle import models
    from lifecycle.packaging.runtime import load_bundle

    try:
        bundle = load_bundle(path)
        estimator = bundle.pipeline[-1]
    except (StageError, OSError) as exc:
        raise StageError(f"train.champion: {exc}") from None
    family = ("logistic_regression" if type(estimator).__name__ == "SGDClassifier"
              else models.family_name_of(estimator))
    problem = (
        f"its task is {bundle.task}, task.type says {task}" if bundle.task != task else
        f"it holds a {family} model, train.model says {model}" if model and family != model else
        f"its {type(estimator).__name__} cannot continue (families that can: "
        f"{', '.join(CONTINUABLE)})" if continues and type(estimator).__name__ not in CONTINUABLE
        else
        f"its featurizer was fitted with derived columns {bundle.inference['derived']}, "
        f"featurize.derived says {derived}" if bundle.inference["derived"] != derived else None)
    if problem:
        raise StageError(f"train.champion: {path}: cannot continue it: {problem}")
    return bundle


def continue_champion(bundle, p, X, y, X_val, y_val, task: str, metric: str):
    """The champion bundle's estimator continued on the new train features (X, y) as the
    `train` params `p` say; the report for metrics/train.json states the mode, the champion's
    version and the rows it was updated with, and its validation score before."""
    import time

    from lifecycle import models

    before = bundle.pipeline[-1]
    start = time.perf_counter()
    model = continue_estimator(before, X, y, epochs=p.incremental.epochs,
                               extra_iterations=p.incremental.extra_iterations,
                               eta0=p.incremental.eta0, seed=p.seed)
    seconds = time.perf_counter() - start
    return model, {
        "task": task, "model": p.model, "estimator": type(model).__name__, "metric": metric,
        "mode": "incremental",
        "incremental": {"champion": bundle.version, "bundle": p.champion, "rows": len(X),
                        **p.incremental.model_dump(),
                        "champion_validation": round(
                            models.score(before, X_val, y_val, task, metric), 6)},
        "train": {metric: round(models.score(model, X, y, task, metric), 6)},
        "validation": {metric: round(models.score(model, X_val, y_val, task, metric), 6)},
        "rows": {"train": len(X), "validation": len(X_val)},
        "features": X.shape[1],
        "fit_seconds": round(seconds, 3),  # for the log line; the stage keeps it out of metrics
    }


def _sgd_from(linear, Z, y, epochs: int, eta0: float, seed: int):
    """SGD on the log loss, `epochs` passes, started at a fitted linear classifier's weights."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import SGDClassifier

    sgd = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=eta0, alpha=1e-4,
                        max_iter=epochs, tol=None, random_state=seed,
                        class_weight=getattr(linear, "class_weight", None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few passes, on purpose
        sgd.fit(Z, y, coef_init=linear.coef_, intercept_init=linear.intercept_)
    return sgd
