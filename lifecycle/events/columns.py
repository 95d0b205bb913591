"""The micro-batch fast path: a batch of JSON records checked and scored as columns.

Batch scoring checks a chunk as columns (`Bundle.check_rows`) and the API checks a few
records one by one (`Bundle.check_records`); both come down to the bundle's same column checks
(`_reasons`: required fields, ranges, categories, rules) and the same ONNX feed. A
micro-batch of events is a chunk whose records arrive as JSON text, so here Arrow's JSON
reader (C++) parses the whole batch straight into typed columns, text values are made
coherent once per distinct value (as `check_rows` does), and the bundle's checks and model run
on the columns: no pandas, no Python object per cell.

Whatever this path cannot take exactly as the record path would, it refuses (returns None)
and the worker falls back to the record path for that batch: a record that is no JSON object,
a field outside the signature, a value of another JSON type than its field's (Arrow refuses
the whole batch), a text that needs more than plain-ASCII tidying. So a batch's verdicts and
answers are the record path's; tests/test_events.py compares the two on the same events.
"""

from __future__ import annotations

import io

import numpy as np

from lifecycle import features
from lifecycle.packaging.rows import coherent_value

ARROW_TYPES = {"int": "int64", "float": "float64", "string": "string", "category": "string"}
_EXACT_INT = 2**53  # beyond this a number is not read by `coherent_value`: the record path is


class ColumnPath:
    """Checks and scores JSON records of one bundle as columns (module docstring)."""

    def __init__(self, scorer):
        import pyarrow as pa
        import pyarrow.json as pj

        self.bundle = bundle = scorer.bundle
        self.fields = list(bundle._fields)
        self.usable = all(f.type in ARROW_TYPES for f in self.fields)
        schema = pa.schema([(f.name, ARROW_TYPES.get(f.type, "string")) for f in self.fields])
        self._parse = pj.ParseOptions(explicit_schema=schema, newlines_in_values=False,
                                      unexpected_field_behavior="error")
        self._read = pj.ReadOptions(use_threads=False, block_size=1 << 26)
        self._decide = bundle.decide
        # the API's bounds on text (serving.inputs), where the scorer has them: a longer text
        # goes by record, to be refused there with the API's reason
        self.limits = dict(getattr(getattr(scorer, "inputs", None), "limits", None) or {})
        self._wanted = bundle._value_columns

    def run(self, payloads: list[bytes]):
        """(columns, ok mask, {position: reason}, answers of the ok rows as {prediction,
        probability?} arrays) or None when the record path must decide this batch."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.json as pj

        if not self.usable or not payloads:
            return None
        blob = b"\n".join(payloads)
        if blob.count(b"\n") != len(payloads) - 1:  # a payload spans lines: pretty-printed
            return None
        try:
            table = pj.read_json(io.BytesIO(blob), read_options=self._read,
                                 parse_options=self._parse)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return None
        n = table.num_rows
        if n != len(payloads):
            return None
        columns, unreadable = {}, {}
        no = np.zeros(n, dtype=bool)
        for f in self.fields:
            column = table.column(f.name).combine_chunks()
            if f.type in ("int", "float"):
                values = column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                null = np.isnan(values)
                if np.abs(values[~null]).max(initial=0) >= _EXACT_INT:
                    return None  # the record path reads such numbers as the batch path does
            else:
                limit = self.limits.get(f.name)
                if limit is not None and (pc.max(pc.utf8_length(column)).as_py() or 0) > limit:
                    return None
                coherent = self._coherent_texts(f, column)
                if coherent is None:
                    return None
                null, values = coherent
            columns[f.name] = (null, values)
            unreadable[f.name] = no
        bad, reasons = self.bundle._reasons(columns, unreadable, n)
        ok = ~bad
        reasons = dict(zip(np.flatnonzero(bad).tolist(), reasons, strict=True))
        kept = int(ok.sum())
        every = kept == n
        numbers = {c: columns[c][1] if every else columns[c][1][ok]
                   for c in self.bundle._number_sources}
        texts = {}
        for c in self.bundle._text_sources:
            null, values = columns[c]
            values = values.copy() if every else values[ok]
            values[null if every else null[ok]] = features.MISSING
            texts[c] = values
        answers = (self._decide(self.bundle._run_onnx((numbers, texts), kept)) if kept
                   else {})
        return columns, ok, reasons, answers

    @staticmethod
    def _coherent_texts(f, column) -> tuple[np.ndarray, np.ndarray] | None:
        """(null mask, object array of coherent values, None for missing), each distinct
        text made coherent once; None if one needs the record path."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if f.type == "string" and _tidy(column, pc):  # ids: unique, and already coherent
            return (column.is_null().to_numpy(zero_copy_only=False),
                    column.to_numpy(zero_copy_only=False))
        encoded = column.dictionary_encode() if not pa.types.is_dictionary(column.type) \
            else column
        distinct = encoded.dictionary.to_pylist()
        coherent = np.empty(len(distinct) + 1, dtype=object)
        for i, text in enumerate(distinct):
            value, readable = coherent_value(f, text)
            if readable is not True:
                return None
            coherent[i] = value
        coherent[-1] = None
        codes = encoded.indices.fill_null(len(distinct)).to_numpy(zero_copy_only=False)
        return np.equal(coherent, None)[codes], coherent[codes]


def _tidy(column, pc) -> bool:
    """Whether coherence leaves this text column as it is: printable ASCII, not empty, no
    whitespace but single inner spaces (checked in Arrow; `rows._already_tidy`'s rule)."""
    if column.null_count == len(column):
        return True
    printable = pc.all(pc.match_substring_regex(column, r"^[ -~]*$")).as_py()
    untidy = pc.any(pc.match_substring_regex(column, r"^ | $|  |^$")).as_py()
    return printable is not False and not untidy

