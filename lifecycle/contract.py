"""The data contract: one YAML file that declares every column, the id, the target, the event
time, freshness, personal data and cross-field rules. Everything else is built from it.

Column fields: `type` (int | float | bool | string | category | datetime), `nullable`,
`allowed` (categories), `min`/`max` (numbers), `missing` (drop | impute), `role`
(feature | metadata), and for datetime columns `format`: one strptime format or a list
("%d/%m/%Y"; default ISO 8601). Values are typed from the source's text by the contract only:
an id declared `string` keeps its leading zeros; an `int` is a whole number that fits in 64 bits
(anything else, `inf`, `1e20`, `nan`, is quarantined as wrong_type); a `float` is a number
float32 holds without overflowing (some model families compare features in float32); a date
that matches no listed format, or two formats differently, is quarantined, never guessed.

Rules are pandas expressions over the columns that must hold on every row; `as_of` names the
moment `validate` judges against (`signup_date <= as_of`: no signup in the future)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from lifecycle.io import read_yaml_model

ColumnType = Literal["int", "float", "bool", "string", "category", "datetime"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Strict):
    type: ColumnType
    nullable: bool = True
    allowed: list[str] | None = None
    min: float | None = None
    max: float | None = None
    missing: Literal["drop", "impute"] = "impute"
    role: Literal["feature", "metadata"] = "feature"
    format: str | list[str] | None = None   # datetime only: strptime format(s); default ISO 8601

    @model_validator(mode="after")
    def _format_for_dates(self) -> ColumnSpec:
        if self.format is not None and self.type != "datetime":
            raise ValueError("format applies to datetime columns only")
        if isinstance(self.format, list) and not self.format:
            raise ValueError("format: list at least one format")
        return self

    @property
    def formats(self) -> list[str]:
        """The accepted date formats, in order ([] = the ISO 8601 default)."""
        return [self.format] if isinstance(self.format, str) else list(self.format or [])


class Target(_Strict):
    column: str
    positive: str | None = None


class Freshness(_Strict):
    max_age_days: float
    future_tolerance_hours: float = 24


class Rule(_Strict):
    name: str
    check: str


class Contract(_Strict):
    dataset: str
    id: str
    event_time: str | None = None
    target: Target
    freshness: Freshness | None = None
    personal_data: list[str] = []
    extra_columns: Literal["error", "ignore"] = "error"
    columns: dict[str, ColumnSpec]
    rules: list[Rule] = []

    @model_validator(mode="after")
    def _names_are_declared(self) -> Contract:
        named = [self.id, self.target.column, *self.personal_data]
        if self.event_time:
            named.append(self.event_time)
        unknown = [n for n in named if n not in self.columns]
        if unknown:
            raise ValueError(f"columns named but not declared under 'columns': {unknown}")
        return self

    @property
    def feature_columns(self) -> list[str]:
        """Columns a model may learn from: not the id, target, event time or personal data."""
        excluded = {self.id, self.target.column, self.event_time, *self.personal_data}
        return [
            name
            for name, spec in self.columns.items()
            if name not in excluded and spec.role == "feature"
        ]

    @property
    def content_columns(self) -> list[str]:
        """Columns that say what a record is, for duplicate detection: features and target."""
        return [*self.feature_columns, self.target.column]

    def rule_columns(self, rule: Rule) -> list[str]:
        """The declared columns a rule's expression reads."""
        names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", rule.check))
        return [c for c in self.columns if c in names]


def load_contract(path: str | Path) -> Contract:
    """Read and check a contract file; a malformed one is one clear StageError."""
    return read_yaml_model(path, Contract, "contract")


def mask(values, salt: str = "pii"):
    """Replace personal values by a short stable hash: joinable, not readable."""
    import hashlib

    return [
        None if _missing(v) else
        "masked:" + hashlib.sha256(f"{salt}:{v}".encode()).hexdigest()[:12]
        for v in values
    ]


def _missing(value) -> bool:
    """None, NaN or pandas.NA (whose comparisons are NA, not a bool)."""
    try:
        return value is None or bool(value != value)
    except TypeError:
        return True
