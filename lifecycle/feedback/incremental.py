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
    name = type(estimator).__name__
    if name not in CONTINUABLE:
        raise StageError(f"train.mode incremental: {name} cannot continue from a fitted model "
                         f"(families that can: {', '.join(CONTINUABLE)})")
    Z = featurizer.transform(X_new)
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
    out = copy.deepcopy(pipeline)
    out.steps[-1] = (out.steps[-1][0], model)
    return out


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
