"""Reference statistics: the training inputs and the validation predictions, binned, that drift
checks compare live traffic with (`reference_stats.json`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lifecycle.contract import Contract
from lifecycle.packaging.rows import NUMBER_TYPES


def _round(value: float) -> float:
    return float(f"{value:.10g}")


def numeric_profile(values: np.ndarray, bins: int) -> dict:
    """Quantile bin edges and the share of values per bin, plus mean, std, range and null share.
    Bin i holds values in (edges[i-1], edges[i]]; the first and last bins are open-ended."""
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    out = {"type": "number", "rows": len(values),
           "null_share": _round(1 - len(present) / len(values)) if len(values) else 0.0}
    if not len(present):
        return {**out, "edges": [], "counts": [], "shares": []}
    quantiles = np.quantile(present, np.arange(1, bins) / bins)
    edges = sorted({_round(q) for q in quantiles})
    counts = histogram(present, edges)
    return {**out, "mean": _round(present.mean()), "std": _round(present.std(ddof=1))
            if len(present) > 1 else 0.0, "min": _round(present.min()),
            "max": _round(present.max()), "edges": edges, "counts": counts.tolist(),
            "shares": [_round(c / len(present)) for c in counts]}


def histogram(values, edges: list[float]) -> np.ndarray:
    """Counts of non-null values in the reference bins of `numeric_profile`."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return np.bincount(np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left"),
                       minlength=len(edges) + 1)


def category_profile(values: pd.Series) -> dict:
    """Share of each category (most frequent first) and the null share."""
    counts = values.astype("string").value_counts(dropna=True)
    counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
    n = len(values)
    return {"type": "category", "rows": n,
            "null_share": _round(values.isna().sum() / n) if n else 0.0,
            "counts": {str(k): int(v) for k, v in counts.items()},
            "shares": {str(k): _round(v / n) for k, v in counts.items()}}


def reference_stats(train: pd.DataFrame, contract: Contract, predictions: pd.DataFrame,
                    task: str, bins: int, prediction_source: str) -> dict:
    """Training-data statistics per input feature and the distribution of the model's output,
    the reference that drift checks compare live traffic with."""
    columns = {}
    for name in contract.feature_columns:
        spec = contract.columns[name]
        if spec.type in NUMBER_TYPES:
            values = pd.to_numeric(train[name], errors="coerce").astype("float64").to_numpy()
            columns[name] = numeric_profile(values, bins)
        else:
            columns[name] = category_profile(train[name])
    if task == "regression":
        output = {"kind": "predicted value",
                  **numeric_profile(predictions["prediction"].to_numpy(), bins)}
    else:
        kind = "probability of the positive class" if task == "binary" else \
            "probability of the predicted class"
        output = {"kind": kind, **numeric_profile(predictions["probability"].to_numpy(), bins),
                  "predicted_classes": category_profile(predictions["prediction"])["shares"]}
    return {"features_from": "train split", "rows": len(train), "bins": bins,
            "binning": "bin i holds values in (edges[i-1], edges[i]]; first/last bins open",
            "features": columns, "prediction": {"from": prediction_source, **output}}

