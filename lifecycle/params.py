"""Typed params, one model per params.yaml section, checked when a stage starts.

A wrong key or value is one line naming the key (`split.test_size: ...`) and a non-zero exit.
Unknown keys are errors too: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lifecycle.errors import ParamsError

PARAMS_FILE = Path("params.yaml")


class Section(BaseModel):
    # defer_build: a model builds its validator on first use, so a stage pays only for the
    # sections it reads (building all of them at import cost every stage ~0.2 s of CPU)
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


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
    path: str  # a path or a glob: data/external/*.csv (every file with the same columns)
    format: Literal["auto", "csv", "parquet", "jsonl"] = "auto"
    encoding: str = "utf-8"  # of CSV / JSON Lines files; a line that does not decode is rejected
    delimiter: str = Field(default=",", min_length=1, max_length=1)  # CSV only

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {value!r}") from exc
        return value


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


class StreamSource(Section):
    """A Redis stream; each event's `field` holds one record as JSON (README "Events")."""

    kind: Literal["stream"]
    url: str  # redis://[:${VAR}@]host:port/db; ${VAR} is read from the environment
    stream: str = Field(min_length=1)  # the stream's key
    field: str = "data"
    # The range read: events after `after` (exclusive) up to `until` (inclusive). "last":
    # after the range the previous manifest recorded (the stream's start on a first run);
    # "+": up to the newest event when collect starts. The manifest records the range read.
    after: str = Field(default="last", pattern=r"^(\d+(-\d+)?|last)$")
    until: str = Field(default="+", pattern=r"^(\d+(-\d+)?|\+)$")
    max_events: int = Field(default=1_000_000, gt=0)  # a bigger range is an error
    max_event_bytes: int = Field(default=65_536, gt=0)  # larger events are rejected

    @field_validator("after", "until", mode="before")
    @classmethod
    def _id_as_text(cls, value):
        """`after: 0` in YAML is a number; an event id is text."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ProductionSource(Section):
    """Labelled answers of the inference registry as training rows (lifecycle/feedback)."""

    export: str = "data/registry/predictions.parquet"  # `make registry-export` writes it
    until: dt.datetime | None = None  # answers up to this moment (the retrain run pins it)
    window_days: float | None = Field(default=None, gt=0)  # and no older than this; null: all
    judge_rows: int = Field(default=800, gt=0)  # the newest labelled answers: the gate's window,
    #                                             never trained on


class CollectParams(Section):
    source: Annotated[SqlSource | FilesSource | HttpSource | StreamSource,
                      Field(discriminator="kind")]
    train_on: Literal["original", "production", "both"] = "original"  # production: the registry
    production: ProductionSource = ProductionSource()
    max_rejected_share: float = Field(ge=0, le=1)  # text files: stop above this share of bad lines


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
    min_rows: int = Field(ge=1)  # every split must hold at least this many rows

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

    @field_validator("derived")
    @classmethod
    def _plain_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
        if bad:
            raise ValueError(f"derived column names must be letters, digits and _: {bad}")
        return value
    min_frequency: float = Field(ge=0, lt=1)
    scale: Literal["standard", "robust", "none"]
    select_k_best: int | None = Field(gt=0)  # null keeps every feature
    importance_rows: int = Field(gt=0)  # train rows sampled to estimate mutual information
    seed: int


# --- train: its params models live with the model families (lifecycle/models.py), so that a
# family is one registry entry and its params section; load it with
# params.load("train", model=models.TrainParams). The keys below are the part featurize reads
# too (`params.load("train", model=TrainMode)`): whether to continue a champion, and which.
class IncrementalParams(Section):
    epochs: int = Field(gt=0)  # MLP partial_fit / linear SGD: passes over the new rows
    extra_iterations: int = Field(gt=0)  # HistGradientBoosting: trees added to the champion's
    eta0: float = Field(gt=0)  # linear SGD: its constant step


class TrainMode(Section):
    # featurize reads only these keys of the train section; TrainParams forbids unknown ones
    model_config = Section.model_config | {"extra": "ignore"}

    mode: Literal["full", "incremental", "online"] = "full"
    champion: str | None = None  # incremental, online: the champion's bundle directory
    incremental: IncrementalParams = IncrementalParams(epochs=5, extra_iterations=20, eta0=0.01)
    online: str | None = None  # online: the shadow learner's checkpoint (lifecycle/feedback)

    @model_validator(mode="after")
    def _champion_to_continue(self):
        if self.mode != "full" and not self.champion:
            raise ValueError(f"train.mode is {self.mode} but train.champion names no bundle")
        if self.mode == "online" and not self.online:
            raise ValueError("train.mode is online but train.online names no checkpoint")
        return self


# --- evaluate ------------------------------------------------------------------------------
class BusinessParams(Section):
    value_per_retained: float = Field(ge=0)  # what keeping one would-be churner is worth
    cost_per_contact: float = Field(ge=0)
    success_rate: float = Field(ge=0, le=1)  # share of contacted would-be churners kept


class BootstrapParams(Section):
    resamples: int = Field(ge=10)
    confidence: float = Field(gt=0, lt=1)
    seed: int
    rows: int | None = Field(default=None, ge=100)  # test rows resampled (seeded); null = all


class EvaluateGate(Section):
    worst_acceptable: float | None  # the primary metric's floor (ceiling for errors/losses)
    min_skill: float | None = Field(le=1)  # lift over the baseline as a share of the way to perfect


class EvaluateParams(Section):
    primary_metric: str  # a metric of the task (lifecycle/metrics.py; checked by `primary_metric`)
    threshold_objective: Literal["f1", "value"]
    business: BusinessParams
    bootstrap: BootstrapParams
    gate: EvaluateGate
    curve_points: int = Field(ge=10)


# --- explain -------------------------------------------------------------------------------
class ExplainParams(Section):
    n_repeats: int = Field(gt=0)  # permutation-importance shuffles per column
    samples: int = Field(ge=0)  # validation rows explained one by one
    top_features: int = Field(gt=0)
    shap_rows: int = Field(gt=0)  # validation rows behind the global mean |SHAP|
    lime: bool = False  # LIME local explanations of the same rows (the `lime` extra)
    lime_samples: int = Field(default=1000, ge=100)  # perturbed rows per explained row
    seed: int
    rows: int | None = Field(default=None, gt=0)  # validation rows explained at all; null = all


# --- package -------------------------------------------------------------------------------
class ModelCardParams(Section):
    intended_use: str = Field(min_length=1)
    out_of_scope: str = Field(min_length=1)
    limitations: list[str]
    sensitive_features: list[str]  # feature columns that describe protected groups


class ReferenceSampleParams(Section):
    rows: int = Field(ge=100)  # training rows the bundle carries for monitoring (seeded sample)
    seed: int


class PackageParams(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # the ONNX graph and card title
    onnx_opset: int = Field(ge=13, le=21)  # highest ai.onnx opset the export may use
    tolerance: float = Field(gt=0, le=0.01)  # ONNX vs sklearn: largest probability difference
    reference_bins: int = Field(ge=2, le=100)  # quantile bins per number (10 = deciles)
    unknown_category: Literal["accept", "reject"]
    reference_sample: ReferenceSampleParams
    card: ModelCardParams
    check_rows: int | None = Field(default=None, gt=0)  # validation rows checked; null = all
    reference_rows: int | None = Field(default=None, gt=0)  # train rows profiled; null = all
    seed: int = 42  # draws both samples


# --- monitor.alerts (the monitoring stage reads it; lifecycle/monitoring/alerts.py) -------
CHECKS = ("data_drift", "multivariate_drift", "prediction_drift", "data_quality", "performance",
          "performance_estimate", "concept_drift")


class AlertRule(Section):
    """Fire when a check's result in one window crosses a line.

    threshold null: fire on the check's own verdict ("drift"). A number: fire when the result's
    value is `when` it (above: a distance, a reject rate; below: a realized ROC AUC). Windows
    with fewer than `min_window` rows, and "insufficient" verdicts, never fire."""
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")  # the alert's `rule`
    check: Literal[CHECKS]
    target: str | None = None  # a column, a metric or "dataset"; null: any target of the check
    threshold: float | None = None
    when: Literal["above", "below"] = "above"
    severity: Literal["info", "warning", "critical"]
    min_window: int = Field(default=1, ge=1)


class Webhook(Section):
    """An HTTP endpoint each alert is POSTed to as JSON (Slack/Teams relays, Alertmanager
    bridges, an on-call tool). ${VAR} in the url is read from the environment."""
    url: str = Field(pattern=r"^https?://")
    timeout_seconds: float = Field(default=5, gt=0)  # per attempt
    retries: int = Field(default=3, ge=0)  # after the first attempt: 5xx, 408, 429, no answer
    backoff_seconds: float = Field(default=0.5, ge=0)  # waits 1x, 2x, 4x ... this


class AlertsParams(Section):
    rules: list[AlertRule]
    webhooks: list[Webhook]
    fail_on: Literal["info", "warning", "critical", "never"]  # lowest severity: exit non-zero

    @model_validator(mode="after")
    def _unique_names(self) -> AlertsParams:
        names = [r.name for r in self.rules]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"rule names repeat: {repeated}")
        return self


# --- monitor (monitoring/dvc.yaml; lifecycle/monitoring) ----------------------------------
class WindowParams(Section):
    by: Literal["count", "time"]  # count: every `size` answers; time: every `every` period
    size: int = Field(gt=0)  # answers per window (by: count)
    every: str = Field(pattern=r"^[1-9][0-9]*(min|h|D)$")  # period (by: time): 30min, 1h, 1D


class EffectFloor(Section):
    number: float = Field(ge=0)  # Wasserstein distance / reference std
    category: float = Field(ge=0, le=1)  # Jensen-Shannon distance


class DataDriftParams(Section):
    min_rows: int = Field(ge=2)  # smaller windows are "insufficient"
    alpha: float = Field(gt=0, lt=1)  # false discovery rate across columns (Benjamini-Hochberg)
    small_reference: int = Field(ge=0)  # up to this many reference rows: a test; above: a distance
    effect_floor: EffectFloor


class MultivariateDriftParams(Section):
    min_rows: int = Field(ge=20)
    alpha: float = Field(gt=0, lt=1)
    auc_floor: float = Field(ge=0.5, le=1)  # the domain classifier's AUC must reach this too
    sample: int = Field(ge=20)  # distinct records drawn from the reference and the window (each)
    seed: int


class PredictionDriftParams(Section):
    min_rows: int = Field(ge=2)
    alpha: float = Field(gt=0, lt=1)
    effect_floor: float = Field(ge=0)  # Wasserstein distance / validation scores' std


class DataQualityParams(Section):
    min_rows: int = Field(ge=1)
    alpha: float = Field(gt=0, lt=1)
    rate_floor: float = Field(ge=0, le=1)  # a rate must rise at least this much over training


class PerformanceParams(Section):
    min_rows: int = Field(ge=2)  # rows WITH feedback
    confidence: float = Field(gt=0, lt=1)  # of the (analytic) interval
    drop_floor: float = Field(ge=0)  # below the test score by at least this


class PerformanceEstimateParams(Section):
    min_rows: int = Field(ge=2)
    drop_floor: float = Field(ge=0)


class ConceptDriftParams(Section):
    min_rows: int = Field(ge=2)  # rows with feedback
    alpha: float = Field(gt=0, lt=1)
    gap_floor: float = Field(ge=0)  # estimate minus realized, at least this
    confidence: float = Field(gt=0, lt=1)
    adwin_delta: float = Field(gt=0, lt=1)  # ADWIN's confidence: smaller, fewer false changes
    adwin_points: int = Field(ge=100)  # longer windows feed ADWIN block error rates, not rows
    seed: int


class MonitorParams(Section):
    window: WindowParams
    data_drift: DataDriftParams
    multivariate_drift: MultivariateDriftParams
    prediction_drift: PredictionDriftParams
    data_quality: DataQualityParams
    performance: PerformanceParams
    performance_estimate: PerformanceEstimateParams
    concept_drift: ConceptDriftParams
    alerts: AlertsParams


# --- report (no stage: `make report` and `make compare` read it; see docs/experiments.md) ------
class Gate(Section):
    """The largest worsening of one metric against BASE: absolute, or a share of BASE's value."""
    limit: float = Field(ge=0)
    relative: bool

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        return _gate(value)


class ReportParams(Section):
    metrics_file: str  # a bare metric name found in several metrics files means this one's
    primary_metric: str  # sorts the leaderboard
    leaderboard_metrics: list[str]
    higher_is_better: list[str]  # metric names (or last parts of dotted keys); others neutral
    lower_is_better: list[str]
    gates: dict[str, Gate]  # metric -> 0.01 (absolute) or "5%" (relative to BASE)
    data_metrics: list[str]  # metrics files reported under "Data quality and split"
    feature_manifest: str
    plots: list[str]  # plot files to show side by side; [] = every plot in dvc.yaml

    @model_validator(mode="after")
    def _one_direction(self) -> ReportParams:
        both = set(self.higher_is_better) & set(self.lower_is_better)
        if both:
            raise ValueError(f"{sorted(both)} listed as both higher and lower is better")
        return self


def _gate(value: object) -> object:
    """0.01 -> at most 0.01 worse than BASE; "5%" -> at most 5 % of BASE's value worse."""
    if isinstance(value, bool) or isinstance(value, dict):
        return value
    if isinstance(value, int | float):
        return {"limit": value, "relative": False}
    text = str(value).strip()
    try:
        if text.endswith("%"):
            return {"limit": float(text[:-1]) / 100, "relative": True}
        return {"limit": float(text), "relative": False}
    except ValueError:
        raise ValueError(
            f"a gate is a number (absolute) or 'N%' (relative), got {value!r}") from None


SECTIONS: dict[str, type[Section]] = {
    "seed_demo_source": SeedDemoSourceParams,
    "collect": CollectParams,
    "validate": ValidateParams,
    "preprocess": PreprocessParams,
    "split": SplitParams,
    "task": TaskParams,
    "featurize": FeaturizeParams,
    "evaluate": EvaluateParams,
    "explain": ExplainParams,
    "package": PackageParams,
    "monitor": MonitorParams,
    "report": ReportParams,
}

S = TypeVar("S", bound=Section)


def read_yaml(path: str | Path):
    """A YAML file's objects, parsed by libyaml when PyYAML has it: the same safe constructor
    as yaml.safe_load, 6x faster (every stage reads params.yaml several times, package reads
    dvc.lock: 0.1-0.2 s a stage with the pure-Python parser)."""
    return yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def load(section: str, path: Path = PARAMS_FILE, model: type[S] | None = None) -> S:
    """Read one section of params.yaml and check it against its model."""
    if model is None and section not in SECTIONS:
        raise ValueError(f"no params model for section {section!r}: pass model=")
    model = model or SECTIONS[section]
    try:
        everything = read_yaml(path) or {}
    except FileNotFoundError as exc:
        raise ParamsError(f"{path} not found (run from the project root)") from exc
    if section not in everything:
        raise ParamsError(f"{path}: section '{section}' is missing")
    try:
        return model.model_validate(everything[section])
    except ValidationError as exc:
        raise ParamsError(_one_line(section, exc, everything[section])) from exc


def _one_line(section: str, exc: ValidationError, given) -> str:
    err = exc.errors()[0]
    key = ".".join([section, *_key_path(err["loc"], given)])
    got = f" (got {err['input']!r})" if err["type"] != "missing" and not isinstance(
        err["input"], dict) else ""
    more = f" [+{exc.error_count() - 1} more]" if exc.error_count() > 1 else ""
    return f"params.yaml: {key}: {err['msg']}{got}{more}"


def _key_path(loc: tuple, given) -> list[str]:
    """The keys as written in params.yaml: pydantic's error location also names the union
    member it tried (`source.sql.url`, `as_of.datetime`), which is not a key the user wrote."""
    keys, node = [], given
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and (part in node or last):
            keys.append(str(part))
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            keys.append(str(part))
            node = node[part]
    return keys
