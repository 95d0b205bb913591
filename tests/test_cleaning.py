"""Row cleaning in Arrow's regex engine means what Python's `str.isspace` / `\\s` means."""

import re
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lifecycle import cleaning
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
