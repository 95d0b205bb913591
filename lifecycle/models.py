"""Model families: one registry entry each (`FAMILIES`), read by train, the search, explain,
package and the tests. An entry names the estimator classes, builds one from its params section,
says what the family is (`traits`) and how it reaches ONNX.

Adding a family is two edits: its entry (with its params model) in this file, and its section
under `train:` in params.yaml (plus a grid under `train.search.grid`, optional). Any other
scikit-learn-compatible estimator needs no entry: `train.model: lightgbm.LGBMClassifier` (an
import path) builds it with the keyword arguments in `train.estimator`.

Traits: `tree` (TreeSHAP applies), `linear` (closed-form SHAP), `boosted` (raw scores are
log-odds), `class_weight` (takes sklearn's class_weight; otherwise balanced classes become
sample weights), `incremental` (can grow with warm_start: a bar over its steps on big data).

ONNX: `Onnx("skl2onnx")` is skl2onnx's own converter; a third-party one names the onnxmltools
converter function that package registers with skl2onnx (lifecycle/packaging/onnx_export.py);
`onnx=None` means no converter: the bundle serves the skops Pipeline and says so.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from lifecycle import metrics
from lifecycle.errors import StageError
from lifecycle.params import Section, TrainMode

LONG_FIT_ROWS = 100_000  # from this many rows a single fit reports its progress too
FOREST_CHUNKS = 20       # a forest grows in this many steps when it shows progress
IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")


@dataclass(frozen=True)
class Onnx:
    """How a family reaches ONNX: skl2onnx's own converter, or an onnxmltools converter
    (`module:function`) registered with skl2onnx for the family's classes. `float32_inputs`:
    the estimator compares float32 features with its thresholds (XGBoost), so the export casts
    them to float32 right before the trees, as the estimator itself does."""

    converter: str = "skl2onnx"
    float32_inputs: bool = False


@dataclass(frozen=True)
class Build:
    """What a builder gets besides the family's hyperparameters."""

    task: str
    seed: int
    class_weight: str | None   # "balanced" | None (regression, or class_weight: none)
    rows: int | None           # train rows (a forest's max_samples cap)

    @property
    def classify(self) -> bool:
        return self.task != "regression"


@dataclass(frozen=True)
class Family:
    name: str
    params: type[Section]
    classes: tuple[str, str]   # import paths: (classifier, regressor)
    build: Callable[[type, dict, Build], Any]
    traits: frozenset[str] = frozenset()
    onnx: Onnx | None = Onnx()
    trusted: tuple[str, ...] = ()  # type-name prefixes model.skops may hold beyond sklearn's
    tasks: tuple[str, ...] = ("binary", "multiclass", "regression")

    def estimator_class(self, task: str) -> type:
        return import_class(self.classes[task == "regression"])


def import_class(path: str) -> type:
    """The class an import path names (`package.module.Class`); StageError if there is none."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise StageError(f"cannot import {path}: {exc} (is its package installed?)") from exc


PositiveInt = Annotated[int, Field(gt=0)]
Share = Annotated[float, Field(gt=0, le=1)]


def _weight(b: Build) -> dict:
    return {"class_weight": b.class_weight} if b.classify else {}


# --- the families ------------------------------------------------------------------------------
class LogisticRegressionParams(Section):
    C: float = Field(gt=0)
    max_iter: PositiveInt


def _logistic(cls, hp: dict, b: Build):
    if b.classify:
        return cls(random_state=b.seed, **_weight(b), **hp)
    return cls(alpha=1 / hp["C"], max_iter=hp["max_iter"], random_state=b.seed)  # Ridge


class DecisionTreeParams(Section):
    max_depth: PositiveInt | None
    min_samples_leaf: PositiveInt


class RandomForestParams(Section):
    n_estimators: PositiveInt
    max_depth: PositiveInt | None
    min_samples_leaf: PositiveInt
    max_features: Share | Literal["sqrt", "log2"]
    max_samples: float | None  # rows drawn per tree: a count (> 1) or a share (<= 1)
    n_jobs: int

    @field_validator("max_samples")
    @classmethod
    def _count_or_share(cls, value: float | None) -> float | None:
        if value is not None and (value <= 0 or (value > 1 and value != int(value))):
            raise ValueError("a share in (0, 1] or a whole number of rows above 1")
        return int(value) if value is not None and value > 1 else value


def _forest(cls, hp: dict, b: Build):
    cap = hp["max_samples"]
    if isinstance(cap, int) and b.rows is not None:  # a count: at most the rows there are
        hp = {**hp, "max_samples": cap if cap < b.rows else None}
    return cls(random_state=b.seed, **_weight(b), **hp)


class GradientBoostingParams(Section):
    learning_rate: float = Field(gt=0)
    max_iter: PositiveInt
    max_leaf_nodes: int = Field(gt=1)
    min_samples_leaf: PositiveInt
    l2_regularization: float = Field(ge=0)
    early_stopping: bool | Literal["auto"]


class MlpParams(Section):
    hidden_layer_sizes: list[PositiveInt] = Field(min_length=1)
    alpha: float = Field(ge=0)
    learning_rate_init: float = Field(gt=0)
    max_iter: PositiveInt
    early_stopping: bool


def _mlp(cls, hp: dict, b: Build):
    return cls(random_state=b.seed, **{**hp, "hidden_layer_sizes": tuple(hp["hidden_layer_sizes"])})


class LightGbmParams(Section):
    n_estimators: PositiveInt
    learning_rate: float = Field(gt=0)
    num_leaves: int = Field(gt=1)
    min_child_samples: PositiveInt
    reg_lambda: float = Field(ge=0)
    n_jobs: PositiveInt  # threads; with deterministic=True the model does not depend on it


def _lightgbm(cls, hp: dict, b: Build):
    return cls(random_state=b.seed, deterministic=True, force_row_wise=True, verbose=-1,
               **_weight(b), **hp)


class XgBoostParams(Section):
    n_estimators: PositiveInt
    learning_rate: float = Field(gt=0)
    max_depth: PositiveInt
    min_child_weight: float = Field(ge=0)
    reg_lambda: float = Field(ge=0)
    n_jobs: PositiveInt


def _xgboost(cls, hp: dict, b: Build):
    return cls(random_state=b.seed, tree_method="hist", **hp)


def _plain(cls, hp: dict, b: Build):
    return cls(random_state=b.seed, **_weight(b), **hp)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("logistic_regression", LogisticRegressionParams,
           ("sklearn.linear_model.LogisticRegression", "sklearn.linear_model.Ridge"),
           _logistic, frozenset({"linear", "class_weight"})),
    Family("decision_tree", DecisionTreeParams,
           ("sklearn.tree.DecisionTreeClassifier", "sklearn.tree.DecisionTreeRegressor"),
           _plain, frozenset({"tree", "class_weight"})),
    Family("random_forest", RandomForestParams,
           ("sklearn.ensemble.RandomForestClassifier", "sklearn.ensemble.RandomForestRegressor"),
           _forest, frozenset({"tree", "class_weight", "incremental"})),
    Family("gradient_boosting", GradientBoostingParams,
           ("sklearn.ensemble.HistGradientBoostingClassifier",
            "sklearn.ensemble.HistGradientBoostingRegressor"),
           _plain, frozenset({"tree", "boosted", "class_weight"})),
    Family("mlp", MlpParams,
           ("sklearn.neural_network.MLPClassifier", "sklearn.neural_network.MLPRegressor"),
           _mlp, frozenset()),
    Family("lightgbm", LightGbmParams, ("lightgbm.LGBMClassifier", "lightgbm.LGBMRegressor"),
           _lightgbm, frozenset({"tree", "boosted", "class_weight"}),
           Onnx("onnxmltools.convert.lightgbm.operator_converters.LightGbm:convert_lightgbm"),
           trusted=("lightgbm.", "collections.OrderedDict")),
    # XGBoost's classifier wants classes 0..k-1: binary (0/1) and regression here
    Family("xgboost", XgBoostParams, ("xgboost.XGBClassifier", "xgboost.XGBRegressor"),
           _xgboost, frozenset({"tree", "boosted"}),
           Onnx("onnxmltools.convert.xgboost.operator_converters.XGBoost:convert_xgboost",
                float32_inputs=True),
           trusted=("xgboost.",), tasks=("binary", "regression")),
)}
# Estimators given by import path whose package has an onnxmltools converter (by package).
THIRD_PARTY = {family.classes[0].split(".")[0]: family for family in FAMILIES.values()
               if family.onnx is not None and family.onnx.converter != "skl2onnx"}


def family_of(model: str) -> Family:
    """The family `train.model` names: a registry entry, or one made up for an import path
    (its traits guessed from the class: trees by name, linear by a `coef_`-style name; its ONNX
    converter skl2onnx's own, or onnxmltools' for LightGBM/XGBoost classes)."""
    if model in FAMILIES:
        return FAMILIES[model]
    cls = import_class(model)
    package = model.split(".")[0]
    known = THIRD_PARTY.get(package)
    name = cls.__name__
    traits = set(known.traits if known else ())
    if re.search(r"Tree|Forest|Boost|GBM", name):
        traits.add("tree")
    if cls.__module__.startswith("sklearn.linear_model"):
        traits.add("linear")
    import inspect

    if "class_weight" in inspect.signature(cls).parameters:
        traits.add("class_weight")
    return Family(model, EstimatorKwargs, (model, model), _by_path, frozenset(traits),
                  known.onnx if known else Onnx(),
                  trusted=(f"{package}.", *(known.trusted if known else ())))


def family_name_of(estimator) -> str:
    """The registered family whose class `estimator` is, or the estimator's import path."""
    path = f"{type(estimator).__module__}.{type(estimator).__name__}"
    for family in FAMILIES.values():
        if any(path.startswith(c.rpartition(".")[0]) and c.endswith(f".{type(estimator).__name__}")
               for c in family.classes):
            return family.name
    return path


class EstimatorKwargs(Section):
    """train.estimator: keyword arguments for an estimator given by import path."""

    model_config = Section.model_config | {"extra": "allow"}


def _by_path(cls, hp: dict, b: Build):
    import inspect

    accepted = inspect.signature(cls).parameters
    extra = {"random_state": b.seed} if "random_state" in accepted and "random_state" not in hp \
        else {}
    if b.classify and "class_weight" in accepted and "class_weight" not in hp:
        extra["class_weight"] = b.class_weight
    return cls(**extra, **hp)


def trusted_prefixes(estimator_path: str | None = None) -> tuple[str, ...]:
    """Type-name prefixes that model.skops may hold beyond sklearn/numpy/scipy: those of every
    registered family, and the package of an estimator given by import path."""
    out = {p for f in FAMILIES.values() for p in f.trusted}
    if estimator_path and estimator_path not in FAMILIES and IMPORT_PATH.match(estimator_path):
        out.add(f"{estimator_path.split('.')[0]}.")
    return tuple(sorted(out))


# --- train's params: built from the registry ------------------------------------------------
def _grid_of(family: type[Section]) -> type[Section]:
    """A search grid for one family: any of its hyperparameters -> a non-empty list of values,
    each checked like the hyperparameter itself (errors name train.search.grid.<family>.<key>)."""
    fields = {}
    for key, info in family.model_fields.items():
        value = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[key] = (list[value] | None, Field(default=None, min_length=1))
    return create_model(f"{family.__name__}Grid", __base__=Section, **fields)


_GRIDS = {name: _grid_of(f.params) for name, f in FAMILIES.items()}
SearchGrid = create_model(
    "SearchGrid", __base__=Section,
    **{name: (grid, Field(default_factory=grid)) for name, grid in _GRIDS.items()})


class SearchParams(Section):
    method: Literal["none", "cv", "validation"]
    folds: int = Field(ge=2)  # cv only
    n_iter: PositiveInt | None  # null tries the whole grid; n samples n points of it (seeded)
    metric: str | None = None  # null: evaluate.primary_metric
    grid: SearchGrid


class _Train(TrainMode):
    model_config = Section.model_config   # unknown keys are errors here (TrainMode ignores them)
    model: str  # a family of FAMILIES, or an import path (package.module.Class)
    class_weight: Literal["balanced", "none"]
    seed: int
    search: SearchParams
    estimator: dict[str, Any] = Field(default_factory=dict)  # model: an import path -> kwargs

    @field_validator("model")
    @classmethod
    def _family_or_path(cls, value: str) -> str:
        if value not in FAMILIES and not IMPORT_PATH.match(value):
            raise ValueError(f"{value!r} is neither a family ({', '.join(FAMILIES)}) nor an "
                             "import path such as lightgbm.LGBMClassifier")
        return value

    @model_validator(mode="after")
    def _grid_to_search(self):
        if self.search.method != "none" and not self.search_grid():
            raise ValueError(f"search.method is '{self.search.method}' but "
                             f"search.grid.{self.model} declares no values to try")
        for family, grid in self.search.grid:
            for key, values in grid.model_dump(exclude_none=True).items():
                for value in values:  # the family's own validators too, e.g. max_samples
                    try:
                        self.with_hyperparameters({key: value}, family)
                    except ValidationError as exc:
                        raise ValueError(f"search.grid.{family}.{key}: {value!r}: "
                                         f"{exc.errors()[0]['msg']}") from None
        return self

    def with_hyperparameters(self, changes: dict, family: str | None = None) -> Section:
        """The family's hyperparameters (default: the chosen one) with `changes`, checked."""
        family = family or self.model
        if family not in FAMILIES:
            return EstimatorKwargs.model_validate({**self.estimator, **changes})
        return FAMILIES[family].params.model_validate(
            {**getattr(self, family).model_dump(), **changes})

    def hyperparameters(self) -> dict:
        """The chosen family's hyperparameters as params.yaml gives them."""
        if self.model not in FAMILIES:
            return dict(self.estimator)
        return getattr(self, self.model).model_dump()

    def search_grid(self) -> dict[str, list]:
        """The chosen family's grid: hyperparameter -> values to try (only those declared)."""
        if self.model not in FAMILIES:
            return {}
        return getattr(self.search.grid, self.model).model_dump(exclude_none=True)


TrainParams = create_model("TrainParams", __base__=_Train,
                           **{name: (f.params, ...) for name, f in FAMILIES.items()})


# --- building and fitting ----------------------------------------------------------------------
def build_model(task: str, p, hyperparameters: dict | None = None, rows: int | None = None):
    """The unfitted estimator `train.model` names, with its hyperparameters (default: its
    params section, or `train.estimator` for an import path), seed and class weights."""
    family = family_of(p.model)
    if task not in family.tasks:
        others = [name for name, f in FAMILIES.items() if task in f.tasks and "tree" in f.traits]
        raise StageError(f"train.model {p.model} does not do {task} here (it does "
                         f"{', '.join(family.tasks)}); for {task} choose another family, "
                         f"e.g. {others[-1]}")
    weight = None
    if task != "regression" and p.class_weight != "none" and "class_weight" in family.traits:
        weight = p.class_weight
    hp = dict(p.hyperparameters() if hyperparameters is None else hyperparameters)
    return family.build(family.estimator_class(task), hp,
                        Build(task=task, seed=p.seed, class_weight=weight, rows=rows))


def sample_weights(task: str, p, y: np.ndarray) -> np.ndarray | None:
    """Balanced sample weights for a classifier without class_weight (the MLP, XGBoost, ...);
    None otherwise."""
    if task == "regression" or p.class_weight == "none" \
            or "class_weight" in family_of(p.model).traits:
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
    if type(model).__module__.startswith("sklearn.") and hasattr(model, "verbose"):
        model.set_params(verbose=1)
        with contextlib.redirect_stdout(sys.stderr):
            model.fit(X, y, **kwargs)
        return model.set_params(verbose=0)  # the saved model does not depend on the data size
    return model.fit(X, y, **kwargs)


def score(model, X: pd.DataFrame, y: np.ndarray, task: str, metric: str | None = None) -> float:
    """A metric of the task (default: its registry default) in its own units (RMSE positive)."""
    from sklearn.metrics import get_scorer

    m = metrics.REGISTRY[metric or metrics.DEFAULT[task]]
    return float(m.from_scorer(get_scorer(m.scorer(task))(model, X, y)))


def better(a: float, b: float, metric: str) -> bool:
    """Is score a better than score b, in the metric's direction?"""
    return a > b if metrics.REGISTRY[metric].higher_is_better else a < b


def train(task: str, p, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame,
          y_val: np.ndarray, metric: str | None = None) -> tuple[object, dict]:
    """Fit the family named in params (after the search params ask for, if any); return the
    fitted model and the report for metrics/train.json. `metric`: the one train reports and
    the search optimises (evaluate.primary_metric; `train.search.metric` overrides it)."""
    metric = p.search.metric or metric or metrics.DEFAULT[task]
    problem = metrics.check(task, metric, "train.search.metric")
    if problem:
        raise StageError(problem)
    weights = sample_weights(task, p, y)
    found, hyperparameters = None, p.hyperparameters()
    if p.search.method == "none":
        model = build_model(task, p, hyperparameters, rows=len(X))
        start = time.perf_counter()  # the fit, not the import of its sklearn module
        model = fit(model, X, y, weights)
    else:
        start = time.perf_counter()
        found, model = search(task, p, X, y, X_val, y_val, metric)
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
        "train": {metric: round(score(model, X, y, task, metric), 6)},
        "validation": {metric: round(score(model, X_val, y_val, task, metric), 6)},
        "rows": {"train": len(X), "validation": len(X_val)},
        "features": X.shape[1],
        "fit_seconds": round(seconds, 3),  # for the log line; the stage keeps it out of metrics
        "search": found,
    }
    return model, report


def search(task: str, p, X: pd.DataFrame, y: np.ndarray, X_val: pd.DataFrame,
           y_val: np.ndarray, metric: str | None = None) -> tuple[dict, object | None]:
    """Try the points of the family's grid (all, or `n_iter` sampled with the seed): by k-fold
    cross-validation on train, or fitted on train and scored on validation, by `metric`.
    Returns the report and, for `validation`, the best fitted model (cv leaves the final fit
    to the caller)."""
    from sklearn.model_selection import (
        KFold,
        ParameterGrid,
        ParameterSampler,
        StratifiedKFold,
        cross_val_score,
    )
    from tqdm import tqdm

    metric = metric or metrics.DEFAULT[task]
    s, m = p.search, metrics.REGISTRY[metric]
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
            values = cross_val_score(model, X, y, cv=folds, scoring=m.scorer(task),
                                     params=None if weights is None else {"sample_weight": weights})
            value = float(m.from_scorer(np.mean(values)))
        else:
            model = fit(model, X, y, weights)
            value = score(model, X_val, y_val, task, metric)
        results.append({"params": point, "score": round(value, 6)})
        if best is None or better(value, best, metric):
            best, best_point, best_model = value, point, model
    report = {"method": s.method, "metric": metric, "candidates": len(points),
              "folds": s.folds if s.method == "cv" else None, "best_params": best_point,
              "best_score": round(best, 6), "results": results}
    return report, best_model if s.method == "validation" else None
