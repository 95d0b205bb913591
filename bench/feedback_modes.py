"""Full refit vs incremental vs online, on the same windows: time and score.

    python bench/feedback_modes.py [--seeds 10] [--production 600] [--judge 800]

Needs the reproduced project (`make run`). Windows as in bench/feedback_gate.py: per seed, the
held-out test rows cut in two disjoint halves; `--production` labelled production rows drawn
from one (the simulator's `draw`, under the shift), a newer `--judge` window from the other.
For each model family that can continue (the bundle's logistic regression; histogram gradient
boosting fitted on train the same way), on the same rows:

- champion: the model fitted on train, unchanged;
- full: the Pipeline refitted on train + production rows;
- incremental: the champion continued on the production rows only
  (lifecycle/feedback/incremental.py; its featurizer unchanged);
- online: river over the champion featurizer's features (lifecycle/feedback/online.py), one pass
  over train, then prequential over the production rows (predict, then learn each event).

Score: ROC AUC on the judge window (and the gate's decision against the champion), time: the
update's wall seconds (for online: the production events only, and per event). The load
average is printed beside the timings; the time ratios are what survives load.
Output: bench/results/feedback_modes.json and .md (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from feedback_windows import project, write_results  # bench/feedback_windows.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--production", type=int, default=600)
    parser.add_argument("--judge", type=int, default=800)
    parser.add_argument("--shifts", default="none,concept")
    parser.add_argument("--families", default="logistic_regression,gradient_boosting")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    from sklearn.base import clone
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    from lifecycle.evaluation import Predictions
    from lifecycle.feedback import gate
    from lifecycle.feedback.incremental import continue_fit
    from lifecycle.feedback.online import OnlineLearner

    p = project()
    bundle, fp, train, frame, labels = p.bundle, p.feedback, p.train, p.frame, p.labels

    X_train, y_train = frame(train), labels(train)
    logistic = bundle.pipeline
    champions = {"logistic_regression": logistic}
    if "gradient_boosting" in args.families:
        boosting = clone(logistic)
        boosting.steps[-1] = ("model", HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, early_stopping=False, random_state=0))
        champions["gradient_boosting"] = boosting.fit(X_train, y_train)
    champions = {k: v for k, v in champions.items() if k in args.families.split(",")}

    load_start, results = os.getloadavg()[0], []
    for shift in args.shifts.split(","):
        for family, champion in champions.items():
            cell = {m: {"auc": [], "seconds": [], "promoted": 0}
                    for m in ("champion", "full", "incremental", "online")}
            online_prequential = []
            for seed in range(args.seeds):
                # replayed customers: the table in docs/feedback.md was measured on them
                production, window = p.windows(shift, seed, args.production, args.judge,
                                               "replayed")
                X_prod, y_prod = frame(production), labels(production)
                X_win, y_win = frame(window), labels(window)
                scores, seconds = {"champion": champion.predict_proba(X_win)[:, 1]}, {
                    "champion": 0.0}
                t = time.perf_counter()
                full = clone(champion).fit(pd.concat([X_train, X_prod], ignore_index=True),
                                           np.r_[y_train, y_prod])
                seconds["full"] = time.perf_counter() - t
                scores["full"] = full.predict_proba(X_win)[:, 1]
                t = time.perf_counter()
                inc = continue_fit(champion, X_prod, y_prod, seed=seed)
                seconds["incremental"] = time.perf_counter() - t
                scores["incremental"] = inc.predict_proba(X_win)[:, 1]
                learner = OnlineLearner(champion[:-1], fp.online.model,
                                        fp.online.learning_rate, fp.online.seed)
                learner.warm(X_train, y_train)
                t = time.perf_counter()
                preq = learner.prequential(X_prod, y_prod)
                seconds["online"] = time.perf_counter() - t
                online_prequential.append(roc_auc_score(y_prod, preq))
                scores["online"] = learner.predict(X_win)
                base = Predictions("binary", y_win, scores["champion"], (0, 1))
                for mode, s in scores.items():
                    cell[mode]["auc"].append(roc_auc_score(y_win, s))
                    cell[mode]["seconds"].append(seconds[mode])
                    if mode != "champion":
                        d = gate.paired_difference("roc_auc", base,
                                                   Predictions("binary", y_win, s, (0, 1)),
                                                   (0.5, 0.5), fp.gate.confidence, 1, seed)
                        cell[mode]["promoted"] += gate.decide(d, fp.gate.min_effect, []).promote
            for mode, c in cell.items():
                row = {"shift": shift, "family": family, "mode": mode, "seeds": args.seeds,
                       "auc_mean": round(float(np.mean(c["auc"])), 4),
                       "auc_sd": round(float(np.std(c["auc"], ddof=1)), 4),
                       "seconds_median": round(float(np.median(c["seconds"])), 4),
                       "promoted": c["promoted"] if mode != "champion" else None}
                if mode == "online":
                    row["per_event_ms"] = round(1000 * row["seconds_median"]
                                                / args.production, 4)
                    row["prequential_auc_mean"] = round(float(np.mean(online_prequential)), 4)
                results.append(row)
                print(json.dumps(row), flush=True)
    summary = {"production_rows": args.production, "judge_rows": args.judge,
               "train_rows": len(train), "load_average_1m_start": round(load_start, 2),
               "load_average_1m_end": round(os.getloadavg()[0], 2), "rows": results}
    name = "feedback_modes" if args.families.count(",") else f"feedback_modes_{args.families}"
    lines = ["| shift | family | mode | ROC AUC on the judge window (mean ± sd) | "
             "update seconds (median) | promoted by the gate |", "|---|---|---|---|---|---|"]
    for r in results:
        extra = (f" ({r['per_event_ms']} ms/event; prequential AUC {r['prequential_auc_mean']})"
                 if r["mode"] == "online" else "")
        promoted = "" if r["promoted"] is None else f"{r['promoted']}/{r['seeds']}"
        lines.append(f"| {r['shift']} | {r['family']} | {r['mode']} | {r['auc_mean']:.4f} ± "
                     f"{r['auc_sd']:.4f} | {r['seconds_median']:.3f}{extra} | {promoted} |")
    write_results(name, summary, lines)
    print(f"load average {summary['load_average_1m_start']} -> {summary['load_average_1m_end']}")


if __name__ == "__main__":
    main()
