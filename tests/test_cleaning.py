"""Row cleaning: Arrow's regex engine means what Python's `str.isspace` / `\\s` means; a float
column takes every number float32 holds."""

import re
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lifecycle import cleaning, quality
from lifecycle.contract import Contract

EVERY_CHARACTER = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]


def test_whitespace_classes_equal_pythons_on_every_code_point():
    chars = pa.array(EVERY_CHARACTER)
    python_space = [bool(re.fullmatch(r"\s", c)) for c in EVERY_CHARACTER]
    run = pc.match_substring_regex(chars, f"^(?:{cleaning._WHITESPACE_RUN})$").to_pylist()
    assert run == python_space and sum(run) == 29
    needs = pc.match_substring_regex(chars, cleaning._NEEDS_COLLAPSE).to_pylist()
    assert needs == [space and c != " " for c, space in zip(EVERY_CHARACTER, python_space,
                                                            strict=True)]


def test_text_is_tidied_as_python_would():
    values = ["  Month-to-month ", "One\u00a0 year", "Two\tyear", "a  b", "x\u3000\u2028y", " ",
              "", None, "plain text"]
    contract = Contract.model_validate({
        "dataset": "d", "id": "id", "target": {"column": "id"},
        "columns": {"id": {"type": "string"}, "text": {"type": "string"}}})
    frame = pd.DataFrame({"id": [str(i) for i in range(len(values))], "text": values})
    coherent, unreadable = cleaning.make_coherent(frame, contract)
    expected = [None if v is None or not v.strip() else re.sub(r"\s+", " ", v.strip())
                for v in values]
    assert coherent["text"].astype(object).where(coherent["text"].notna(), None).tolist() \
        == expected
    assert not unreadable["text"].any()   # blank text is missing, not unreadable
    clean = frame.assign(text=["Month-to-month", "a b", None, "plain text", None, None, None,
                               None, "x"])
    tidy, _ = cleaning.make_coherent(clean, contract)   # nothing to collapse: the fast path
    assert tidy["text"].tolist()[:4] == ["Month-to-month", "a b", pd.NA, "plain text"]


# float32's largest value, and the first float64 past it that float32 no longer rounds down to
# it (halfway to 2**128: round-to-nearest-even goes up, to inf)
FLOAT32_MAX = float(np.finfo(np.float32).max)
OVERFLOW_FROM = 2.0**128 - 2.0**103


def test_float_column_takes_what_float32_holds_and_quarantines_what_overflows_it():
    fits = [FLOAT32_MAX, -FLOAT32_MAX, "3.4028235e+38", "-3.4028235e38",   # as float32 prints it
            np.nextafter(OVERFLOW_FROM, 0), 1e-46, 0.5]
    overflows = [OVERFLOW_FROM, -OVERFLOW_FROM, "3.4028236e38", "1e39", "inf", "-Infinity"]
    contract = Contract.model_validate({
        "dataset": "d", "id": "id", "target": {"column": "id"},
        "columns": {"id": {"type": "string"}, "amount": {"type": "float"}}})
    values = [str(v) if not isinstance(v, str) else v for v in fits + overflows]
    raw = pd.DataFrame({"id": [str(i) for i in range(len(values))], "amount": values},
                       dtype=object)

    verdict = quality.judge(raw, contract, pd.Timestamp("2026-01-01", tz="UTC"))
    assert verdict.valid["id"].tolist() == [str(i) for i in range(len(fits))]
    assert np.isfinite(verdict.valid["amount"].to_numpy().astype(np.float32)).all()
    assert verdict.quarantine["amount"].tolist() == values[len(fits):]
    assert set(verdict.first_reason) == {"wrong_type:amount"}
