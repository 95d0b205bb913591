"""Monitoring test helpers: results in the shared format (docs/monitoring.md), built small."""

from __future__ import annotations

import datetime as dt


def check(check: str, target: str, value: float, verdict: str = "ok", *,
          statistic: str = "psi", threshold: float = 0.1, p_value: float | None = None,
          n_window: int = 1000, n_reference: int = 5000) -> dict:
    """One CheckResult."""
    return {"check": check, "target": target, "statistic": statistic, "value": value,
            "p_value": p_value, "effect": value, "threshold": threshold,
            "n_reference": n_reference, "n_window": n_window, "verdict": verdict}


def window(index: int, checks: list[dict], n: int = 1000, version: str = "v1") -> dict:
    """One judged window of an hour, starting at 2026-01-01 00:00 UTC + index hours."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=index)
    return {"index": index, "start": start.isoformat(),
            "end": (start + dt.timedelta(hours=1)).isoformat(), "n": n,
            "model_version": version, "checks": checks}
