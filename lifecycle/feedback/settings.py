"""The `feedback:` section of params.yaml, typed: the gate, rollback and the online learner.

Read with `params.load("feedback", model=FeedbackParams)`; like every section, a wrong key or
value is one line naming it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lifecycle.params import Section


class Guardrails(Section):
    calibration_tolerance: float = Field(ge=0)  # expected calibration error may grow this much
    segment: str | None = Field(default=None, pattern=r"^[^=]+=.+$")  # column=value
    segment_tolerance: float = Field(ge=0)  # recall inside the segment may drop this much
    latency_tolerance: float = Field(ge=0)  # p95 latency may grow this share


class GateParams(Section):
    metric: str | None = None  # null: evaluate.primary_metric
    min_effect: float = Field(ge=0)  # the smallest difference worth a deployment
    confidence: float = Field(gt=0, lt=1)  # of the difference's two-sided interval
    resamples: int = Field(gt=0)  # paired bootstrap (metrics other than ROC AUC)
    seed: int
    guardrails: Guardrails


class RollbackParams(Section):
    window_rows: int = Field(gt=0)  # labelled answers of the new version judged at once
    windows: int = Field(ge=1)  # judged windows after a promotion before it is kept


class OnlineParams(Section):
    model: Literal["logistic_regression", "hoeffding_tree"]
    learning_rate: float = Field(gt=0)  # logistic regression's SGD step
    seed: int
    checkpoint: str  # the learner's state (JSON), rewritten after each shadow run


class FeedbackParams(Section):
    gate: GateParams
    rollback: RollbackParams
    online: OnlineParams
