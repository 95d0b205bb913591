"""Typed params, one model per params.yaml section, checked when a stage starts.

A wrong key or value is one line naming the key (`split.test_size: ...`) and a non-zero exit.
Unknown keys are errors too: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lifecycle.errors import ParamsError

PARAMS_FILE = Path("params.yaml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- seed_demo_source ----------------------------------------------------------------------
class SeedDemoSourceParams(Section):
    rows: int = Field(gt=0)
    snapshot_date: dt.date
    seed: int


# --- collect -------------------------------------------------------------------------------
class SqlSource(Section):
    kind: Literal["sql"]
    url: str  # a SQLAlchemy URL; ${ENV_VAR} is expanded so passwords stay out of git
    query: str


class FilesSource(Section):
    kind: Literal["files"]
    path: str  # a path or a glob: data/external/*.csv
    format: Literal["auto", "csv", "parquet", "jsonl"] = "auto"


class HttpSource(Section):
    kind: Literal["http"]
    url: str
    records_key: str | None = None  # where the list of records is in each JSON page
    pagination: Literal["none", "page", "next"] = "none"
    page_param: str = "page"
    page_size_param: str = "page_size"
    page_size: int = Field(default=1000, gt=0)
    next_key: str = "next"  # pagination: next -> the JSON key holding the next page's URL
    timeout_seconds: float = Field(default=30, gt=0)
    max_pages: int = Field(default=100_000, gt=0)


class CollectParams(Section):
    source: Annotated[SqlSource | FilesSource | HttpSource, Field(discriminator="kind")]


# --- validate ------------------------------------------------------------------------------
class QualityThresholds(Section):
    accuracy: float = Field(ge=0, le=1)
    completeness: float = Field(ge=0, le=1)
    consistency: float = Field(ge=0, le=1)
    timeliness: float = Field(ge=0, le=1)


class ValidateParams(Section):
    as_of: dt.datetime | Literal["now"]  # freshness is judged against this moment
    min_scores: QualityThresholds
    max_quarantine_share: float = Field(ge=0, le=1)


# --- preprocess ----------------------------------------------------------------------------
class PreprocessParams(Section):
    drop_duplicate_records: bool
    drop_missing_target: bool


# --- split ---------------------------------------------------------------------------------
class SplitParams(Section):
    method: Literal["stratified", "random", "time"]
    validation_size: float = Field(gt=0, lt=1)
    test_size: float = Field(gt=0, lt=1)
    seed: int

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitParams:
        if self.validation_size + self.test_size >= 1:
            raise ValueError("validation_size + test_size must be below 1")
        return self


# --- task (read by every stage whose work depends on the kind of target) ----------------------
class TaskParams(Section):
    type: Literal["binary", "multiclass", "regression"]


# --- featurize -----------------------------------------------------------------------------
class FeaturizeParams(Section):
    derived: dict[str, str]  # new column -> pandas expression over clean columns
    min_frequency: float = Field(ge=0, lt=1)
    scale: Literal["standard", "robust", "none"]
    seed: int


# --- train ---------------------------------------------------------------------------------
class LogisticRegressionParams(Section):
    C: float = Field(gt=0)
    max_iter: int = Field(gt=0)


class DecisionTreeParams(Section):
    max_depth: int | None = Field(gt=0)
    min_samples_leaf: int = Field(gt=0)


class RandomForestParams(Section):
    n_estimators: int = Field(gt=0)
    max_depth: int | None = Field(gt=0)
    min_samples_leaf: int = Field(gt=0)
    max_features: float | Literal["sqrt", "log2"]
    n_jobs: int


class GradientBoostingParams(Section):
    learning_rate: float = Field(gt=0)
    max_iter: int = Field(gt=0)
    max_leaf_nodes: int = Field(gt=1)
    l2_regularization: float = Field(ge=0)


class MlpParams(Section):
    hidden_layer_sizes: list[int]
    alpha: float = Field(ge=0)
    learning_rate_init: float = Field(gt=0)
    max_iter: int = Field(gt=0)
    early_stopping: bool


class TrainParams(Section):
    model: Literal["logistic_regression", "decision_tree", "random_forest", "gradient_boosting",
                   "mlp"]
    class_weight: Literal["balanced", "none"]
    seed: int
    logistic_regression: LogisticRegressionParams
    decision_tree: DecisionTreeParams
    random_forest: RandomForestParams
    gradient_boosting: GradientBoostingParams
    mlp: MlpParams


SECTIONS: dict[str, type[Section]] = {
    "seed_demo_source": SeedDemoSourceParams,
    "collect": CollectParams,
    "validate": ValidateParams,
    "preprocess": PreprocessParams,
    "split": SplitParams,
    "task": TaskParams,
    "featurize": FeaturizeParams,
    "train": TrainParams,
}

S = TypeVar("S", bound=Section)


def load(section: str, path: Path = PARAMS_FILE, model: type[S] | None = None) -> S:
    """Read one section of params.yaml and check it against its model."""
    model = model or SECTIONS[section]
    try:
        everything = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError as exc:
        raise ParamsError(f"{path} not found (run from the project root)") from exc
    if section not in everything:
        raise ParamsError(f"{path}: section '{section}' is missing")
    try:
        return model.model_validate(everything[section])
    except ValidationError as exc:
        raise ParamsError(_one_line(section, exc)) from exc


def _one_line(section: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join([section, *loc])
    got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(
        err["input"], dict) else ""
    more = f" [+{exc.error_count() - 1} more]" if exc.error_count() > 1 else ""
    return f"params.yaml: {key}: {err['msg']}{got}{more}"
