"""A monitoring run: every window judged by every check, then the summary DVC tracks.

`judge` gives the windows of `results.json` ({index, start, end, n, model_version, checks});
`summary` the scalars of `monitoring/metrics.json`; `timeline` the plot rows (one per window,
one column per check and target) that `dvc plots` draws.
"""

from __future__ import annotations

import logging

from lifecycle.monitoring.checks import CHECKS

log = logging.getLogger("lifecycle.monitoring")

# the target that speaks for a whole check in a window (others: any target's drift)
DATASET_TARGET = {"data_drift": "dataset", "multivariate_drift": "dataset",
                  "prediction_drift": "score", "data_quality": "dataset"}


def judge(windows, reference, params, checks: dict | None = None) -> list[dict]:
    """[{index, start, end, n, model_version, checks: [CheckResult dicts]}] per window."""
    checks = checks or CHECKS
    out = []
    for window in windows:
        results = []
        for name, check in checks.items():
            results += [r.as_dict() for r in check(window, reference, getattr(params, name))]
        out.append({**window.header(), "checks": results})
    return out


def check_verdict(results: list[dict], check: str) -> str | None:
    """One verdict per check and window: its dataset-level target, or any target's drift."""
    mine = [r for r in results if r["check"] == check]
    if not mine:
        return None
    target = DATASET_TARGET.get(check)
    chosen = [r for r in mine if r["target"] == target] if target else mine
    verdicts = {r["verdict"] for r in chosen or mine}
    if "drift" in verdicts:
        return "drift"
    return "ok" if "ok" in verdicts else "insufficient"


def summary(version: str, judged: list[dict], alerts: list[dict], rows: dict) -> dict:
    """monitoring/metrics.json: what `dvc metrics show/diff` compares between runs."""
    latest = {}
    if judged:
        for r in judged[-1]["checks"]:
            if r["target"] in ("dataset", "score") or r["check"] in (
                    "performance", "performance_estimate", "concept_drift"):
                latest.setdefault(r["check"], {})[r["target"]] = {
                    k: r[k] for k in ("statistic", "value", "p_value", "verdict")}
    drift_windows = {}
    for check in CHECKS:
        verdicts = [check_verdict(w["checks"], check) for w in judged]
        drift_windows[check] = sum(v == "drift" for v in verdicts)
    return {"bundle_version": version, "windows_judged": len(judged),
            "alerts_fired": len(alerts), "rows": rows, "drift_windows": drift_windows,
            "latest": latest}


def timeline(judged: list[dict]) -> list[dict]:
    """Plot rows: window, then `check.target` -> value for the targets worth drawing."""
    rows = []
    for w in judged:
        row = {"window": w["index"], "n": w["n"]}
        for r in w["checks"]:
            if r["verdict"] == "insufficient":
                continue
            if r["check"] == "data_drift" and r["target"] != "dataset":
                row.setdefault("data_drift.max_effect", 0.0)
                row["data_drift.max_effect"] = max(row["data_drift.max_effect"],
                                                   r["effect"] or 0.0)
                continue
            if r["check"] == "data_quality" and r["target"] != "dataset":
                continue
            row[f"{r['check']}.{r['target']}"] = r["value"]
        rows.append(row)
    return rows
