"""The checks a window is judged by: one registry entry each (name -> function).

A check is a function `(window, reference, params) -> list[CheckResult]`: it reads the window's
rows (inputs, scores, outcomes), the bundle's reference and its own params section, and says
for each target (a column, a metric, or "dataset") its statistic, threshold, sample sizes and
verdict ("ok", "drift", or "insufficient" when the window is too small or has no labels yet).
Adding a drift check is one entry here and one params section (lifecycle/params.py).
"""

from __future__ import annotations

from collections.abc import Callable

from lifecycle.monitoring import drift, multivariate, performance, quality

CHECKS: dict[str, Callable] = {
    "data_drift": drift.data_drift,                    # per input column, BH across columns
    "multivariate_drift": multivariate.domain_classifier,  # reference vs window classifier
    "prediction_drift": drift.prediction_drift,        # scores vs validation scores
    "data_quality": quality.data_quality,              # nulls, unknown categories, out of range
    "performance": performance.realized,               # from joined feedback, 95% interval
    "performance_estimate": performance.estimated,     # CBPE: without labels
    "concept_drift": performance.concept_drift,        # realized falls, estimate holds; ADWIN
}
