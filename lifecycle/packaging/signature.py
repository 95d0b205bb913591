"""What the bundle says about its inputs and outputs: the ONNX inputs, the class labels, and the
signature (the fields the API accepts, with an example request)."""

from __future__ import annotations

import re

import pandas as pd

from lifecycle import features
from lifecycle.contract import Contract
from lifecycle.errors import StageError
from lifecycle.packaging.rows import plain_value

AS_OF = "as_of"  # the name rules use for validate's moment (lifecycle/quality.py)


def model_inputs(contract: Contract, derived: dict[str, str]) -> list[dict]:
    """The ONNX inputs, in `features.model_frame` column order."""
    numbers = [*features.numeric_columns(contract, derived),
               *features.indicator_columns(contract)]
    return ([{"name": c, "kind": "number"} for c in numbers]
            + [{"name": c, "kind": "text"} for c in features.categorical_columns(contract)])


def class_labels(contract: Contract, task: str, model) -> list[str] | None:
    """Labels of the model's probability columns; binary models predict 0/1 = (other, positive)."""
    if task == "regression":
        return None
    if task == "binary":
        if [int(c) for c in model.classes_] != [0, 1]:
            raise StageError(f"a binary model must predict 0/1, it has classes {model.classes_}")
        positive = contract.target.positive
        allowed = contract.columns[contract.target.column].allowed or []
        others = [a for a in allowed if a != positive]
        return [others[0] if len(others) == 1 else f"not {positive}", positive]
    return [str(c) for c in model.classes_]


def reads_as_of(check: str) -> bool:
    """Whether a rule compares with `as_of`, validate's moment: a request has no such moment
    (the day it arrives would decide its verdict), so serving leaves such rules to validate."""
    return AS_OF in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", check)


def signature(contract: Contract, unknown_category: str, example: dict | None = None) -> dict:
    """Input fields the API accepts: the id (for logging and sticky routing, never a feature)
    and the feature columns, with their declared type, nullability, categories and range; the
    contract's rules that read only those fields and not `as_of`."""
    fields = []
    for name in [contract.id, *contract.feature_columns]:
        spec = contract.columns[name]
        entry = {"name": name, "role": "id" if name == contract.id else "feature",
                 "type": spec.type, "nullable": spec.nullable, "required": not spec.nullable}
        if spec.allowed is not None:
            entry["allowed"] = list(spec.allowed)
        for end in ("min", "max"):
            bound = getattr(spec, end)
            if bound is not None:
                entry[end] = int(bound) if spec.type == "int" and bound == int(bound) else bound
        fields.append(entry)
    names = {f["name"] for f in fields}
    rules = [{"name": r.name, "check": r.check} for r in contract.rules
             if set(contract.rule_columns(r)) <= names and not reads_as_of(r.check)]
    out = {"id": contract.id, "fields": fields, "rules": rules,
           "unknown_category": unknown_category}
    if example is not None:
        out["example"] = example
    return out


def example_record(frame: pd.DataFrame, contract: Contract) -> dict:
    """A valid request for documentation and smoke tests: the first training row's features
    under a made-up id (no real identifier leaves the training data)."""
    row = frame.sort_values(contract.id, kind="stable").iloc[0]
    kind = contract.columns[contract.id].type
    record = {contract.id: 1_000_001 if kind == "int" else "example-0001"}  # the id's own type
    for name in contract.feature_columns:
        record[name] = plain_value(row[name])
    return record

