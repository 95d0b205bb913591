"""Judge a challenger bundle against the champion bundle on one labelled window.

The window's rows go through each bundle's own checks (a row either bundle refuses is left out
for both and counted), both score the same kept rows, and `gate.decide` applies the rule.
Binary classification only for the guardrails that need a positive class (calibration, the
segment's recall); the primary metric may be any metric of the task.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from lifecycle.evaluation import Predictions
from lifecycle.feedback import gate


def predictions(bundle, rows: pd.DataFrame, target: str) -> Predictions:
    """The bundle's Predictions on coherent rows whose `target` holds the true label."""
    scores = bundle.scores(rows)
    if bundle.task == "regression":
        return Predictions("regression", rows[target].to_numpy(float), np.asarray(scores))
    classes = tuple(bundle.classes)
    if bundle.task == "binary":
        y = (rows[target].astype(str).to_numpy() == str(classes[1])).astype(int)
        return Predictions("binary", y, scores[:, 1], (0, 1))
    return Predictions(bundle.task, rows[target].astype(str).to_numpy(), scores, classes)


def latency_p95_ms(champion, challenger, rows: pd.DataFrame, records: int = 50, rounds: int = 5,
                   seed: int = 0) -> tuple[float, float]:
    """(champion, challenger) p95 ms of single-record scoring (check + predict, in process).

    Measured interleaved, record by record, after a warm-up, and the median of `rounds` p95s
    kept: timed one after the other, a busy moment of a shared machine would fall on one model
    only and fail the guardrail by chance."""
    rng = np.random.default_rng(seed)
    sample = rows.iloc[rng.choice(len(rows), min(records, len(rows)), replace=False)]
    bundles = (champion, challenger)
    inputs = []
    for bundle in bundles:
        fields = [f["name"] for f in bundle.signature["fields"]]
        inputs.append(sample[fields].astype(object).where(sample[fields].notna(), None)
                      .to_dict("records"))

    def score(i: int, record: dict) -> float:
        start = time.perf_counter()
        ok, _ = bundles[i].check_records([record])
        bundles[i].predict_records(ok)
        return (time.perf_counter() - start) * 1000

    for i in (0, 1):
        score(i, inputs[i][0])   # warm-up: first calls pay one-off set-up costs
    p95s = []
    for r in range(rounds):
        times = ([], [])
        for k in range(len(sample)):
            for i in ((0, 1) if (r + k) % 2 == 0 else (1, 0)):
                times[i].append(score(i, inputs[i][k]))
        p95s.append([np.quantile(t, 0.95) for t in times])
    champion_ms, challenger_ms = np.median(np.asarray(p95s), axis=0)
    return float(champion_ms), float(challenger_ms)


def labelled_rows(bundle, rows: pd.DataFrame, target: str) -> pd.DataFrame:
    """Rows whose label is one the model knows (an outcome outside them judges nothing)."""
    rows = rows[rows[target].notna()]
    if bundle.task == "regression":
        return rows
    return rows[rows[target].astype(str).isin([str(c) for c in bundle.classes])]


def common_rows(champion, challenger, rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(rows both bundles accept, how many either refused)."""
    ok_a, _ = champion.check_rows(rows)
    ok_b, _ = challenger.check_rows(rows)
    keep = ok_a.index.intersection(ok_b.index)
    return ok_b.loc[keep], len(rows) - len(keep)


def judge(champion, challenger, rows: pd.DataFrame, target: str, p, seed: int = 0,
          latencies: tuple[float, float] | None = None) -> tuple[gate.Decision, dict]:
    """(decision, window facts) for challenger vs champion on labelled `rows`.

    `p`: the gate params (metric, min_effect, confidence, resamples, guardrails).
    `latencies`: (champion, challenger) p95 ms measured elsewhere (e.g. the registry); measured
    here in process when None."""
    rows = labelled_rows(champion, rows, target)
    kept, refused = common_rows(champion, challenger, rows)
    a, b = predictions(champion, kept, target), predictions(challenger, kept, target)
    primary = gate.paired_difference(p.metric, a, b, (champion.threshold, challenger.threshold),
                                     p.confidence, p.resamples, seed)
    rails = []
    g = p.guardrails
    if a.task == "binary":
        rails.append(gate.guardrail("calibration_error", gate.calibration_error(a.y, a.scores),
                                    gate.calibration_error(b.y, b.scores),
                                    g.calibration_tolerance, higher_is_better=False))
        if g.segment:
            column, value = g.segment.split("=", 1)
            inside = (kept[column].astype(str) == value).to_numpy()
            ra, k = gate.segment_recall(a.y, a.scores, champion.threshold, inside)
            rb, _ = gate.segment_recall(b.y, b.scores, challenger.threshold, inside)
            rails.append(gate.guardrail(f"recall[{g.segment}]", ra, rb, g.segment_tolerance,
                                        higher_is_better=True, positives=k))
    if latencies is None:
        latencies = latency_p95_ms(champion, challenger, kept, seed=seed)
    rails.append(gate.guardrail("latency_p95_ms", latencies[0], latencies[1],
                                g.latency_tolerance, higher_is_better=False, relative=True))
    decision = gate.decide(primary, p.min_effect, rails)
    facts = {"rows": len(rows), "rows_scored": len(kept), "rows_refused": refused,
             "champion_version": champion.version, "challenger_version": challenger.version}
    return decision, facts
