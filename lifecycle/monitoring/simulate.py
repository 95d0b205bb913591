"""The traffic simulator: held-out customers replayed with a chosen shift, then their outcomes.

Which rows: the test split (`data/processed/test.parquet`), customers the model never trained
on, whose threshold was never chosen on them, and whom the monitoring reference never saw (its
reference is a sample of train, its calibration the validation split). Replaying them is sound:
the simulator only plays production. Nothing it produces feeds back into training, model choice
or the decision threshold, so the test split's single use as the judge of the model (evaluate)
is untouched; and the monitoring checks compare against train/validation, not against these
rows, so their false-alarm rates measured on it are honest out-of-sample rates.

How a window is drawn (`draw`): n rows of the pool. Unshifted, without replacement (n below the
pool size): a window is then distributed like n fresh customers, since the finite-population
correction cancels the test split's own sampling noise. Shifted, with replacement and
probabilities tilted so the window reaches the stated shift, every row staying a real customer
with their real outcome. The medium shifts of the bench (`SHIFTS`):
- contract_mix (covariate): month-to-month customers +15 points of the window;
- price (covariate): mean monthly charges +10% (exponential tilting of monthly_charges);
- prior: the churn rate doubled (P(x | y) unchanged);
- concept: inputs unchanged, outcomes flipped for one segment (contract == "One year", ~21%);
- quality: 5% of rows with total_charges null, 5% with an unknown payment method.

`make simulate SHIFT=... RATE=... FEEDBACK_DELAY=...` replays a window through the live API
(`replay`: POST /predict one record at a time at RATE records/s, then POST /feedback with the
outcome FEEDBACK_DELAY seconds after each answer). The bench draws windows in-process with the
same `draw` and scores them with the bundle the API would load (`score_window`).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

SHIFTS = ("none", "contract_mix", "price", "prior", "concept", "quality")
MEDIUM = {"contract_mix": 0.15, "price": 0.10, "prior": 2.0, "concept": "contract=One year",
          "quality": 0.05}
UNKNOWN_PAYMENT = "Cryptocurrency"


def _tilt_share(mask: np.ndarray, target_share: float) -> np.ndarray:
    """Weights that move the share of `mask` rows from its pool share to `target_share`."""
    s0 = float(mask.mean())
    s1 = min(max(target_share, 1e-6), 1 - 1e-6)
    a = s1 * (1 - s0) / (s0 * (1 - s1))
    return np.where(mask, a, 1.0)


def _tilt_mean(x: np.ndarray, factor: float) -> np.ndarray:
    """Weights exp(lambda x) that multiply the mean of x by `factor`."""
    from scipy.optimize import brentq

    z = (x - x.mean()) / x.std()
    goal = factor * x.mean()

    def gap(lam):
        w = np.exp(lam * z)
        return float((w * x).sum() / w.sum()) - goal

    return np.exp(brentq(gap, -20, 20) * z)


def weights(pool: pd.DataFrame, shift: str, target: str, positive: str,
            strength: float | None = None) -> np.ndarray | None:
    """Sampling weights of the pool rows for a shift (None: uniform)."""
    strength = MEDIUM.get(shift) if strength is None else strength
    if shift == "contract_mix":
        mask = (pool["contract"] == "Month-to-month").to_numpy()
        return _tilt_share(mask, mask.mean() + strength)
    if shift == "prior":
        mask = (pool[target].astype(str) == positive).to_numpy()
        return _tilt_share(mask, mask.mean() * strength)
    if shift == "price":
        return _tilt_mean(pool["monthly_charges"].to_numpy(dtype=np.float64), 1 + strength)
    return None


def segment_mask(rows: pd.DataFrame, segment: str) -> np.ndarray:
    column, value = segment.split("=", 1)
    return (rows[column].astype(str) == value).to_numpy()


def draw(pool: pd.DataFrame, shift: str, n: int, seed: int, target: str, positive: str,
         negative: str, strength=None) -> pd.DataFrame:
    """n rows of the pool under `shift`; the target column holds the outcome to feed back."""
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}: one of {', '.join(SHIFTS)}")
    rng = np.random.default_rng(seed)
    w = weights(pool, shift, target, positive, strength)
    if w is None and n <= len(pool):
        index = rng.choice(len(pool), n, replace=False)
    else:
        p = None if w is None else w / w.sum()
        index = rng.choice(len(pool), n, replace=True, p=p)
    rows = pool.iloc[index].reset_index(drop=True).copy()
    if shift == "concept":
        flip = segment_mask(rows, MEDIUM["concept"] if strength is None else strength)
        labels = rows[target].astype(str)
        rows.loc[flip, target] = np.where(labels[flip] == positive, negative, positive)
    elif shift == "quality":
        share = MEDIUM["quality"] if strength is None else strength
        rows["total_charges"] = rows["total_charges"].astype("float64")
        rows.loc[rng.random(n) < share, "total_charges"] = np.nan
        rows["payment_method"] = rows["payment_method"].astype(object)
        rows.loc[rng.random(n) < share, "payment_method"] = UNKNOWN_PAYMENT
    return rows


def new_customers(rows: pd.DataFrame, contract, seed: int, spread: float = 0.03
                  ) -> pd.DataFrame:
    """The drawn rows as new customers, so production rows are records of their own (a replayed
    customer is a copy of a source row, which preprocess removes as a duplicate when retraining
    trains on both): a fresh id per row (`sim<seed>-<n>`, so the same seed gives the same
    customers), a fresh address for each personal-data string column, and the row's float
    inputs (the demo's monthly and total charges) scaled by one factor per row, exp(N(0,
    `spread`)) (ratios between them, e.g. total / monthly = tenure, stay), rounded to cents
    and kept within the contract's bounds. Everything else, the outcome included, is the real
    customer's."""
    rng = np.random.default_rng([seed, 1])  # a stream of its own: the draw is unchanged
    out = rows.copy()
    ids = [f"sim{seed}-{i:06d}" for i in range(len(out))]
    if contract.id in out:
        out[contract.id] = ids
    for name in contract.personal_data:
        if name in out and name != contract.id and contract.columns[name].type == "string":
            out[name] = [f"{i}@example.com" for i in ids]
    factor = np.exp(rng.normal(0.0, spread, len(out)))
    for name in contract.feature_columns:
        spec = contract.columns[name]
        if spec.type == "float" and name in out:
            scaled = (out[name].astype("float64") * factor).round(2)
            out[name] = scaled.clip(spec.min, spec.max)
    return out


def as_requests(rows: pd.DataFrame, contract) -> tuple[pd.DataFrame, list[str]]:
    """What a client sends: the whole record as the source has it, the outcome excepted (the
    registry masks personal data; the carried columns are never features), dates written in
    the contract's format; and those fields."""
    fields = [c for c in contract.columns if c in rows and c != contract.target.column]
    out = rows.copy()
    for name in fields:
        spec = contract.columns[name]
        if spec.type == "datetime" and pd.api.types.is_datetime64_any_dtype(out[name]):
            fmt = spec.format if isinstance(spec.format, str) and "%" in spec.format \
                else "%Y-%m-%dT%H:%M:%S"
            out[name] = out[name].dt.strftime(fmt).astype(object)
    return out, fields


def score_window(bundle, rows: pd.DataFrame, target: str, fields: list[str],
                 start: float = 0.0) -> pd.DataFrame:
    """In-process twin of replay + export: the rows the registry would hold for this window
    (answers of the contract-valid rows, outcomes joined)."""
    ok, _ = bundle.check_rows(rows[fields + [target]])
    answers = bundle.predict(ok)
    out = ok[[f for f in fields]].copy()
    out["score"] = answers["probability"].to_numpy() if "probability" in answers else (
        answers["prediction"].to_numpy(dtype=np.float64))
    out["prediction"] = answers["prediction"].astype(str).to_numpy()
    out["outcome"] = ok[target].astype(str).to_numpy()
    out["created_at"] = pd.to_datetime(start + np.arange(len(ok)), unit="s", utc=True)
    out["model_version"] = bundle.version
    out["request_id"] = [f"sim-{i}" for i in range(len(ok))]
    return out.reset_index(drop=True)


def _plain(value):
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def replay(url: str, rows: pd.DataFrame, fields: list[str], target: str, rate: float,
           feedback_delay: float, feedback_share: float = 1.0, seed: int = 0,
           timeout: float = 10.0) -> dict:
    """POST each row to {url}/predict at `rate` rows/s; POST its outcome to /feedback
    `feedback_delay` s after its answer (for a seeded `feedback_share` of the rows)."""
    import requests

    rng = np.random.default_rng(seed)
    gets_feedback = rng.random(len(rows)) < feedback_share
    pending: list[tuple[float, int, str, str]] = []
    counts = {"sent": 0, "answered": 0, "rejected": 0, "failed": 0, "feedback": 0,
              "feedback_failed": 0}
    interval = 1.0 / rate if rate > 0 else 0.0
    start = time.monotonic()

    with requests.Session() as http:
        def flush(until: float) -> None:
            while pending and pending[0][0] <= until:
                _, _, request_id, outcome = heapq.heappop(pending)
                r = http.post(f"{url}/feedback", json={"request_id": request_id,
                                                       "outcome": outcome}, timeout=timeout)
                counts["feedback" if r.status_code == 200 else "feedback_failed"] += 1

        records = rows[fields].astype(object).to_dict("records")
        outcomes = rows[target].astype(str).tolist()
        for i, record in enumerate(records):
            due = start + i * interval
            now = time.monotonic()
            flush(now)
            if due > now:
                time.sleep(due - now)
            counts["sent"] += 1
            try:
                r = http.post(f"{url}/predict", json={k: _plain(v) for k, v in record.items()},
                              timeout=timeout)
            except requests.RequestException:
                counts["failed"] += 1
                continue
            if r.status_code == 422:
                counts["rejected"] += 1
            elif r.status_code != 200:
                counts["failed"] += 1
            else:
                counts["answered"] += 1
                if gets_feedback[i]:
                    heapq.heappush(pending, (time.monotonic() + feedback_delay, i,
                                             r.json()["request_id"], outcomes[i]))
        while pending:
            time.sleep(max(0.0, pending[0][0] - time.monotonic()))
            flush(time.monotonic())
    counts["seconds"] = round(time.monotonic() - start, 2)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lifecycle.monitoring.simulate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--shift", default="none", choices=SHIFTS)
    parser.add_argument("--rows", type=int, default=1000, help="requests to send")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--feedback-delay", type=float, default=0.0,
                        help="seconds between an answer and its feedback")
    parser.add_argument("--feedback-share", type=float, default=1.0,
                        help="share of answers whose outcome is sent")
    parser.add_argument("--pool", default="data/processed/test.parquet",
                        help="held-out rows to replay (see the module docstring)")
    parser.add_argument("--contract", default="contract.yaml")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--customers", choices=["new", "replayed"], default="new",
                        help="new: each drawn row as a new customer (fresh id, float inputs "
                        "jittered, `new_customers`); replayed: the pool's customers as they are")
    args = parser.parse_args(argv)
    from lifecycle.contract import load_contract

    contract = load_contract(args.contract)
    if not Path(args.pool).is_file():
        print(f"simulate: error: {args.pool} not found (run `make run` first)", file=sys.stderr)
        return 1
    pool = pd.read_parquet(args.pool)
    target, positive = contract.target.column, str(contract.target.positive)
    negative = next(str(v) for v in contract.columns[target].allowed if str(v) != positive)
    rows = draw(pool, args.shift, args.rows, args.seed, target, positive, negative)
    if args.customers == "new":
        rows = new_customers(rows, contract, args.seed)
    rows, fields = as_requests(rows, contract)
    counts = replay(args.url, rows, fields, target, args.rate, args.feedback_delay,
                    args.feedback_share, args.seed)
    print(f"simulate: shift {args.shift}: {json.dumps(counts)}", file=sys.stderr)
    return 0 if counts["answered"] else 1


if __name__ == "__main__":
    sys.exit(main())
