"""Row cleaning that learns nothing from the data, so inference can repeat it on a single row.

`make_coherent` (types, whitespace, category spellings) runs in validate, preprocess and
serving alike; the de-duplication and target rules run in preprocess only.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from lifecycle.contract import ColumnSpec, Contract

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def make_coherent(frame: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Give every declared column its declared type and canonical spelling.

    Returns the coherent frame and a boolean frame marking the cells that held a value which
    could not be read as the declared type (those become null; `validate` quarantines them).
    """
    coherent, unreadable = {}, {}
    for name, values in frame.items():
        spec = contract.columns.get(name)
        if spec is None:
            coherent[name] = values
            continue
        typed = _as_type(_tidy_text(values), spec)
        coherent[name] = typed
        unreadable[name] = _present(values) & typed.isna()
    return pd.DataFrame(coherent, index=frame.index), pd.DataFrame(unreadable, index=frame.index)


def _tidy_text(values: pd.Series) -> pd.Series:
    """Strip and collapse whitespace in text; an empty string means missing."""
    if values.dtype.kind in "biufcmM":
        return values
    text = values.astype("string").str.strip().str.replace(r"\s+", " ", regex=True)
    return text.mask(text == "")


def _present(values: pd.Series) -> pd.Series:
    present = values.notna()
    if values.dtype.kind not in "biufcmM":
        present &= values.astype("string").str.strip().fillna("") != ""
    return present


def _as_type(values: pd.Series, spec: ColumnSpec) -> pd.Series:
    if spec.type in ("int", "float"):
        numbers = pd.to_numeric(values, errors="coerce")
        if spec.type == "float":
            return numbers.astype("float64")
        whole = numbers.where(numbers.isna() | (numbers == np.round(numbers)))
        return whole.astype("Int64")
    if spec.type == "bool":
        text = values.astype("string").str.lower()
        return text.map(lambda v: True if v in _TRUE else False if v in _FALSE else pd.NA,
                        na_action="ignore").astype("boolean")
    if spec.type == "datetime":
        stamps = pd.to_datetime(values, errors="coerce", format="mixed", utc=True)
        return stamps.dt.tz_localize(None).astype("datetime64[us]")
    text = values.astype("string")
    if spec.type == "category" and spec.allowed:
        canonical = {spelling_key(a): a for a in spec.allowed}
        uniques = text.dropna().unique()
        fixes = {u: canonical.get(spelling_key(u), u) for u in uniques}
        text = text.map(fixes, na_action="ignore").astype("string")
    return text


def spelling_key(value: str) -> str:
    """What two spellings of one category share: case, spaces, dashes and underscores aside."""
    return "".join(ch for ch in str(value).casefold() if ch.isalnum())


def remove_rows(
    frame: pd.DataFrame, contract: Contract, drop_duplicate_records: bool, drop_missing_target: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Resolve duplicates and unusable rows. Returns (kept rows, removed rows with a `reason`).

    In order: older versions of the same id (newest `event_time` wins), rows without a target,
    rows missing a column whose policy is `drop`, and repeated records (same content under
    another id), so that no duplicate can end up on both sides of a split.
    """
    reason = pd.Series(pd.NA, index=frame.index, dtype="string")

    def mark(mask: pd.Series, why: str) -> None:
        reason[mask & reason.isna()] = why

    order = frame.sort_values(
        [c for c in (contract.event_time, contract.id) if c], kind="stable", ascending=False
    ) if contract.event_time else frame
    older = order.duplicated(subset=[contract.id], keep="first").reindex(frame.index)
    mark(older, "older_version_of_id")
    if drop_missing_target:
        mark(frame[contract.target.column].isna(), "missing_target")
    for name, spec in contract.columns.items():
        if spec.missing == "drop" and name in frame:
            mark(frame[name].isna(), f"missing_{name}")
    if drop_duplicate_records:
        candidates = frame[reason.isna()]
        repeated = candidates.duplicated(subset=contract.content_columns, keep="first")
        mark(repeated.reindex(frame.index, fill_value=False), "duplicate_record")
    removed = reason.notna()
    return frame[~removed], frame[removed].assign(reason=reason[removed])


def count_reasons(removed: pd.DataFrame) -> Counter:
    return Counter(removed["reason"].tolist()) if len(removed) else Counter()
