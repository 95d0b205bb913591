"""Reading the inference registry: its Parquet export, or the database by SQLAlchemy URL.

Monitoring reads what serving recorded (`lifecycle/serving/registry.py`): the served answers
(shadow answers are another model's and are left out) with their inputs (personal data masked),
score, model version and time, joined with the feedback that has arrived. The result is one row
per answer: the input fields under their own names, then `score` (the positive class's
probability for binary classification, else the predicted value), `prediction`, `outcome`
(null until feedback arrives), `created_at`, `model_version`, `request_id`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lifecycle.errors import StageError

KEEP = ("request_id", "created_at", "model_version", "prediction", "outcome", "received_at")
REQUIRED = ("role", "created_at", "model_version", "prediction", "probability")


def is_url(source: str) -> bool:
    return "://" in str(source)


def read(source: str | Path, fields: list[str]) -> pd.DataFrame:
    """The served predictions of a registry export (.parquet) or a registry URL, oldest first."""
    if is_url(source):
        from lifecycle.serving.registry import export_parquet

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "registry.parquet"
            export_parquet(str(source), path)
            return read(path, fields)
    path = Path(source)
    if not path.is_file():
        raise StageError(f"{path}: no registry export (run `make registry-export`)")
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    missing = [c for c in REQUIRED if c not in schema.names]
    if missing:
        raise StageError(f"{path}: not a registry export, columns {missing} are missing")
    # only what the checks read (an export also holds ids, masked personal data, shadows);
    # text columns as categories: a million answers repeat a few values per column, and
    # decoded one string per row they would triple the run's peak memory
    wanted = [c for c in dict.fromkeys([*REQUIRED, *(f"input.{n}" for n in fields), *KEEP])
              if c in schema.names]
    text = [c for c in wanted if c != "request_id" and str(schema.field(c).type) in (
        "string", "large_string")]
    frame = pd.read_parquet(path, columns=wanted, filters=[("role", "==", "served")],
                            read_dictionary=text)
    out = pd.DataFrame(index=frame.index)
    for name in fields:  # a field never recorded stays all-null: data quality reports it
        column = f"input.{name}"
        out[name] = frame[column] if column in frame.columns else pd.Series(
            pd.NA, index=frame.index, dtype="object")
    score = frame["probability"]
    if score.isna().all():  # regression: the predicted value is the score
        score = pd.to_numeric(frame["prediction"], errors="coerce")
    out["score"] = score.astype("float64")
    for name in KEEP:
        out[name] = frame[name] if name in frame.columns else pd.NA
    del frame
    keys = ["created_at", "request_id"]
    if not in_order(out, keys):  # an export in time order (the usual) is not copied again
        out = out.sort_values(keys, kind="stable")
    return out.reset_index(drop=True)


def in_order(frame: pd.DataFrame, keys: list[str]) -> bool:
    """Whether the rows are already sorted by the two `keys` (no nulls among them)."""
    first, second = (frame[k] for k in keys)
    if len(frame) < 2:
        return True
    if first.isna().any() or second.isna().any():
        return False
    a = first.to_numpy(dtype="datetime64[us]") if isinstance(
        first.dtype, pd.DatetimeTZDtype) else first.to_numpy()  # not an array of Timestamps
    if (a[1:] < a[:-1]).any():
        return False
    tied = np.flatnonzero(a[1:] == a[:-1])  # only ties need the second key
    return bool((second.iloc[tied + 1].to_numpy(dtype=object)
                 >= second.iloc[tied].to_numpy(dtype=object)).all())
