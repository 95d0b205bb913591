"""Train / validation / test splits: stratified by the target, random, or by time.

Runs after de-duplication; rows are ordered by id first so the split depends only on the data
and the seed, never on the order the source returned them in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lifecycle.contract import Contract
from lifecycle.errors import StageError

SPLITS = ("train", "validation", "test")


def split(frame: pd.DataFrame, contract: Contract, method: str, validation_size: float,
          test_size: float, seed: int) -> dict[str, pd.DataFrame]:
    """Assign every row to exactly one split; the same id never lands in two."""
    if frame[contract.id].duplicated().any():
        raise StageError(f"duplicate {contract.id} values reach split: run preprocess first")
    frame = frame.sort_values(contract.id, kind="stable").reset_index(drop=True)
    if method == "time":
        if not contract.event_time:
            raise StageError("split.method is 'time' but the contract names no event_time")
        order = frame.sort_values([contract.event_time, contract.id], kind="stable").index
        labels = _cut(len(frame), validation_size, test_size)
        assignment = pd.Series(labels, index=order).reindex(frame.index)
    else:
        rng = np.random.default_rng(seed)
        strata = (_strata(frame[contract.target.column], contract) if method == "stratified"
                  else pd.Series(0, index=frame.index))
        assignment = pd.Series("", index=frame.index)
        for _, members in frame.groupby(strata, sort=True).groups.items():
            shuffled = rng.permutation(np.asarray(members))
            assignment.loc[shuffled] = _cut(len(shuffled), validation_size, test_size)
    return {name: frame[assignment == name].reset_index(drop=True) for name in SPLITS}


def _cut(n: int, validation_size: float, test_size: float) -> np.ndarray:
    """Labels for n ordered rows: train first, then validation, then test last."""
    n_test, n_val = round(n * test_size), round(n * validation_size)
    return np.array(["train"] * (n - n_test - n_val) + ["validation"] * n_val + ["test"] * n_test)


def _strata(target: pd.Series, contract: Contract) -> pd.Series:
    """Classes for a categorical target; deciles for a numeric one."""
    spec = contract.columns[contract.target.column]
    if spec.type in ("category", "string", "bool") or target.nunique() <= 20:
        return target.astype("string").fillna("<missing>")
    return pd.qcut(target.rank(method="first"), 10, labels=False)


def summary(splits: dict[str, pd.DataFrame], contract: Contract) -> dict:
    """Sizes and target balance per split, for metrics/split.json."""
    total = sum(len(f) for f in splits.values())
    target = contract.target.column
    out = {}
    for name, frame in splits.items():
        info = {"rows": len(frame), "share": round(len(frame) / max(total, 1), 4)}
        y = frame[target]
        if contract.columns[target].type in ("category", "string", "bool"):
            shares = y.value_counts(normalize=True).sort_index()
            info["class_balance"] = {str(k): round(float(v), 4) for k, v in shares.items()}
        else:
            info["target_mean"] = round(float(y.mean()), 4)
        if contract.event_time and len(frame):
            info["time_range"] = [frame[contract.event_time].min().isoformat(),
                                  frame[contract.event_time].max().isoformat()]
        out[name] = info
    return out
