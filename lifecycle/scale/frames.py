"""The content hash that stands for a row's content columns in decisions spanning partitions."""

from __future__ import annotations

import pandas as pd

CONTENT = "__content"  # a hash of a row's content columns (features and target)


def content_hash(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """64-bit hash of each row's values in `columns` (equal values, equal hash; NaN too)."""
    return pd.util.hash_pandas_object(frame[columns], index=False)
