"""Benchmark the inference bundle in-process: single-row latency and batch throughput.

Single row (the serving path): check_records + predict_records, each part alone, the bare ONNX
session run, and the DataFrame paths for comparison; median and 99th percentile over many calls.
Batch (the batch-scoring path): check_rows (cleaning + contract checks) then predict, on the
validation split repeated to --batch-rows rows, given as typed columns (as Parquet holds them)
and as raw text (as a CSV export holds them).

Usage: python bench/bundle.py [--bundle models/bundle] [--rows data/processed/validation.parquet]
                              [--batch-rows 1000000] [--threads 0] [--calls 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import pandas as pd

from lifecycle.packaging.rows import plain_value
from lifecycle.packaging.runtime import load_bundle


def latency(fn, calls: int) -> tuple[float, float]:
    """Median and p99 wall time of fn() in microseconds, after a warm-up."""
    for _ in range(min(200, calls)):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return statistics.median(times) * 1e6, times[int(len(times) * 0.99) - 1] * 1e6


def throughput(fn, rows: int, rounds: int = 3) -> float:
    """Best rows per second of fn() over a few rounds (the machine is shared: best = least
    disturbed)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return rows / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="models/bundle")
    parser.add_argument("--rows", default="data/processed/validation.parquet")
    parser.add_argument("--batch-rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=0, help="ONNX intra-op threads (0: all)")
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()

    start = time.perf_counter()
    bundle = load_bundle(args.bundle, threads=args.threads or None)
    print(f"bundle {bundle.version}: load + verify {1e3 * (time.perf_counter() - start):.0f} ms; "
          f"{os.cpu_count()} cores, ONNX threads {args.threads or 'all'}")
    fields = [f["name"] for f in bundle.signature["fields"]]
    rows = pd.read_parquet(args.rows)[fields]
    record = {k: plain_value(v) for k, v in rows.iloc[0].items()}
    one = rows.iloc[:1]
    ok_one, _ = bundle.check_rows(one)
    session, inputs = bundle._session, bundle._inputs
    feed = {}
    numbers, texts = bundle._columns_from_records([record])
    for name, expression in bundle._derived:
        numbers[name] = np.asarray(expression(numbers, 1), dtype=np.float64)
    for name, source in bundle._indicators:
        numbers[name] = np.isnan(numbers[source]).astype(np.float64)
    for name, kind in inputs:
        feed[name] = (numbers[name] if kind == "number" else texts[name]).reshape(1, 1)
    bundle.pipeline  # noqa: B018 - load the sklearn Pipeline outside the timings

    print("\nsingle row, in-process (microseconds: median / p99)")
    cases = [
        ("check_records + predict_records (serving path)",
         lambda: bundle.predict_records(bundle.check_records([record])[0])),
        ("check_records", lambda: bundle.check_records([record])),
        ("predict_records (ONNX)", lambda: bundle.predict_records([record])),
        ("ONNX session.run alone", lambda: session.run([bundle._output], feed)),
        ("check_rows (DataFrame, make_coherent)", lambda: bundle.check_rows(one)),
        ("predict(frame, onnx)", lambda: bundle.predict(ok_one)),
        ("predict(frame, sklearn)", lambda: bundle.predict(ok_one, engine="sklearn")),
    ]
    for name, fn in cases:
        calls = args.calls if "check_rows" not in name and "sklearn" not in name else 200
        median, p99 = latency(fn, calls)
        print(f"  {name:<48} {median:9.1f} / {p99:9.1f}")

    repeat = -(-args.batch_rows // len(rows))
    typed = pd.concat([rows] * repeat, ignore_index=True).iloc[:args.batch_rows]
    typed[bundle.contract.id] = [f"c{i:09d}" for i in range(len(typed))]
    raw = typed.astype(str)
    n = len(typed)
    print(f"\nbatch of {n:,} rows (rows per second, best of 3)")
    ok, rejects = bundle.check_rows(typed)
    for name, fn in [
        ("check_rows, typed input", lambda: bundle.check_rows(typed)),
        ("check_rows, raw text input", lambda: bundle.check_rows(raw)),
        ("predict (ONNX) of checked rows", lambda: bundle.predict(ok)),
        ("check_rows + predict, typed input", lambda: bundle.predict(bundle.check_rows(typed)[0])),
        ("check_rows + predict, raw text input", lambda: bundle.predict(bundle.check_rows(raw)[0])),
    ]:
        print(f"  {name:<48} {throughput(fn, n):12,.0f}")
    print(f"  ({len(rejects)} of {n:,} rows rejected)")


if __name__ == "__main__":
    main()
