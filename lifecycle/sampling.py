"""Seeded row samples that bound the cost of the extras (bootstrap intervals, permutation
importance, SHAP, engine checks, reference statistics) on big data, whatever the data's size."""

from __future__ import annotations

import numpy as np
import pandas as pd


def sample_index(n: int, rows: int | None, seed: int) -> np.ndarray | None:
    """Positions of `rows` of `n` rows drawn without replacement (seeded), in their original
    order; None when every row fits (so small data is used whole, unchanged)."""
    if rows is None or n <= rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=rows, replace=False))


def sample_frame(frame: pd.DataFrame, rows: int | None, seed: int) -> pd.DataFrame:
    """At most `rows` rows of `frame` (seeded, original order); the frame itself if it fits."""
    keep = sample_index(len(frame), rows, seed)
    return frame if keep is None else frame.iloc[keep].reset_index(drop=True)
