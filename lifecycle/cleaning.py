"""Row cleaning that learns nothing from the data, so inference can repeat it on a single row.

`make_coherent` (types, whitespace, category spellings) runs in validate, preprocess and
serving alike; the de-duplication and target rules run in preprocess only.
"""

from __future__ import annotations

import datetime as dt
import re
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
        tidy = values if _holds_dates(values) else _tidy_text(values)
        typed = _as_type(tidy, spec)
        coherent[name] = typed
        # text: present unless blank (tidy text is null exactly then); other values: not null
        present = tidy.notna() if tidy is not values else _present(values)
        unreadable[name] = present & typed.isna()
    return pd.DataFrame(coherent, index=frame.index), pd.DataFrame(unreadable, index=frame.index)


# Python's `\s` (str.isspace) in RE2's words, checked equal on every code point (tests): Arrow's
# regex engine collapses whitespace in C++, where pandas would call Python's re once per value.
_WHITESPACE_RUN = r"[\t\n\x{0b}\f\r\x{1c}-\x{1f}\x{85}\p{Z}]+"
# A value the collapse would change: whitespace other than a plain space, or two in a row. Most
# columns hold none, and a match costs less than a replace.
_NEEDS_COLLAPSE = (r"[\t\n\x{0b}\f\r\x{1c}-\x{1f}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}"
                   r"\x{2029}\x{202f}\x{205f}\x{3000}]|[\t\n\x{0b}\f\r\x{1c}-\x{1f}\x{85}\p{Z}]{2}")


def _tidy_text(values: pd.Series) -> pd.Series:
    """Strip and collapse whitespace in text; an empty string means missing."""
    if values.dtype.kind in "biufcmM":
        return values
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.array(values.astype("string").str.strip().array)
    if pc.any(pc.match_substring_regex(text, _NEEDS_COLLAPSE)).as_py():
        text = pc.replace_substring_regex(text, _WHITESPACE_RUN, " ")
    text = pd.Series(pd.arrays.ArrowStringArray(text), index=values.index)
    return text.mask(text == "")


def _present(values: pd.Series) -> pd.Series:
    present = values.notna()
    if values.dtype.kind not in "biufcmM":
        present &= values.astype("string").str.strip().fillna("") != ""
    return present


def _as_type(values: pd.Series, spec: ColumnSpec) -> pd.Series:
    if spec.type == "int":
        return _as_int(values)
    if spec.type == "float":
        return _as_float(values)
    if spec.type == "bool":
        return _by_distinct(values.astype("string").str.lower(), "boolean",
                            lambda v: True if v in _TRUE else False if v in _FALSE else pd.NA)
    if spec.type == "datetime":
        return parse_datetimes(values, spec)[0]
    text = values.astype("string")
    if spec.type == "category" and spec.allowed:
        canonical = {spelling_key(a): a for a in spec.allowed}
        text = _by_distinct(text, "string", lambda u: canonical.get(spelling_key(u), u))
    return text


def _by_distinct(values: pd.Series, dtype: str, convert) -> pd.Series:
    """`convert` applied to each distinct non-null value once, then spread over the rows (a
    million rows of a category hold a handful of values)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    converted = pd.array([convert(u) for u in uniques], dtype=dtype)
    return pd.Series(pd.api.extensions.take(converted, codes, allow_fill=True),
                     index=values.index)


def _as_float(values: pd.Series) -> pd.Series:
    """float64 that float32 holds (some models compare their features in float32): a value
    float32 rounds to a finite number passes, 3.4028235e+38 (float32's largest, as printed)
    too; one it overflows (inf, 1e39) is no number the model can use. That, text that is not a
    number, nan, or a true/false becomes null."""
    if values.dtype.kind == "b":
        return pd.Series(np.nan, index=values.index)
    numbers = pd.to_numeric(values, errors="coerce") if values.dtype.kind not in "iuf" \
        else values
    numbers = numbers.astype("float64")
    with np.errstate(over="ignore"):   # the overflow to inf is the test
        fits = np.isfinite(numbers.to_numpy().astype(np.float32))
    return numbers.where(fits)


_INT64 = (-(2**63), 2**63)   # [low, high): exactly representable as float64 too
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")


def _as_int(values: pd.Series) -> pd.Series:
    """Int64; anything not a whole number that fits in 64 bits becomes null (then quarantined as
    wrong_type): '1e20', '9223372036854775808', 'inf', 'nan', '12.5', true/false."""
    if values.dtype.kind == "b":
        return pd.Series(pd.NA, index=values.index, dtype="Int64")
    if values.dtype.kind in "iu":
        fits = (values >= _INT64[0]) & (values <= 2**63 - 1) if values.dtype.kind == "u" \
            else pd.Series(True, index=values.index)
        return values.where(fits).astype("Int64") if not fits.all() else values.astype("Int64")
    if values.dtype.kind == "f":
        whole = np.isfinite(values) & (values == np.round(values)) \
            & (values >= _INT64[0]) & (values < _INT64[1])
        return values.where(whole).astype("Int64")
    codes, uniques = pd.factorize(values, use_na_sentinel=True)   # few distinct values
    parsed = pd.array([_int_or_na(u) for u in uniques], dtype="Int64")
    return pd.Series(pd.api.extensions.take(parsed, codes, allow_fill=True), index=values.index)


def _int_or_na(value):
    """An exact int from text ('0042', '+7', '12.0', '1e3'), or NA."""
    if isinstance(value, bool):
        return pd.NA
    text = str(value).strip()
    if _INTEGER.match(text):
        number = int(text)
    elif _DECIMAL.match(text):   # ASCII digits only: no '1_000', no other scripts' digits
        real = float(text)
        # beyond 2**53 a float is no longer an exact integer: refuse rather than round
        if not (np.isfinite(real) and real == round(real) and abs(real) <= 2**53):
            return pd.NA
        number = int(real)
    else:
        return pd.NA
    return number if _INT64[0] <= number < _INT64[1] else pd.NA


DEFAULT_DATE_FORMATS = ("ISO8601",)


def parse_datetimes(values: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, pd.Series]:
    """Naive-UTC datetimes read with the contract's format(s) (ISO 8601 by default; a naive
    time is taken as UTC), and the values that several formats read differently (ambiguous,
    e.g. 09/10/2026 under both %d/%m/%Y and %m/%d/%Y). Unmatched and ambiguous values are null:
    a date is never guessed."""
    ambiguous = pd.Series(False, index=values.index)
    if _holds_dates(values):   # typed by the source (a SQL DATE, a Parquet date32)
        values = pd.to_datetime(values, utc=True)
    if values.dtype.kind == "M":
        stamps = values.dt.tz_convert("UTC").dt.tz_localize(None) \
            if values.dt.tz is not None else values
        return stamps.astype("datetime64[us]"), ambiguous
    text = values.astype("string")   # an epoch number is not a date unless a format says so
    stamps = None
    for fmt in spec.formats or DEFAULT_DATE_FORMATS:
        one = pd.to_datetime(text, errors="coerce", format=fmt, utc=True)
        if stamps is None:
            stamps = one
            continue
        ambiguous |= stamps.notna() & one.notna() & (stamps != one)
        stamps = stamps.fillna(one)
    stamps = stamps.mask(ambiguous).dt.tz_localize(None).astype("datetime64[us]")
    return stamps, ambiguous


def _holds_dates(values: pd.Series) -> bool:
    """Python dates or datetimes in an object column: typed by the source, not text."""
    if values.dtype != object:
        return False
    present = values.notna().to_numpy()
    return bool(present.any()) and isinstance(values.iloc[present.argmax()], dt.date) and all(
        isinstance(v, dt.date) for v in values[present])


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

    keys = [c for c in (contract.event_time, contract.id) if c]
    order = frame[keys].sort_values(keys, kind="stable", ascending=False) \
        if contract.event_time else frame[keys]   # the keys alone: no copy of every column
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
