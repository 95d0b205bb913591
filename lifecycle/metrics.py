"""The metrics registry: every metric the template reports, per task, with its direction and the
scikit-learn scorer that computes it on a fitted model (train's search, explain's permutation
importance). `evaluate` computes the same metrics on held-out predictions (lifecycle/evaluation.py)
and the report sorts and gates by these directions.

Adding a metric: one entry here (and, for evaluate to report it, its computation in
`evaluation.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass

from lifecycle.errors import ParamsError


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    scorers: dict[str, str]  # task -> sklearn scorer name (sklearn's scorers: higher is better)

    def scorer(self, task: str) -> str:
        return self.scorers[task]

    def from_scorer(self, value: float) -> float:
        """The metric in its own units from the scorer's value (sklearn negates losses)."""
        return value if self.higher_is_better else -value


_BINARY, _MULTI = "binary", "multiclass"
REGISTRY: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", True, {_BINARY: "accuracy", _MULTI: "accuracy"}),
    Metric("precision", True, {_BINARY: "precision", _MULTI: "precision_macro"}),
    Metric("recall", True, {_BINARY: "recall", _MULTI: "recall_macro"}),
    Metric("f1", True, {_BINARY: "f1", _MULTI: "f1_macro"}),
    Metric("roc_auc", True, {_BINARY: "roc_auc", _MULTI: "roc_auc_ovr"}),
    Metric("pr_auc", True, {_BINARY: "average_precision"}),
    Metric("log_loss", False, {_BINARY: "neg_log_loss", _MULTI: "neg_log_loss"}),
    Metric("brier", False, {_BINARY: "neg_brier_score"}),
    Metric("mae", False, {"regression": "neg_mean_absolute_error"}),
    Metric("rmse", False, {"regression": "neg_root_mean_squared_error"}),
    Metric("r2", True, {"regression": "r2"}),
)}
# The metric a new project starts with, per task (`make new` writes it to params.yaml).
DEFAULT = {"binary": "roc_auc", "multiclass": "roc_auc", "regression": "rmse"}


def for_task(task: str) -> tuple[str, ...]:
    """The metric names that apply to a task, in registry order."""
    return tuple(name for name, m in REGISTRY.items() if task in m.scorers)


def lower_is_better() -> frozenset[str]:
    return frozenset(name for name, m in REGISTRY.items() if not m.higher_is_better)


def require(task: str, name: str, key: str = "evaluate.primary_metric") -> str:
    """`name` if it is a metric of the task, else ParamsError: one line naming the key. train
    checks `evaluate.primary_metric` first, so a regression with `roc_auc` stops before
    anything is fitted."""
    problem = check(task, name, key)
    if problem:
        raise ParamsError(problem)
    return name


def check(task: str, name: str, key: str) -> str | None:
    """None when `name` is a metric of `task`; else one line naming the params key."""
    if name in REGISTRY and task in REGISTRY[name].scorers:
        return None
    return (f"params.yaml: {key}: {name!r} is not a {task} metric "
            f"(choose one of {', '.join(for_task(task))})")
