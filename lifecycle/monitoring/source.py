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

import pandas as pd

from lifecycle.errors import StageError

KEEP = ("request_id", "created_at", "model_version", "prediction", "outcome", "received_at")


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
    frame = pd.read_parquet(path)
    missing = [c for c in ("role", "created_at", "model_version", "prediction", "probability")
               if c not in frame.columns]
    if missing:
        raise StageError(f"{path}: not a registry export, columns {missing} are missing")
    frame = frame[frame["role"] == "served"]
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
    out = out.sort_values(["created_at", "request_id"], kind="stable").reset_index(drop=True)
    return out
