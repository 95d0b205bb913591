"""Helpers for partitioned frames: cutting a frame already in memory, partition offsets, the
content hash that stands for a row's content columns in decisions spanning partitions."""

from __future__ import annotations

import numpy as np
import pandas as pd

CONTENT = "__content"  # a hash of a row's content columns (features and target)


def partitions(frame: pd.DataFrame, partition_rows: int):
    """A frame already in this process, cut into partitions."""
    import dask.dataframe as dd

    return dd.from_pandas(frame, npartitions=max(1, -(-len(frame) // partition_rows)),
                          sort=False)


def offsets(ddf) -> np.ndarray:
    """Where each partition starts in the whole table, and the total at the end."""
    lengths = ddf.map_partitions(len).compute()
    return np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype="int64"))])




def content_hash(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """64-bit hash of each row's values in `columns` (equal values, equal hash; NaN too)."""
    return pd.util.hash_pandas_object(frame[columns], index=False)
