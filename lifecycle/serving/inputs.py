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
            limit = self.limits.get(name)
            if limit is None:  # not declared
                if self.extra == "error":
                    found.append(f"undeclared:{name}")
                else:
                    dropped = True
                continue
            kind = type(value)
            if value is None or kind is int or kind is float:
                continue
            if kind is str:
                if len(value) > limit:
                    found.append(f"too_long:{name}")
                elif CONTROL.search(value):
                    found.append(f"control_characters:{name}")
            elif kind is bool:
                if name in self.numbers:
                    found.append(f"wrong_type:{name}")
            else:  # objects, lists: never a column's value
                found.append(f"wrong_type:{name}")
        if dropped and not found:
            record = {k: v for k, v in record.items() if k in self.limits}
        return found, record

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
        out = []
        kind = column.dtype.kind
        if kind == "b" or str(column.dtype) == "boolean":
            if name in self.numbers:
                out.append((f"wrong_type:{name}", column.notna().to_numpy(dtype=bool)))
            return out
        if kind in "iufcmM":
            return out
        if kind == "O":
            types = column.map(type)
            nested = ~types.isin([str, int, float, bool, type(None)]) & column.notna()
            if name in self.numbers:
                nested |= types.isin([bool])
            if nested.any():
                out.append((f"wrong_type:{name}", nested.to_numpy(dtype=bool)))
        text = column.astype("string") if kind == "O" else column
        too_long = (text.str.len() > self.limits[name]).fillna(False).to_numpy(dtype=bool)
        control = text.str.contains(CONTROL, na=False).to_numpy(dtype=bool) & ~too_long
        out += [(f"too_long:{name}", too_long), (f"control_characters:{name}", control)]
        return out
