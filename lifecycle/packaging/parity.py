"""The checks the package stage runs before it lets a bundle stand: ONNX against the skops
Pipeline (`compare_engines`, on the validation split plus `edge_rows`), and the serving record
path against the batch frame path (`compare_paths`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lifecycle import features
from lifecycle.contract import Contract
from lifecycle.packaging.rows import NUMBER_TYPES, plain_value
from lifecycle.packaging.runtime import Bundle


def edge_rows(base: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Synthetic rows the ONNX export must score like sklearn: unseen categories, missing
    values (also where the contract forbids them: the imputer must still agree), and numbers
    at the ends of their declared ranges. Built from the first row of `base`."""
    row = base.iloc[[0]].reset_index(drop=True)
    rows = []
    categorical = features.categorical_sources(contract)
    numeric = [c for c in contract.feature_columns if contract.columns[c].type in NUMBER_TYPES]
    for name in categorical:
        rows.append(row.assign(**{name: "__unseen_category__"}))
    rows.append(row.assign(**{c: "__unseen_category__" for c in categorical}))
    rows.append(row.assign(**{c: None for c in contract.feature_columns
                              if contract.columns[c].nullable}))
    rows.append(row.assign(**{c: None for c in numeric}))
    rows.append(row.assign(**{c: None for c in contract.feature_columns}))
    for end in ("min", "max"):
        values = {c: getattr(contract.columns[c], end) for c in numeric
                  if getattr(contract.columns[c], end) is not None}
        if values:
            rows.append(row.assign(**values))
    out = pd.concat(rows, ignore_index=True)
    for name in contract.feature_columns:
        out[name] = out[name].astype(base[name].dtype)
    return out


def compare_engines(bundle: Bundle, frame: pd.DataFrame, tolerance: float) -> dict:
    """ONNX against sklearn on the same rows. Classification: largest absolute probability
    difference, and rows whose label differs although sklearn's probability is further than
    `tolerance` from the threshold (binary) or its top two classes are further apart than
    `tolerance` (multiclass). Regression: largest difference relative to max(1, |value|)."""
    if bundle.engine != "onnx":  # no ONNX export: the Pipeline is the only engine
        return {"rows": len(frame), "max_difference": 0.0, "label_mismatches": 0,
                "tolerance": tolerance, "ok": True,
                "skipped": bundle.inference["onnx"].get("unavailable", "no ONNX")}
    reference, fast = bundle.scores(frame, "sklearn"), bundle.scores(frame, "onnx")
    if bundle.task == "regression":
        diff = np.abs(fast - reference) / np.maximum(1.0, np.abs(reference))
        return {"rows": len(frame), "max_difference": float(diff.max(initial=0)),
                "label_mismatches": 0, "tolerance": tolerance,
                "ok": bool(diff.max(initial=0) <= tolerance)}
    diff = float(np.abs(fast - reference).max(initial=0))
    a, b = bundle.decide(reference)["prediction"], bundle.decide(fast)["prediction"]
    differ = a != b
    if bundle.task == "binary":
        near = np.abs(reference[:, 1] - bundle.threshold) <= tolerance
    else:
        top2 = np.sort(reference, axis=1)[:, -2:]
        near = (top2[:, 1] - top2[:, 0]) <= tolerance
    return {"rows": len(frame), "max_difference": diff,
            "label_mismatches": int((differ & ~near).sum()),
            "label_mismatches_near_threshold": int((differ & near).sum()),
            "tolerance": tolerance, "ok": bool(diff <= tolerance and not (differ & ~near).any())}


def compare_paths(bundle: Bundle, frame: pd.DataFrame) -> dict:
    """The serving fast path against the frame path on the same rows: `check_records` must
    accept the rows `check_rows` accepts, and `predict_records` must match `predict`."""
    ok, _ = bundle.check_rows(frame)
    records = [{k: plain_value(v) for k, v in row.items()} for row in frame.to_dict("records")]
    ok_records, _ = bundle.check_records(records)
    if len(ok_records) != len(ok):
        return {"rows": len(frame), "accepted": len(ok), "accepted_as_records": len(ok_records),
                "max_difference": None, "ok": False}
    expected = bundle.scores(ok, "onnx")
    got = bundle.predict_records(ok_records)
    key = "prediction" if bundle.task == "regression" else "probability"
    reference = expected if bundle.task == "regression" else bundle.decide(expected)[key]
    diff = float(np.abs(np.array([r[key] for r in got], dtype=np.float64) - reference)
                 .max(initial=0))
    return {"rows": len(frame), "accepted": len(ok), "accepted_as_records": len(ok_records),
            "max_difference": diff, "ok": diff == 0.0}

