"""Train / validation / test splits: stratified by the target, random, or by time.

Runs after de-duplication; rows are ordered by id first so the split depends only on the data
and the seed, never on the order the source returned them in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lifecycle.contract import Contract
from lifecycle.errors import StageError, clip

SPLITS = ("train", "validation", "test")


def split(frame: pd.DataFrame, contract: Contract, method: str, validation_size: float,
          test_size: float, seed: int) -> dict[str, pd.DataFrame]:
    """Assign every row to exactly one split; the same id never lands in two."""
    order, labels = assign(frame, contract, method, validation_size, test_size, seed)
    frame = frame.iloc[order].reset_index(drop=True)
    return {name: frame[labels == name].reset_index(drop=True) for name in SPLITS}


def assign(frame: pd.DataFrame, contract: Contract, method: str, validation_size: float,
           test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(the positions of `frame`'s rows in id order, the split of each row in that order).
    Needs only the id, the target and the event time."""
    if frame[contract.id].duplicated().any():
        raise StageError(f"duplicate {contract.id} values reach split: run preprocess first")
    frame = frame.reset_index(drop=True).sort_values(contract.id, kind="stable")
    order = frame.index.to_numpy()
    frame = frame.reset_index(drop=True)
    if method == "time":
        if not contract.event_time:
            raise StageError("split.method is 'time' but the contract names no event_time")
        by_time = frame.sort_values([contract.event_time, contract.id], kind="stable").index
        labels = _cut(len(frame), validation_size, test_size)
        assignment = pd.Series(labels, index=by_time).reindex(frame.index)
    else:
        rng = np.random.default_rng(seed)
        strata = (_strata(frame[contract.target.column], contract) if method == "stratified"
                  else pd.Series(0, index=frame.index))
        assignment = pd.Series("", index=frame.index)
        for _, members in frame.groupby(strata, sort=True).groups.items():
            shuffled = rng.permutation(np.asarray(members))
            assignment.loc[shuffled] = _cut(len(shuffled), validation_size, test_size)
    return order, assignment.to_numpy()


def check_splits(splits: dict[str, pd.DataFrame], contract: Contract, task: str,
                 min_rows: int) -> None:
    """Degenerate data stops here, before any model sees it, with the numbers: every split
    holds at least `min_rows` rows; a regression target varies; a classification target has
    two classes or more, each present in every split."""
    sizes = {name: len(f) for name, f in splits.items()}
    shown = ", ".join(f"{n} {name}" for name, n in sizes.items())
    small = [name for name, n in sizes.items() if n < min_rows]
    if small:
        raise StageError(f"the {small[0]} split would hold {sizes[small[0]]} rows "
                         f"(< split.min_rows {min_rows}): {shown} from {sum(sizes.values())} "
                         "clean rows; more data, or other split sizes")
    target = contract.target.column
    counts = {name: f[target].dropna().astype("string").value_counts()
              for name, f in splits.items()}
    total = pd.concat(list(counts.values())).groupby(level=0).sum()
    if len(total) < 2:
        seen = (f"{clip(total.index[0], 40)!r} in all {int(total.iloc[0])} rows with a target"
                if len(total) else "no row has one")
        need = "must vary for regression" if task == "regression" else \
            f"needs at least two classes for {task} classification"
        raise StageError(f"target {target} {need}: {seen}")
    if task == "regression":
        return
    for cls in sorted(total.index):
        per_split = {name: int(c.get(cls, 0)) for name, c in counts.items()}
        absent = [name for name, n in per_split.items() if n == 0]
        if absent:
            detail = ", ".join(f"{n} {name}" for name, n in per_split.items())
            raise StageError(f"class {clip(cls, 40)!r} of {target} is absent from the "
                             f"{absent[0]} split ({detail}): too few rows of it to split")


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
