"""Holding data to its contract: the pandera schema, per-row verdicts with reasons, and the four
data-quality dimensions (accuracy, completeness, consistency, timeliness)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

from lifecycle.cleaning import make_coherent, parse_datetimes
from lifecycle.contract import Contract, mask
from lifecycle.errors import StageError, clip, clip_names

PANDAS_DTYPES = {"int": "Int64", "float": "float64", "bool": "boolean", "string": "string",
                 "category": "string", "datetime": "datetime64[us]"}


def pandera_schema(contract: Contract) -> pa.DataFrameSchema:
    """The contract as a pandera schema over coherent (already typed) data."""
    columns = {}
    for name, spec in contract.columns.items():
        checks = []
        if spec.allowed is not None:
            checks.append(pa.Check.isin(spec.allowed))
        if spec.min is not None:
            checks.append(pa.Check.ge(spec.min))
        if spec.max is not None:
            checks.append(pa.Check.le(spec.max))
        columns[name] = pa.Column(PANDAS_DTYPES[spec.type], checks, nullable=spec.nullable)
    return pa.DataFrameSchema(columns, name=contract.dataset)


@dataclass
class Verdict:
    valid: pd.DataFrame        # coherent rows that meet the contract
    quarantine: pd.DataFrame   # rows that do not, as received, with `failed_checks`
    first_reason: pd.Series    # per quarantined row, the first check it failed
    scores: dict               # the four dimensions and the detail behind them
    counts: dict               # what the scores are made of; adds up over parts of a table


def check_columns(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """A missing declared column is an error; an undeclared one too, unless the contract says
    `extra_columns: ignore` (then it is dropped)."""
    missing = [c for c in contract.columns if c not in frame.columns]
    if missing:
        raise StageError(f"column(s) missing from the source: {clip_names(missing)} "
                         "(declared in the contract)")
    extra = [c for c in frame.columns if c not in contract.columns]
    if extra and contract.extra_columns == "error":
        raise StageError(f"unexpected column(s) not in the contract: {clip_names(extra)} "
                         "(declare them, or set extra_columns: ignore)")
    return frame.drop(columns=extra)


def judge(raw: pd.DataFrame, contract: Contract, as_of: pd.Timestamp,
          conflicting_ids: set | None = None) -> Verdict:
    """Every row of `raw` either meets the contract or is quarantined with its reasons.

    `conflicting_ids`: when `raw` is one part of a larger table, the ids that table holds with
    differing content (None: found in `raw` itself)."""
    raw = check_columns(raw, contract)
    coherent, unreadable = make_coherent(raw, contract)
    failures: list[tuple[str, pd.Series]] = []   # (reason, rows failing), in reporting order
    for name, spec in contract.columns.items():
        wrong = unreadable[name]
        if len(spec.formats) > 1:   # a date two formats read differently: say so
            ambiguous = parse_datetimes(raw[name], spec)[1]
            failures.append((f"ambiguous_date:{name}", ambiguous))
            wrong = wrong & ~ambiguous
        failures.append((f"wrong_type:{name}", wrong))
    failures += _schema_failures(coherent, contract, unreadable)
    rule_failures = _rule_failures(coherent, contract, as_of)
    future = _future_rows(coherent, contract, as_of)
    if future is not None:
        failures.append((f"future_timestamp:{contract.event_time}", future))
    failures += rule_failures

    first = pd.Series(pd.NA, index=raw.index, dtype="string")
    for reason, rows in failures:
        first = first.mask(first.isna() & rows, reason)
    bad = first.notna()
    quarantine = raw[bad].copy()
    is_bad = bad.to_numpy()
    failed = np.column_stack([rows.to_numpy(dtype=bool)[is_bad] for _, rows in failures]) \
        if failures else np.zeros((int(is_bad.sum()), 0), bool)
    reasons = [reason for reason, _ in failures]
    quarantine["failed_checks"] = ["; ".join(r for r, hit in zip(reasons, row, strict=True) if hit)
                                   for row in failed.tolist()]
    for column in contract.personal_data:
        if column != contract.id:
            quarantine[column] = mask(quarantine[column].tolist())
    quarantine = quarantine.astype({c: "string" for c in raw.columns if raw[c].dtype == object})

    conflicting = (_conflicting_ids(coherent, contract) if conflicting_ids is None
                   else coherent[contract.id].isin(conflicting_ids).fillna(False))
    counts = score_counts(raw, coherent, unreadable, contract, as_of, failures, rule_failures,
                          future, conflicting)
    return Verdict(coherent[~bad], quarantine, first[bad], scores_from_counts(counts, contract),
                   counts)


def _schema_failures(coherent, contract, unreadable) -> list[tuple[str, pd.Series]]:
    try:
        pandera_schema(contract).validate(coherent, lazy=True)
        return []
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    row_level = cases[cases["index"].notna()]
    if len(row_level) < len(cases):
        first = cases[cases["index"].isna()].iloc[0]
        raise StageError(
            f"column {clip(first['column'], 40)} fails {first['check']}: "
            f"{clip(first['failure_case'])}")
    out = []
    for (column, check), group in row_level.groupby(["column", "check"], sort=False):
        rows = pd.Series(False, index=coherent.index)
        rows.loc[group["index"].astype(coherent.index.dtype).to_numpy()] = True
        kind = _check_kind(str(check))
        if kind == "null_not_allowed":
            rows &= ~unreadable[column]  # already reported as wrong_type
        out.append((f"{kind}:{column}", rows))
    return out


def _check_kind(check: str) -> str:
    if check.startswith(("greater_than", "less_than", "in_range")):
        return "out_of_range"
    if check.startswith("isin"):
        return "unknown_category"
    if check == "not_nullable":
        return "null_not_allowed"
    return check


def _rule_failures(coherent, contract, as_of) -> list[tuple[str, pd.Series]]:
    """Rows breaking each rule; a rule may compare with `as_of` (validate's moment)."""
    out = []
    for rule in contract.rules:
        columns = contract.rule_columns(rule)
        judged = coherent[columns].notna().all(axis=1)
        numeric = coherent[columns].astype({c: "float64" for c in columns
                                            if str(coherent[c].dtype) in ("Int64", "boolean")})
        try:
            holds = numeric.eval(rule.check, resolvers=({"as_of": as_of},)).astype(bool)
        except Exception as exc:  # noqa: BLE001 - a broken rule is a contract error
            raise StageError(f"contract rule '{rule.name}' cannot be evaluated: "
                             f"{clip(exc, 200)}") from exc
        out.append((f"rule:{rule.name}", judged & ~holds))
    return out


def _future_rows(coherent, contract, as_of):
    if not contract.event_time or not contract.freshness:
        return None
    limit = as_of + pd.Timedelta(hours=contract.freshness.future_tolerance_hours)
    return (coherent[contract.event_time] > limit).fillna(False)


def score_counts(raw, coherent, unreadable, contract, as_of, failures, rule_failures, future,
                 conflicting) -> dict:
    """The counts behind the four scores; `add_counts` sums them over parts of a table."""
    value_failure = pd.Series(False, index=raw.index)
    for reason, rows in failures:
        if reason.split(":")[0] in ("wrong_type", "ambiguous_date", "out_of_range",
                                    "unknown_category", "future_timestamp"):
            value_failure |= rows
    nulls = coherent[list(contract.columns)].isna() & ~unreadable[list(contract.columns)]
    inconsistent = conflicting.copy()
    for _, rows in rule_failures:
        inconsistent |= rows
    counts = {"rows": len(raw), "value_failures": int(value_failure.sum()),
              "nulls": {c: int(v) for c, v in nulls.sum().items()},
              "inconsistent": int(inconsistent.sum()), "conflicting": int(conflicting.sum()),
              "failures": {reason: int(rows.sum()) for reason, rows in failures},
              "rule_failures": {reason: int(rows.sum()) for reason, rows in rule_failures}}
    if contract.event_time and contract.freshness:
        stamps = coherent[contract.event_time]
        oldest_allowed = as_of - pd.Timedelta(days=contract.freshness.max_age_days)
        fresh = (stamps >= oldest_allowed) & ~(future if future is not None else False)
        counts["time"] = {"as_of": as_of.isoformat(), "fresh": int(fresh.sum()),
                          "stamped": int(stamps.notna().sum()),
                          "stale_rows": int((stamps < oldest_allowed).sum()),
                          "future_rows": int(future.sum()) if future is not None else 0,
                          "newest": stamps.max(), "oldest": stamps.min()}
    return counts


def add_counts(parts: list[dict]) -> dict:
    """The counts of a table from the counts of its parts (rows split in any way)."""
    def add(a, b):
        if isinstance(a, dict):
            return {k: add(a[k], b[k]) if k in b else a[k] for k in a} | \
                {k: v for k, v in b.items() if k not in a}
        return a + b

    total = parts[0]
    for part in parts[1:]:
        times = [t for t in (total.get("time"), part.get("time")) if t]
        total = add({k: v for k, v in total.items() if k != "time"},
                    {k: v for k, v in part.items() if k != "time"})
        if times:
            merged = dict(times[0])
            if len(times) == 2:
                for key in ("fresh", "stamped", "stale_rows", "future_rows"):
                    merged[key] = times[0][key] + times[1][key]
                stamps = pd.Series([t[k] for t in times for k in ("newest", "oldest")])
                merged["newest"], merged["oldest"] = stamps.max(), stamps.min()
            total["time"] = merged
    return total


def scores_from_counts(counts: dict, contract: Contract) -> dict:
    """The four dimensions and the detail behind them."""
    n = max(counts["rows"], 1)
    timeliness, fresh_detail = 1.0, {}
    if "time" in counts:
        t = counts["time"]
        timeliness = float(t["fresh"] / max(t["stamped"], 1))
        fresh_detail = {"as_of": t["as_of"], "max_age_days": contract.freshness.max_age_days,
                        "newest": _iso(t["newest"]), "oldest": _iso(t["oldest"]),
                        "stale_rows": t["stale_rows"], "future_rows": t["future_rows"]}
    null_share = (pd.Series(counts["nulls"], dtype="float64") / n).round(6)
    return {
        "accuracy": round(1 - counts["value_failures"] / n, 6),
        "completeness": round(1 - sum(counts["nulls"].values()) / (n * len(contract.columns)),
                              6),
        "consistency": round(1 - counts["inconsistent"] / n, 6),
        "timeliness": round(timeliness, 6),
        "detail": {
            "rows": counts["rows"],
            "accuracy": {reason: k for reason, k in counts["failures"].items()
                         if k and not reason.startswith(("rule:", "null_not"))},
            "completeness": {c: float(v) for c, v in null_share.items() if v > 0},
            "consistency": {"conflicting_duplicate_ids": counts["conflicting"],
                            **counts["rule_failures"]},
            "timeliness": fresh_detail,
        },
    }


def _conflicting_ids(coherent, contract) -> pd.Series:
    """Rows whose id appears again with other content (not merely a newer version's time)."""
    ids = coherent[contract.id]
    repeated = ids.duplicated(keep=False) & ids.notna()
    if not repeated.any():
        return repeated
    subset = coherent.loc[repeated, [contract.id, *contract.content_columns]]
    variants = subset.drop_duplicates().groupby(contract.id).size()
    return ids.isin(variants[variants > 1].index) & repeated


def _iso(value):
    return None if pd.isna(value) else value.isoformat()


def gate(
    scores: dict, thresholds: dict, quarantined: int, rows: int, max_share: float
) -> list[str]:
    """The reasons the data fails its quality gate (empty: it passes)."""
    problems = [f"{dim} {scores[dim]:.4f} < {floor}" for dim, floor in thresholds.items()
                if scores[dim] < floor]
    if rows and quarantined / rows > max_share:
        problems.append(f"quarantined share {quarantined / rows:.4f} > {max_share}")
    return problems
