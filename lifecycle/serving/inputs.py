"""One input check for every way a record arrives: the API, events and batch files.

A record may carry any column the bundle's contract declares, as the source has it: the
signature's fields are checked and scored (`Bundle.check_records` / `Bundle.check_rows`, the
same contract checks either way), the other declared columns (personal data, metadata, the
target, the event time) are carried, bounded and never used as features; an undeclared column
is refused or dropped as the contract's `extra_columns` says. Before the contract checks, every
value is bounded: text no longer than its field allows (the signature's `max_length`) and free
of control characters, no nested objects, and a boolean is never a number. The API and batch
call the same two functions below, so they accept and refuse the same records for the same
reasons (`too_long:<field>`, `control_characters:<field>`, `wrong_type:<field>`,
`undeclared:<field>`, then the bundle's own).
"""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pandas as pd

# Longest text accepted per declared type, unless the signature says otherwise.
MAX_LENGTH = {"category": 100, "string": 1000, "datetime": 64, "int": 64, "float": 64,
              "bool": 16}
ID_MAX_LENGTH = 200
# C0 and C1 control characters but tab, newline and carriage return (whitespace is tidied)
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
NUMBER_TYPES = ("int", "float")


def max_length(field: dict) -> int:
    """The longest text a signature field accepts: its `max_length`, else by type (a category
    at least as long as its longest allowed value)."""
    if field.get("max_length"):
        return int(field["max_length"])
    if field.get("role") == "id":
        return ID_MAX_LENGTH
    kind = field.get("type", "string")
    longest = max((len(str(a)) for a in field.get("allowed") or []), default=0)
    return max(MAX_LENGTH.get(kind, 1000), longest)


class NotJson(str):
    """A literal JSON has not got (NaN, Infinity, -Infinity) as written: Python's json would
    read it as a float nan, which a float column takes for missing. Kept apart (equal to no
    text), it is refused as `wrong_type:<field>` on every path, and written to rejects as is."""

    __slots__ = ()

    def __eq__(self, other) -> bool:
        return type(other) is NotJson and str.__eq__(self, other)

    def __ne__(self, other) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((NotJson, str(self)))


_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def loads(document: str):
    """A JSON document as the API (when orjson refuses it) and batch files read it: any
    integer, a number beyond float64 (1e400) as inf (then `wrong_type`, as the data path
    reads it), NaN and Infinity as `NotJson`; anything else not JSON (a lone surrogate
    escape too, as orjson says) raises ValueError."""
    value = json.loads(document, parse_constant=NotJson)
    if "\\u" in document and _SURROGATE.search(document):  # rare: are they all paired?
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ValueError("a lone surrogate escape (\\ud800-\\udfff) is no character") \
                from None
    return value


class InputCheck:
    """The checks of one bundle, planned once: which columns are declared, scored or carried,
    and how long each may be."""

    def __init__(self, bundle):
        self.bundle = bundle
        contract = bundle.contract
        fields = {f["name"]: f for f in bundle.signature["fields"]}
        self.declared = set(contract.columns)
        self.extra = contract.extra_columns
        self.limits = {name: MAX_LENGTH.get(spec.type, 1000)
                       for name, spec in contract.columns.items()}
        self.limits.update({name: max_length(f) for name, f in fields.items()})
        self.numbers = {name for name, f in fields.items() if f.get("type") in NUMBER_TYPES}

    # --- records (API, events) ------------------------------------------------------------------
    def records(self, records: list[dict]) -> tuple[list[dict], dict[int, str]]:
        """(coherent records that pass, in order; {position: reason} of the others)."""
        passed, positions, reasons = [], [], {}
        for i, record in enumerate(records):
            found, record = self._record_problems(record)
            if found:
                reasons[i] = "; ".join(sorted(found))
            else:
                passed.append(record)
                positions.append(i)
        if not reasons:
            return self.bundle.check_records(records)
        ok, refused = self.bundle.check_records(passed)
        reasons.update({positions[j]: reason for j, reason in refused.items()})
        return ok, dict(sorted(reasons.items()))

    def _record_problems(self, record: dict) -> tuple[list[str], dict]:
        found = []
        dropped = False
        for name, value in record.items():
            if name not in self.limits:  # not declared
                if self.extra == "error":
                    found.append(f"undeclared:{name}")
                else:
                    dropped = True
                continue
            if (problem := self.value_problem(name, value)) is not None:
                found.append(problem)
        if dropped and not found:
            record = {k: v for k, v in record.items() if k in self.limits}
        return found, record

    def value_problem(self, name: str, value) -> str | None:
        """What is wrong with one value of a declared column before any contract check, or
        None: the one rule both paths apply, value by value."""
        kind = type(value)
        if value is None or kind is int or kind is float:
            return None
        if kind is NotJson:
            return f"wrong_type:{name}"
        if kind is str:
            if len(value) > self.limits[name]:
                return f"too_long:{name}"
            return f"control_characters:{name}" if CONTROL.search(value) else None
        if kind is bool or kind is np.bool_:
            return f"wrong_type:{name}" if name in self.numbers else None
        if isinstance(value, int | float | np.number | dt.date | np.datetime64) \
                or value is pd.NA or value is pd.NaT:
            return None
        return f"wrong_type:{name}"  # objects, lists: never a column's value

    # --- frames (batch files) -------------------------------------------------------------------
    def frame(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(coherent rows that pass; rejected rows as received with a `reason`), like
        `Bundle.check_rows`, with the same bounds as `records`."""
        undeclared = [c for c in frame.columns if c not in self.limits]
        if undeclared and self.extra != "error":
            frame, undeclared = frame.drop(columns=undeclared), []
        problems: list[tuple[str, np.ndarray]] = [
            (f"undeclared:{c}", np.ones(len(frame), dtype=bool)) for c in undeclared]
        for name in frame.columns:
            if name in self.limits:
                problems += self._column_problems(name, frame[name])
        bad = np.zeros(len(frame), dtype=bool)
        for _, rows in problems:
            bad |= rows
        if not bad.any():
            return self.bundle.check_rows(frame)
        reasons = ["; ".join(sorted(label for label, rows in problems if rows[i]))
                   for i in np.flatnonzero(bad)]
        refused = frame[bad].assign(reason=reasons)
        ok, rejected = self.bundle.check_rows(frame[~bad])
        return ok, pd.concat([refused, rejected]).sort_index(kind="stable")

    def _column_problems(self, name: str, column: pd.Series) -> list[tuple[str, np.ndarray]]:
        """`value_problem` for a column, judged once per distinct value (categories repeat)."""
        kind = column.dtype.kind
        if kind == "b" or str(column.dtype) == "boolean":
            if name in self.numbers:
                return [(f"wrong_type:{name}", column.notna().to_numpy(dtype=bool))]
            return []
        if kind in "iufcmM":
            return []
        if isinstance(column.dtype, pd.StringDtype):  # text (as Parquet and CSV give it)
            return self._text_problems(name, column)
        try:
            codes, uniques = pd.factorize(column, use_na_sentinel=True)
            values = list(uniques)
        except TypeError:  # unhashable values (objects, lists): judge each one
            codes, values = np.arange(len(column)), column.tolist()
        verdicts = [self.value_problem(name, v) for v in values]
        out = []
        if name in self.numbers:  # factorize takes True for 1 (equal, same hash): look again
            flags = np.fromiter((type(v) is bool or type(v) is np.bool_
                                 for v in column.to_numpy(dtype=object)), dtype=bool,
                                count=len(column))
            if flags.any():  # the other rows of a distinct True hold 1 (fine as a number)
                verdicts = [None if type(v) is bool or type(v) is np.bool_ else verdict
                            for v, verdict in zip(values, verdicts, strict=True)]
                codes = np.where(flags, len(values), codes)
                values, verdicts = [*values, True], [*verdicts, f"wrong_type:{name}"]
        for label in sorted({v for v in verdicts if v is not None}):
            distinct = np.fromiter((v == label for v in verdicts), dtype=bool, count=len(values))
            rows = np.zeros(len(column), dtype=bool)
            known = codes >= 0
            rows[known] = distinct[codes[known]]
            out.append((label, rows))
        return out

    def _text_problems(self, name: str, column: pd.Series) -> list[tuple[str, np.ndarray]]:
        """`value_problem` for a text column as two Arrow kernels over every value: a batch
        column of ids or timestamps has as many distinct values as rows, too many to judge one
        by one. Too long wins over control characters, as in `value_problem`."""
        import pyarrow as pa
        import pyarrow.compute as pc

        values = pa.array(column, from_pandas=True)
        n, limit = len(values), self.limits[name]
        # the cheap bounds first (bytes, never fewer than characters), each value judged only
        # when they cannot clear the whole column
        if (pc.max(pc.binary_length(values)).as_py() or 0) <= limit:
            long = np.zeros(n, dtype=bool)
        else:
            long = pc.fill_null(pc.greater(pc.utf8_length(values), limit), False)
            long = long.to_numpy(zero_copy_only=False)
        if _printable_ascii(values):
            control = np.zeros(n, dtype=bool)
        else:
            control = pc.fill_null(pc.match_substring_regex(values, CONTROL.pattern), False)
            control = control.to_numpy(zero_copy_only=False) & ~long
        return [(label, rows) for label, rows in ((f"control_characters:{name}", control),
                                                  (f"too_long:{name}", long)) if rows.any()]


def _printable_ascii(values) -> bool:
    """Whether the text bytes of an Arrow string array hold only printable ASCII (0x20-0x7e),
    read straight from its data buffers with numpy: then no value has a control character.
    False only means "look value by value" (the buffer may hold bytes outside the array)."""
    import pyarrow as pa

    for chunk in values.chunks if isinstance(values, pa.ChunkedArray) else [values]:
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            return False
        data = chunk.buffers()[2]
        if data is not None and data.size:
            raw = np.frombuffer(data, dtype=np.uint8)
            if ((raw < 0x20) | (raw > 0x7E)).any():
                return False
    return True
