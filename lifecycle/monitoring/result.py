"""A check's verdict on one target of one window: the format results.json, the alerts and
the dashboard share (docs in lifecycle/monitoring/checks.py)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

VERDICTS = ("ok", "drift", "insufficient")


@dataclass(frozen=True)
class CheckResult:
    """One verdict: the format `results.json`, the alerts and the dashboard share."""

    check: str
    target: str  # a column, a metric or "dataset"
    statistic: str
    value: float
    p_value: float | None
    effect: float | None
    threshold: float
    n_reference: int
    n_window: int
    verdict: str  # ok | drift | insufficient
    low: float | None = None  # a confidence interval of `value`, where the check has one
    high: float | None = None

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, not {self.verdict!r}")

    def as_dict(self) -> dict:
        out = asdict(self)
        for key in ("value", "p_value", "effect", "threshold", "low", "high"):  # JSON has no NaN
            v = out[key]
            out[key] = None if v is None or (isinstance(v, float) and math.isnan(v)) else (
                round(float(v), 6))
        if out["value"] is None:
            out["value"] = 0.0
        return out


def insufficient(check: str, target: str, statistic: str, threshold: float, n_reference: int,
                 n_window: int) -> CheckResult:
    """A window too small (or without labels) to judge: neither ok nor drift."""
    return CheckResult(check, target, statistic, float("nan"), None, None, threshold,
                       n_reference, n_window, "insufficient")
