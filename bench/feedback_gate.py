"""The promotion gate, measured: false promotions on unshifted data, power on shifted data.

    python bench/feedback_gate.py [--seeds 50] [--production 600] [--judge 800]

Needs the reproduced project (`make run`: models/bundle, data/processed/*.parquet).

For each seed, the held-out test rows (the simulator's pool: lifecycle/monitoring/simulate.py)
are cut into two disjoint parts: `--production` labelled production rows to retrain on and a
newer `--judge` window to judge on, both drawn by the simulator's `draw` under the scenario's
shift. The champion is the bundle's Pipeline (fitted on train); the challenger is the same
Pipeline refitted on train + the production rows (params `both`), or on the production rows
alone (`production`). The gate (lifecycle/feedback/gate.py, the params.yaml settings; latency
is not measured here: both models have the same family and size) decides on the judge window.

- `none`: no shift. Retraining on more rows of the same distribution is no real improvement,
  so every promotion is a false one: the false-promotion rate (goal <= 5%).
- `concept`: outcomes flipped for one segment (contract == One year) in production and in the
  judge window: the champion is now wrong there, a retrained challenger should win: power.
- `prior`: the churn rate doubled: ROC AUC barely moves (ranking is prior-free), so the gate
  should rarely promote; shown for honesty, not as power.

Output: bench/results/feedback_gate.json and .md (gitignored); the table is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from feedback_windows import project, write_results  # bench/feedback_windows.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--production", type=int, default=600)
    parser.add_argument("--judge", type=int, default=800)
    parser.add_argument("--scenarios", default="none/both,none/production,concept/both,"
                                                "concept/production,prior/both")
    parser.add_argument("--customers", choices=["new", "replayed"], default="new",
                        help="production and judged rows as new customers (`make simulate`'s "
                        "default) or the pool's customers replayed")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    from sklearn.base import clone

    from lifecycle.evaluation import Predictions
    from lifecycle.feedback import gate

    p = project()
    bundle, fp, metric, train, frame, labels = (p.bundle, p.feedback, p.metric, p.train,
                                                p.frame, p.labels)
    champion = bundle.pipeline
    g = fp.gate.guardrails
    seg_col, seg_val = g.segment.split("=", 1) if g.segment else (None, None)

    rows_out, load = [], os.getloadavg()[0]
    start_all = time.perf_counter()
    for scenario in args.scenarios.split(","):
        shift, data = scenario.split("/")
        promoted, diffs, lows, fit_s, blocked = 0, [], [], [], {}
        for seed in range(args.seeds):
            production, window = p.windows(shift, seed, args.production, args.judge,
                                           args.customers)
            fit_rows = production if data == "production" else pd.concat(
                [train, production], ignore_index=True)
            t0 = time.perf_counter()
            challenger = clone(champion).fit(frame(fit_rows), labels(fit_rows))
            fit_s.append(time.perf_counter() - t0)
            X, y = frame(window), labels(window)
            a = Predictions("binary", y, champion.predict_proba(X)[:, 1], (0, 1))
            b = Predictions("binary", y, challenger.predict_proba(X)[:, 1], (0, 1))
            primary = gate.paired_difference(metric, a, b, (bundle.threshold, bundle.threshold),
                                             fp.gate.confidence, fp.gate.resamples, seed)
            rails = [gate.guardrail("calibration_error", gate.calibration_error(y, a.scores),
                                    gate.calibration_error(y, b.scores),
                                    g.calibration_tolerance, higher_is_better=False)]
            if seg_col:
                inside = (window[seg_col].astype(str) == seg_val).to_numpy()
                ra, _ = gate.segment_recall(y, a.scores, bundle.threshold, inside)
                rb, _ = gate.segment_recall(y, b.scores, bundle.threshold, inside)
                rails.append(gate.guardrail("segment_recall", ra, rb, g.segment_tolerance, True))
            decision = gate.decide(primary, fp.gate.min_effect, rails)
            promoted += decision.promote
            for why in decision.reasons:
                key = why.split(":")[0] if why.startswith("guardrail") else (
                    "below min_effect" if "minimum effect" in why else "interval not above 0")
                blocked[key] = blocked.get(key, 0) + 1
            diffs.append(primary["difference"])
            lows.append(primary["low"])
        n = args.seeds
        rate = promoted / n
        # Wilson 95% interval of the promotion rate
        z = 1.96
        centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        rows_out.append({"shift": shift, "train_on": data, "seeds": n, "promoted": promoted,
                         "rate": round(rate, 3), "rate_ci95": [round(max(0, centre - half), 3),
                                                               round(min(1, centre + half), 3)],
                         "mean_difference": round(float(np.mean(diffs)), 4),
                         "mean_low": round(float(np.mean(lows)), 4),
                         "fit_seconds_median": round(float(np.median(fit_s)), 3),
                         "blocked_by": blocked})
        print(json.dumps(rows_out[-1]), flush=True)
    summary = {"customers": args.customers, "metric": metric, "min_effect": fp.gate.min_effect,
               "confidence": fp.gate.confidence, "production_rows": args.production,
               "judge_rows": args.judge, "load_average_1m_start": round(load, 2),
               "load_average_1m_end": round(os.getloadavg()[0], 2),
               "seconds": round(time.perf_counter() - start_all, 1), "scenarios": rows_out}
    lines = ["| shift | trained on | promoted / seeds | rate (Wilson 95%) | mean diff | "
             "mean CI low | not promoted because (windows) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['shift']} | train + production | " if r["train_on"] == "both" else
              f"| {r['shift']} | production only | " for r in rows_out]
    lines[2:] = [head + f"{r['promoted']}/{r['seeds']} | {r['rate']:.2f} "
                 f"[{r['rate_ci95'][0]:.2f}, {r['rate_ci95'][1]:.2f}] | "
                 f"{r['mean_difference']:+.4f} | {r['mean_low']:+.4f} | "
                 + ", ".join(f"{k}: {v}" for k, v in r["blocked_by"].items()) + " |"
                 for head, r in zip(lines[2:], rows_out, strict=True)]
    write_results("feedback_gate", summary, lines)
    print(f"load average {summary['load_average_1m_start']} -> "
          f"{summary['load_average_1m_end']}, {summary['seconds']} s")


if __name__ == "__main__":
    main()
