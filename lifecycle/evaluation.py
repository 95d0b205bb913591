"""Judging a fitted model on held-out rows: the metrics of its task, a naive baseline, bootstrap
confidence intervals, the decision threshold (chosen on validation, applied to test), the value
of acting on the predictions, the quality gate, and small plot data.

Pure functions over arrays; `stages/evaluate.py` does the reading and writing. sklearn computes
every point estimate; the bootstrap re-implements the same metrics over resampling weights so that
1,000 resamples cost a few matrix products instead of 1,000 sklearn calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lifecycle import metrics as metrics_registry

METRICS = {task: metrics_registry.for_task(task)
           for task in ("binary", "multiclass", "regression")}
LOWER_IS_BETTER = metrics_registry.lower_is_better()
DIGITS = 6  # metrics JSON stays small and diff-friendly
SCATTER_POINTS = 2000  # regression: test rows (seeded) behind the predicted-vs-actual plot


@dataclass(frozen=True)
class Predictions:
    """What a model said about some rows, in the form each task's metrics need.

    binary: `y` 0/1, `scores` the positive class's probability; multiclass: `y` labels, `scores`
    an (n, k) probability matrix over `classes`; regression: `y` and `scores` numbers."""

    task: str
    y: np.ndarray
    scores: np.ndarray
    classes: tuple = ()


def predict(pipeline, frame, y: np.ndarray, task: str) -> Predictions:
    """Run a fitted featurizer + model pipeline over a model frame."""
    if task == "regression":
        return Predictions(task, np.asarray(y, dtype=float), pipeline.predict(frame).astype(float))
    proba = pipeline.predict_proba(frame)
    classes = tuple(pipeline.classes_.tolist())
    if task == "binary":
        return Predictions(task, np.asarray(y), proba[:, classes.index(1)], classes)
    return Predictions(task, np.asarray(y), proba, classes)


def baseline_predictions(task: str, y_train: np.ndarray, y: np.ndarray,
                         classes: tuple = ()) -> Predictions:
    """The naive model: class priors (DummyClassifier "prior": predicts the most frequent class)
    or the train mean (DummyRegressor), fitted on the train target only."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    n = len(y)
    dummy_x = np.zeros((len(y_train), 1))
    if task == "regression":
        dummy = DummyRegressor(strategy="mean").fit(dummy_x, y_train)
        return Predictions(task, np.asarray(y, dtype=float), dummy.predict(np.zeros((n, 1))))
    dummy = DummyClassifier(strategy="prior").fit(dummy_x, y_train)
    proba = dummy.predict_proba(np.zeros((n, 1)))
    known = list(dummy.classes_)
    classes = classes or tuple(known)
    # align to the model's classes (a class absent from train gets probability 0)
    aligned = np.column_stack([proba[:, known.index(c)] if c in known else np.zeros(n)
                               for c in classes])
    if task == "binary":
        return Predictions(task, np.asarray(y), aligned[:, classes.index(1)], classes)
    return Predictions(task, np.asarray(y), aligned, classes)


def decisions(pred: Predictions, threshold: float | None) -> np.ndarray:
    """Hard predictions: binary flags `score >= threshold` (0.5 turns the baseline's class prior
    into its most frequent class), multiclass the likeliest class."""
    if pred.task == "binary":
        return (pred.scores >= threshold).astype(int)
    return np.asarray(pred.classes, dtype=object)[np.argmax(pred.scores, axis=1)]


def metrics(pred: Predictions, threshold: float | None = None) -> dict[str, float]:
    """Every metric of the task, computed by sklearn."""
    from sklearn import metrics as m

    y, s = pred.y, pred.scores
    if pred.task == "regression":
        return {"mae": m.mean_absolute_error(y, s), "rmse": m.root_mean_squared_error(y, s),
                "r2": m.r2_score(y, s)}
    if len(np.unique(y)) < 2:
        from lifecycle.errors import StageError

        raise StageError("the scored split holds a single class: ranking metrics are undefined")
    hard = decisions(pred, threshold)
    if pred.task == "binary":
        return {
            "accuracy": m.accuracy_score(y, hard),
            "precision": m.precision_score(y, hard, zero_division=0),
            "recall": m.recall_score(y, hard, zero_division=0),
            "f1": m.f1_score(y, hard, zero_division=0),
            "roc_auc": m.roc_auc_score(y, s),
            "pr_auc": m.average_precision_score(y, s),
            "log_loss": m.log_loss(y, s, labels=[0, 1]),
            "brier": m.brier_score_loss(y, s),
        }
    labels = list(pred.classes)
    macro = {"labels": labels, "average": "macro", "zero_division": 0}
    return {
        "accuracy": m.accuracy_score(y, hard),
        "precision": m.precision_score(y, hard, **macro),
        "recall": m.recall_score(y, hard, **macro),
        "f1": m.f1_score(y, hard, **macro),
        "roc_auc": m.roc_auc_score(y, s, multi_class="ovr", average="macro", labels=labels),
        "log_loss": m.log_loss(y, s, labels=labels),
    }


def skill(metric: str, model: float, baseline: float) -> float | None:
    """How much of the way from the baseline to a perfect score the model goes (1 = perfect,
    0 = no better than the baseline, < 0 = worse); None when the baseline is already perfect."""
    perfect = 0.0 if metric in LOWER_IS_BETTER else 1.0
    gap = perfect - baseline
    return None if gap == 0 else (model - baseline) / gap


def lift(metric: str, model: float, baseline: float) -> float:
    """Improvement over the baseline in the metric's own units (positive = better)."""
    return baseline - model if metric in LOWER_IS_BETTER else model - baseline


# --- bootstrap -------------------------------------------------------------------------------
def bootstrap_ci(pred: Predictions, metric: str, threshold: float | None, resamples: int,
                 confidence: float, seed: int, rows: int | None = None) -> dict[str, float]:
    """Percentile bootstrap interval of one metric: rows resampled with replacement `resamples`
    times (seeded). Each resample is a row-weight vector, so a block of resamples is scored at
    once; blocks bound the memory on large test sets.

    Above `rows` rows the cost is bounded by an m-out-of-n bootstrap: a seeded sample of `rows`
    rows is resampled, and the spread of its resampled metric around the sample's own value is
    rescaled by sqrt(rows / n) around the full value (the metrics here converge at the sqrt(n)
    rate). At or below `rows` rows it is the plain percentile interval."""
    from lifecycle.sampling import sample_index

    full, n = pred, len(pred.y)
    rng = np.random.default_rng(seed)
    keep = sample_index(n, rows, seed + 1)  # a stream apart from the resamples'
    if keep is not None:
        pred = Predictions(pred.task, pred.y[keep], pred.scores[keep], pred.classes)
        n = len(keep)
    block = max(1, min(resamples, 4_000_000 // max(n, 1)))
    values = []
    for start in range(0, resamples, block):
        b = min(block, resamples - start)
        draws = rng.integers(0, n, size=(b, n))
        weights = np.bincount((draws + n * np.arange(b)[:, None]).ravel(),
                              minlength=b * n).reshape(b, n).astype(float)
        values.append(weighted_metric(pred, metric, threshold, weights))
    values = np.concatenate(values)
    values = values[np.isfinite(values)]  # a resample with one class has no AUC
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail]) if len(values) else (np.nan, np.nan)
    if keep is not None:
        ones = np.ones((1, n))
        at_sample = weighted_metric(pred, metric, threshold, ones)[0]
        at_full = weighted_metric(full, metric, threshold, np.ones((1, len(full.y))))[0]
        scale = np.sqrt(n / len(full.y))
        low, high = at_full + (low - at_sample) * scale, at_full + (high - at_sample) * scale
    return {"low": float(low), "high": float(high), "confidence": confidence,
            "resamples": resamples, "rows": n,
            "method": "percentile" if keep is None else "m_out_of_n"}


def weighted_metric(pred: Predictions, metric: str, threshold: float | None,
                    weights: np.ndarray) -> np.ndarray:
    """`metric` under each row of `weights` (shape (b, n): how often each row was drawn).
    With all weights 1 it equals the sklearn value (checked by the tests)."""
    y, s, w = pred.y, pred.scores, weights
    total = w.sum(axis=1)
    if pred.task == "regression":
        err = s - y
        if metric == "mae":
            return w @ np.abs(err) / total
        if metric == "rmse":
            return np.sqrt(w @ err**2 / total)
        mean = w @ y / total
        return 1 - (w @ err**2) / (w @ y**2 - total * mean**2)
    if metric == "log_loss":
        return w @ _row_log_loss(pred) / total
    if metric == "brier":
        return w @ (s - y) ** 2 / total
    if pred.task == "binary":
        truth = (y == 1).astype(float)
        if metric == "roc_auc":
            return _weighted_auc(truth, s, w)
        if metric == "pr_auc":
            return _weighted_average_precision(truth, s, w)
        flag = decisions(pred, threshold).astype(float)
        truth, flag = truth[:, None], flag[:, None]
    else:
        onehot = np.asarray(pred.classes, dtype=object)[None, :]
        if metric == "roc_auc":
            return np.mean([_weighted_auc((y == c).astype(float), s[:, k], w)
                            for k, c in enumerate(pred.classes)], axis=0)
        truth = (y[:, None] == onehot).astype(float)
        flag = (decisions(pred, threshold)[:, None] == onehot).astype(float)
    if metric == "accuracy":
        return w @ (truth == flag).all(axis=1) / total
    tp, fp, fn = w @ (truth * flag), w @ ((1 - truth) * flag), w @ (truth * (1 - flag))
    with np.errstate(divide="ignore", invalid="ignore"):
        per_class = {"precision": tp / (tp + fp), "recall": tp / (tp + fn),
                     "f1": 2 * tp / (2 * tp + fp + fn)}[metric]
    return np.nan_to_num(per_class, nan=0.0).mean(axis=1)  # zero_division=0, macro average


def _row_log_loss(pred: Predictions) -> np.ndarray:
    eps = np.finfo(float).eps
    if pred.task == "binary":
        p = np.clip(pred.scores, eps, 1 - eps)
        return -np.where(pred.y == 1, np.log(p), np.log1p(-p))
    proba = pred.scores / pred.scores.sum(axis=1, keepdims=True)
    index = {c: i for i, c in enumerate(pred.classes)}
    column = np.array([index[v] for v in pred.y.tolist()])
    return -np.log(np.clip(proba[np.arange(len(pred.y)), column], eps, 1 - eps))


def _grouped(truth: np.ndarray, scores: np.ndarray, w: np.ndarray, descending: bool):
    """Weighted positives and negatives per distinct score (ties share a group)."""
    order = np.argsort(-scores if descending else scores, kind="stable")
    ranked = scores[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    wo = w[:, order]
    pos = np.add.reduceat(wo * truth[order], starts, axis=1)
    neg = np.add.reduceat(wo * (1 - truth[order]), starts, axis=1)
    return pos, neg


def _weighted_auc(truth: np.ndarray, scores: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC: P(score of a positive > score of a negative), ties counting half."""
    pos, neg = _grouped(truth, scores, w, descending=False)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(divide="ignore", invalid="ignore"):
        return (pos * (below + neg / 2)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def _weighted_average_precision(truth: np.ndarray, scores: np.ndarray,
                                w: np.ndarray) -> np.ndarray:
    """sklearn's average precision: sum over thresholds of (recall step) x precision."""
    pos, neg = _grouped(truth, scores, w, descending=True)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(tp / (tp + fp))
        return (pos / tp[:, -1:] * precision).sum(axis=1)


# --- decision threshold and business value ---------------------------------------------------
def flag_counts(y: np.ndarray, scores: np.ndarray):
    """For each distinct score t (descending): true and false positives when flagging every row
    with score >= t."""
    truth = (np.asarray(y) == 1).astype(float)
    pos, neg = _grouped(truth, np.asarray(scores, dtype=float), np.ones((1, len(truth))),
                        descending=True)
    thresholds = np.unique(scores)[::-1]
    return thresholds, np.cumsum(pos[0]), np.cumsum(neg[0])


def campaign_value(tp, fp, value_per_retained: float, cost_per_contact: float,
                   success_rate: float):
    """Net value of contacting the flagged customers: each contacted would-be churner is kept
    with `success_rate`, every contact costs `cost_per_contact`."""
    return tp * success_rate * value_per_retained - (tp + fp) * cost_per_contact


def choose_threshold(y: np.ndarray, scores: np.ndarray, objective: str, business) -> dict:
    """The score cut-off that maximises `objective` (f1 | value) on these rows (validation).
    Ties go to the highest threshold: fewer flags for the same result."""
    thresholds, tp, fp = flag_counts(y, scores)
    positives = tp[-1]
    if objective == "f1":
        gain = 2 * tp / (tp + fp + positives)
    else:
        gain = campaign_value(tp, fp, **business.model_dump())
    best = int(np.argmax(gain))
    return {"threshold": float(thresholds[best]), "objective": objective,
            "chosen_on": "validation", f"validation_{objective}": float(gain[best])}


def business_report(y: np.ndarray, scores: np.ndarray, threshold: float, business) -> dict:
    """Campaign value on these rows (test): the model at its threshold, the better of contacting
    nobody or everybody, the model's best threshold in hindsight, and a perfect model."""
    b = business.model_dump()
    flagged = scores >= threshold
    truth = np.asarray(y) == 1
    tp, fp = int((flagged & truth).sum()), int((flagged & ~truth).sum())
    everybody = campaign_value(truth.sum(), (~truth).sum(), **b)
    thresholds, tps, fps = flag_counts(y, scores)
    values = campaign_value(tps, fps, **b)
    best = int(np.argmax(values))
    hindsight = values[best] > 0  # else contacting nobody is the best there is
    return {
        "model": float(campaign_value(tp, fp, **b)),
        "contacted": tp + fp,
        "expected_retained": tp * b["success_rate"],
        "baseline": float(max(0.0, everybody)),
        "baseline_policy": "contact_everybody" if everybody > 0 else "contact_nobody",
        "best_on_test": float(values[best]) if hindsight else 0.0,
        "best_threshold_on_test": float(thresholds[best]) if hindsight else None,
        "perfect": float(campaign_value(truth.sum(), 0, **b)),
    }


# --- quality gate ----------------------------------------------------------------------------
def gate_failures(metric: str, model: float, baseline: float, worst_acceptable: float | None,
                  min_skill: float | None) -> list[str]:
    """Why the model is not good enough to ship, one short reason each (empty: it is)."""
    problems = []
    if worst_acceptable is not None:
        lower = metric in LOWER_IS_BETTER
        if (model > worst_acceptable) if lower else (model < worst_acceptable):
            side = "above the ceiling" if lower else "below the floor"
            problems.append(f"{metric} {model:.4f} on test is {side} {worst_acceptable} "
                            "(evaluate.gate.worst_acceptable)")
    if min_skill is not None:
        gained = skill(metric, model, baseline)
        if gained is None or gained < min_skill:
            shown = "undefined" if gained is None else f"{gained:.4f}"
            problems.append(f"{metric} skill over the naive baseline {shown} ({model:.4f} vs "
                            f"{baseline:.4f}) is below evaluate.gate.min_skill {min_skill}")
    return problems


# --- confusion matrix and plot data ------------------------------------------------------------
def confusion(pred: Predictions, threshold: float | None, names: dict) -> dict:
    """Binary: tn/fp/fn/tp counts. Multiclass: actual -> predicted -> count."""
    from sklearn.metrics import confusion_matrix

    labels = [0, 1] if pred.task == "binary" else list(pred.classes)
    counts = confusion_matrix(pred.y, decisions(pred, threshold), labels=labels)
    if pred.task == "binary":
        (tn, fp), (fn, tp) = counts.tolist()
        return {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    return {str(names.get(a, a)): {str(names.get(p, p)): int(counts[i, j])
                                   for j, p in enumerate(labels)}
            for i, a in enumerate(labels)}


def thin(rows: list[dict], points: int) -> list[dict]:
    """At most `points` rows, evenly spread along a curve, first and last kept."""
    if len(rows) <= points:
        return rows
    keep = np.unique(np.linspace(0, len(rows) - 1, points).round().astype(int))
    return [rows[i] for i in keep]


def plot_data(pred: Predictions, threshold: float | None, business, names: dict,
              points: int) -> dict[str, list[dict]]:
    """The rows behind each DVC plot; a plot that does not fit the task gets no rows (one file
    set for every task keeps dvc.yaml's plot declarations fixed)."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    data = {"roc": [], "precision_recall": [], "confusion": [], "calibration": [],
            "value_by_threshold": [], "predicted_vs_actual": []}
    y, s = pred.y, pred.scores
    data["calibration"] = calibration_rows(pred)
    if pred.task == "regression":  # a seeded sample of points keeps the file small
        shown = np.sort(np.random.default_rng(0).permutation(len(y))[:SCATTER_POINTS])
        data["predicted_vs_actual"] = [{"predicted": r(s[i]), "actual": r(y[i])}
                                       for i in shown]
        return data
    if pred.task == "binary":
        truth, score = (y == 1).astype(int), s
    else:  # micro-average one-vs-rest: every (row, class) pair is one binary decision
        truth = (y[:, None] == np.asarray(pred.classes, dtype=object)[None, :]).astype(int).ravel()
        score = s.ravel()
    fpr, tpr, _ = roc_curve(truth, score)
    data["roc"] = thin([{"fpr": r(a), "tpr": r(b)} for a, b in zip(fpr, tpr, strict=True)],
                       points)
    precision, recall, _ = precision_recall_curve(truth, score)
    data["precision_recall"] = thin(
        [{"recall": r(a), "precision": r(b)} for a, b in zip(recall, precision, strict=True)],
        points)
    hard = decisions(pred, threshold)
    data["confusion"] = [{"actual": str(names.get(a, a)), "predicted": str(names.get(p, p))}
                         for a, p in zip(y.tolist(), hard.tolist(), strict=True)]
    if pred.task == "binary":
        grid = np.linspace(0, 1, min(points, 101))
        positives = np.sort(s[y == 1])
        negatives = np.sort(s[y != 1])
        tp = len(positives) - np.searchsorted(positives, grid, side="left")
        fp = len(negatives) - np.searchsorted(negatives, grid, side="left")
        values = campaign_value(tp, fp, **business.model_dump())
        data["value_by_threshold"] = [{"threshold": r(t), "value": r(v)}
                                      for t, v in zip(grid, values, strict=True)]
    return data


def calibration_rows(pred: Predictions, bins: int = 10) -> list[dict]:
    """Mean predicted vs observed per bin: the positive-class probability (binary), the
    top class's probability vs how often it is right (multiclass), predicted vs actual value
    over equal-count bins (regression)."""
    if pred.task == "binary":
        predicted, observed = pred.scores, (pred.y == 1).astype(float)
        edges = np.linspace(0, 1, bins + 1)
    elif pred.task == "multiclass":
        predicted = pred.scores.max(axis=1)
        observed = (decisions(pred, None) == pred.y).astype(float)
        edges = np.linspace(0, 1, bins + 1)
    else:
        predicted, observed = pred.scores, pred.y
        edges = np.unique(np.quantile(predicted, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in np.unique(which):
        inside = which == b
        rows.append({"predicted": r(predicted[inside].mean()),
                     "observed": r(observed[inside].mean()), "rows": int(inside.sum())})
    return rows


def display_names(task: str, positive: str | None, allowed: list[str] | None) -> dict:
    """How target values are shown: binary 1/0 become the contract's class names."""
    if task != "binary":
        return {}
    others = [a for a in (allowed or []) if a != positive]
    negative = others[0] if len(others) == 1 else f"not {positive}"
    return {1: positive, 0: negative}


# --- output ------------------------------------------------------------------------------------
def r(value: float) -> float:
    return round(float(value), DIGITS)


def rounded(obj):
    """Round every float in a JSON-able structure (NaN/inf become None: JSON has neither)."""
    if isinstance(obj, dict):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return r(obj) if math.isfinite(obj) else None
    return obj


def report(test: Predictions, baseline: Predictions, validation: Predictions, p,
           names: dict) -> tuple[dict, dict[str, list[dict]]]:
    """scores.json (the test metrics at the validation-chosen threshold, the baseline, the
    primary metric's interval, lift and skill, confusion, business value, gate verdict) and the
    plot data. `p` is the evaluate params section."""
    binary = test.task == "binary"
    choice = (choose_threshold(validation.y, validation.scores, p.threshold_objective,
                               p.business) if binary else None)
    threshold = choice["threshold"] if binary else None
    model = metrics(test, threshold)
    base = metrics(baseline, 0.5 if binary else None)
    primary = p.primary_metric
    scores = {"task": test.task, "test_rows": len(test.y), **model, "primary_metric": primary,
              "threshold": threshold}
    if binary:
        business = business_report(test.y, test.scores, threshold, p.business)
        scores["business_value"] = business["model"]
    scores["ci"] = {primary: bootstrap_ci(test, primary, threshold, **p.bootstrap.model_dump())}
    scores["baseline"] = {"model": "DummyRegressor(mean)" if test.task == "regression"
                          else "DummyClassifier(prior)", **base}
    scores["lift"] = {primary: lift(primary, model[primary], base[primary])}
    scores["skill"] = {primary: skill(primary, model[primary], base[primary])}
    if choice:
        scores["threshold_choice"] = choice
    if test.task != "regression":
        scores["confusion_matrix"] = confusion(test, threshold, names)
    if binary:
        scores["business"] = business
    failures = gate_failures(primary, model[primary], base[primary], p.gate.worst_acceptable,
                             p.gate.min_skill)
    scores["gate"] = {"passed": not failures, "failures": failures}
    plots = plot_data(test, threshold, p.business, names, p.curve_points)
    return rounded(scores), plots
