"""Production labels as training data: the inference registry's answers joined with their
outcomes, turned back into rows shaped like the source's, for `collect`.

What a production row is: one served answer (not a shadow's) whose outcome arrived, with the
inputs exactly as the registry keeps them (personal data already masked there: the id is a
stable hash, joinable, not readable), the outcome as the target and the answer's time as the
event time. `validate`, `preprocess` and `split` then judge these rows like any source's: a bad
one is quarantined with its reason.

Two things the registry does not hold are filled, and the manifest says so:
- the event time column (`contract.event_time`) is the answer's time: the inputs were true then;
- metadata the registry keeps masked and the contract requires (the demo's `signup_date`): a
  masked date is no date, so a date column that is not a feature is derived as the answer's
  day minus `tenure` months when the contract has a `tenure` column, else left empty (and
  quarantined by validate when not nullable). Such columns are never features.

Which rows: answers up to `until` (newest first excluded: the newest `judge_rows` labelled
answers are the window the gate judges challenger and champion on, so no model trains on them),
within `window_days` before `until` when set.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lifecycle.errors import StageError

PRODUCTION_ID = "__production__"  # marks a production row in the manifest's counts


def labelled_answers(export: str | Path | pd.DataFrame, until=None,
                     window_days: float | None = None) -> pd.DataFrame:
    """Served answers with an outcome, oldest first (ties by request id), up to `until`."""
    if isinstance(export, pd.DataFrame):
        rows = export
    else:
        if not Path(export).is_file():
            raise StageError(f"registry export not found: {export} (run `make registry-export`)")
        rows = pd.read_parquet(export)
    rows = rows[(rows["role"] == "served") & rows["outcome"].notna()]
    created = pd.to_datetime(rows["created_at"], utc=True)
    if until is not None:
        end = pd.Timestamp(until)
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        keep = created <= end
        if window_days is not None:
            keep &= created > end - pd.Timedelta(days=window_days)
        rows, created = rows[keep], created[keep]
    rows = rows.assign(created_at=created)
    return rows.sort_values(["created_at", "request_id"], kind="stable").reset_index(drop=True)


def split_judge(answers: pd.DataFrame, judge_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(answers to train on, the newest `judge_rows` answers: the gate's window)."""
    if judge_rows >= len(answers):
        raise StageError(f"{len(answers)} labelled production answers, but the judge window "
                         f"alone needs {judge_rows} (collect.production.judge_rows) and "
                         "training needs more: wait for feedback or lower it")
    cut = len(answers) - judge_rows
    return answers.iloc[:cut].reset_index(drop=True), answers.iloc[cut:].reset_index(drop=True)


def as_source_rows(answers: pd.DataFrame, contract) -> pd.DataFrame:
    """Answers as rows of the source's columns (the contract's), personal data still masked."""
    inputs = pd.DataFrame.from_records([json.loads(t) for t in answers["inputs"]],
                                       index=answers.index)
    out = pd.DataFrame(index=answers.index)
    when = pd.to_datetime(answers["created_at"], utc=True)
    for name, spec in contract.columns.items():
        if name == contract.target.column:
            out[name] = answers["outcome"].astype(object)
        elif name == contract.event_time:
            fmt = spec.format if isinstance(spec.format, str) and "%" in spec.format \
                else "%Y-%m-%dT%H:%M:%S"
            out[name] = when.dt.strftime(fmt)
        elif name in inputs.columns and not _masked_date(inputs[name], spec):
            out[name] = inputs[name]
        elif spec.type == "datetime" and "tenure" in inputs.columns:
            months = pd.to_numeric(inputs["tenure"], errors="coerce").fillna(0)
            day = (when.dt.tz_localize(None).dt.normalize()
                   - pd.to_timedelta(np.round(months * 30.4375), unit="D"))
            fmt = spec.format if isinstance(spec.format, str) and "%" in spec.format \
                else "%Y-%m-%d"
            out[name] = day.dt.strftime(fmt)
        else:
            out[name] = None
    if contract.id and out[contract.id].isna().any():
        missing = out[contract.id].isna()
        out.loc[missing, contract.id] = "request:" + answers.loc[missing, "request_id"]
    return out.reset_index(drop=True)


def _masked_date(values: pd.Series, spec) -> bool:
    return spec.type == "datetime" and values.astype("string").str.startswith("masked:").any()


def production_frame(spec, contract) -> tuple[pd.DataFrame, dict]:
    """(source-shaped training rows from the registry export, what was read: for the
    manifest). `spec`: collect.production."""
    answers = labelled_answers(spec.export, spec.until, spec.window_days)
    train, judge = split_judge(answers, spec.judge_rows)
    rows = as_source_rows(train, contract)
    info = {"export": str(spec.export), "until": None if spec.until is None else str(spec.until),
            "window_days": spec.window_days, "labelled_answers": len(answers),
            "rows": len(rows), "judge_rows": len(judge),
            "judge_first": None if judge.empty else judge["created_at"].iloc[0].isoformat(),
            "filled": {"event_time": "answer time", "derived_dates": "answer day - tenure months"}}
    return rows, info


def combine(original: pd.DataFrame | None, production: pd.DataFrame) -> pd.DataFrame:
    """The original rows then the production rows, in the original's column order; a column
    only one side has is empty on the other."""
    if original is None:
        return production
    columns = list(original.columns) + [c for c in production.columns
                                        if c not in original.columns]
    return pd.concat([original, production], ignore_index=True)[columns]
