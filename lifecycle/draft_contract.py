"""Draft a data contract from a sample of your data: `make contract DATA=path`.

    python -m lifecycle.draft_contract PATH [--output contract.draft.yaml] [--id COL] [--target COL]

pandera's schema inference gives each column's type, nullability and observed range; text
columns with few distinct values become categories with their allowed values. The draft is a
starting point in this project's contract format (see contract.yaml): review every line, widen
the observed ranges to what is plausible, then save it as contract.yaml.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd
import yaml

from lifecycle.contract import ColumnSpec, Contract, load_contract
from lifecycle.errors import StageError

MAX_CATEGORIES = 20          # a text column with at most this many distinct values is a category
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}"
                      r"([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")
# whole column names that hold personal data (`phone` yes, `phone_service` no)
PERSONAL = re.compile(r"(e_?mail|phone|mobile|tel|(first_?|last_?|full_?|sur)?name"
                      r"|(street_?)?address|birth_?date|date_of_birth|dob|ssn|passport|iban|ip)"
                      r"(_?(number|address))?", re.IGNORECASE)
EVENT_TIME = re.compile(r"updated|modified|changed|event|timestamp", re.IGNORECASE)
TARGET_NAMES = ("target", "label", "y", "class", "outcome", "churn")


def read_sample(path: str) -> pd.DataFrame:
    """Read a CSV, Parquet or JSON Lines file (or a glob of them) the way `collect` does."""
    from lifecycle.params import FilesSource
    from lifecycle.sources import read_files

    frame = read_files(FilesSource(kind="files", path=path))
    if frame.empty:
        raise StageError(f"{path} holds no rows to draft a contract from")
    return guess_types(frame)


def guess_types(frame: pd.DataFrame) -> pd.DataFrame:
    """collect keeps a text file's values as text; a draft guesses which text columns hold
    numbers (never one with a leading zero, like an id `0042`: that stays text)."""
    out = frame.copy()
    for name, values in frame.items():
        if not isinstance(values.dtype, pd.StringDtype):
            continue
        present = values.dropna()
        numbers = pd.to_numeric(present, errors="coerce")
        if len(present) and numbers.notna().all() and not present.str.match(r"^[+-]?0\d").any():
            numbers = pd.to_numeric(values, errors="coerce")
            # int only when written as integers: "131.0" is a float column's whole value
            integers = present.str.fullmatch(r"[+-]?\d+").all()
            out[name] = numbers.astype("Int64" if integers else "float64")
        elif len(present) and present.str.lower().isin(["true", "false"]).all():
            out[name] = values.str.lower().map({"true": True, "false": False}).astype("boolean")
    return out


def column_specs(frame: pd.DataFrame) -> dict[str, ColumnSpec]:
    """Type, nullability and range of each column, from pandera's inferred schema."""
    import pandera.pandas as pa

    inferred = pa.infer_schema(frame)
    specs = {}
    for name, column in inferred.columns.items():
        values = frame[name]
        kind = _contract_type(values, column.dtype.type)
        spec = {"type": kind, "nullable": bool(column.nullable)}
        if kind in ("int", "float"):
            stats = {check.name: check.statistics for check in column.checks}
            low = stats.get("greater_than_or_equal_to", {}).get("min_value")
            high = stats.get("less_than_or_equal_to", {}).get("max_value")
            spec |= {"min": _number(low, kind), "max": _number(high, kind)}
        if kind == "category":
            spec["allowed"] = sorted(str(v) for v in values.dropna().unique())
        specs[str(name)] = ColumnSpec(**{k: v for k, v in spec.items() if v is not None})
    return specs


def _contract_type(values: pd.Series, dtype) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        # float even when every value seen is whole: the next one may be 131.5, and the API
        # would refuse it (a source that types the column as integer gives int above)
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    text = values.dropna().astype(str)
    if len(text) and text.str.match(ISO_DATE).all():
        return "datetime"
    distinct = text.nunique()
    if 0 < distinct <= MAX_CATEGORIES and distinct < len(text) / 2:
        return "category"
    return "string"


def _number(value, kind: str):
    if value is None or pd.isna(value):
        return None
    return int(value) if kind == "int" else float(value)


def draft(frame: pd.DataFrame, dataset: str, id_column: str | None = None,
          target: str | None = None, task: str | None = None, positive: str | None = None,
          guess_positive: bool = True) -> tuple[Contract, list[str]]:
    """A contract for `frame`, and the guesses the user should check.

    The id is never range-bounded (new entities have new ids). Text columns with mostly
    distinct values and dates are metadata, not features. The target follows `task` (guessed
    from the column when None): a category for classification, with `positive` the positive
    class of a binary task (guessed as the rarer class when `guess_positive`, else required)."""
    specs = column_specs(frame)
    guesses = []
    if id_column is None:
        id_column = _guess_id(frame)
        guesses.append(f"id: {id_column} (pass --id)")
    if target is None:
        target = next((c for c in frame.columns if str(c).lower() in TARGET_NAMES),
                      frame.columns[-1])
        guesses.append(f"target: {target} (pass --target)")
    for name in (id_column, target):
        if name not in specs:
            raise StageError(f"column '{name}' is not in the data: {', '.join(specs)}")
    id_spec = specs[id_column]
    specs[id_column] = ColumnSpec(type=id_spec.type if id_spec.type in ("int", "string")
                                  else "string", nullable=False)
    for name, spec in specs.items():
        text = spec.type == "string" and frame[name].nunique() > len(frame) / 2
        if name not in (id_column, target) and (spec.type == "datetime" or text):
            specs[name] = spec.model_copy(update={"role": "metadata"})
    event_time = next((c for c, s in specs.items()
                       if s.type == "datetime" and EVENT_TIME.search(c)), None)
    target_spec = specs[target]
    classes = sorted(frame[target].dropna().astype(str).unique())
    task = task or guess_task(frame[target], target_spec.type)
    if task != "regression":
        if target_spec.type != "category":
            guesses.append(f"target {target} turned into a category")
        specs[target] = ColumnSpec(type="category", nullable=target_spec.nullable,
                                   allowed=classes)
    elif target_spec.type not in ("int", "float"):
        raise StageError(f"target '{target}' is {target_spec.type}, not a number: a regression "
                         "needs a numeric target (TASK=binary or multiclass?)")
    if task == "binary" and len(classes) != 2:
        raise StageError(f"target '{target}' has {len(classes)} classes, a binary task needs 2")
    if task != "binary":
        positive = None
    elif positive is not None and str(positive) not in classes:
        raise StageError(f"positive class {positive!r} is not a value of '{target}' "
                         f"({', '.join(classes)})")
    elif positive is None and guess_positive:
        # the rarer class is usually the one to act on (churn, fraud, default)
        positive = str(frame[target].astype(str).value_counts().idxmin())
        guesses.append(f"positive class: {positive} (the rarer one)")
    elif positive is None:
        raise StageError(f"name the positive class of '{target}': one of {', '.join(classes)}")
    personal = [id_column, *(c for c in specs if c != id_column and PERSONAL.fullmatch(c))]
    contract = Contract(
        dataset=dataset, id=id_column, event_time=event_time,
        target={"column": target, "positive": None if positive is None else str(positive)},
        freshness={"max_age_days": 90} if event_time else None,
        personal_data=personal, columns=specs,
    )
    return contract, guesses


def guess_task(values: pd.Series, kind: str) -> str:
    """binary | multiclass | regression from the target column: numbers with many distinct
    values are a regression, two classes binary, a few more multiclass."""
    distinct = values.nunique()
    if kind == "float" or (kind == "int" and distinct > MAX_CATEGORIES):
        return "regression"
    return "binary" if distinct == 2 else "multiclass"


def _guess_id(frame: pd.DataFrame) -> str:
    unique = [c for c in frame.columns if frame[c].notna().all() and frame[c].is_unique]
    named = [c for c in unique if re.search(r"(^|_)id$|^id", str(c), re.IGNORECASE)]
    if not (named or unique):
        raise StageError("no column is unique and complete: name the id with --id")
    return str((named or unique)[0])


def to_yaml(contract: Contract, source: str, guesses: list[str]) -> str:
    """The contract as YAML in contract.yaml's layout: one line per column."""
    top = _tidy(contract.model_dump(exclude={"columns", "rules"}, exclude_none=True))
    top["target"] = {k: v for k, v in top["target"].items() if v is not None}
    lines = [
        f"# Drafted from {source} by `python -m lifecycle.draft_contract`.",
        "# Review every line: ranges are the observed ones (widen them to what is plausible),",
        "# categories list only the values seen, `missing: impute | drop` is yours to choose.",
        *(f"# GUESSED {g}" for g in guesses),
        "",
        yaml.safe_dump(top, sort_keys=False, allow_unicode=True).rstrip(),
        "",
        "columns:",
    ]
    width = max(len(yaml.safe_dump(n).split("\n")[0]) for n in contract.columns)
    for name, spec in contract.columns.items():
        fields = spec.model_dump(exclude_defaults=True) | {"type": spec.type,
                                                           "nullable": spec.nullable}
        fields = {k: fields[k] for k in ("type", "nullable", "allowed", "min", "max", "role")
                  if k in fields}
        key = yaml.safe_dump(name).split("\n")[0] + ":"
        if spec.type == "int":
            fields = _tidy(fields)
        flow = yaml.safe_dump(fields, default_flow_style=True, width=10_000, sort_keys=False)
        lines.append(f"  {key:<{width + 1}} {flow.strip()}")
    lines += ["", "rules: []   # cross-field checks, e.g. - {name: ..., check: 'a <= b'}", ""]
    return "\n".join(lines)


def _tidy(value):
    """Whole floats as ints (`max: 1`, not `max: 1.0`): the draft reads like a hand-written one."""
    if isinstance(value, dict):
        return {k: _tidy(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", help="a CSV, Parquet or JSON Lines file (or a glob)")
    parser.add_argument("--output", default="contract.draft.yaml")
    parser.add_argument("--id", dest="id_column", help="the column that identifies a row")
    parser.add_argument("--target", help="the column to predict")
    parser.add_argument("--dataset", help="a name for the data (default: the file's stem)")
    args = parser.parse_args(argv)
    try:
        frame = read_sample(args.path)
        contract, guesses = draft(frame, args.dataset or Path(args.path).stem.strip("*") or "data",
                                  args.id_column, args.target)
        Path(args.output).write_text(to_yaml(contract, args.path, guesses))
        load_contract(args.output)  # what we wrote must read back as a valid contract
    except StageError as exc:
        print(f"draft_contract: error: {exc}", file=sys.stderr)
        return 1
    for guess in guesses:
        print(f"draft_contract: guessed {guess}", file=sys.stderr)
    print(f"draft_contract: {len(contract.columns)} columns from {len(frame)} rows of {args.path}"
          f" -> {args.output}; review it, then save it as contract.yaml", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
