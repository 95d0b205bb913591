"""Benchmark serving, side by side in one run, against two references:

  - the floor: the bundle's sklearn Pipeline `predict_proba` called in-process on the same
    rows (already in model-frame form: no HTTP, no checks, no recording);
  - `mlflow models serve` of the same scikit-learn Pipeline (--env-manager local, its default
    single worker), the usual choice; it gets model-frame rows too (no cleaning, no contract
    checks, nothing recorded).

A third reference shows what HTTP alone costs on this machine at that moment: the same
FastAPI/uvicorn stack answering a constant (no checks, no model, no registry).

Ours: `python -m lifecycle.serving serve` (FastAPI on uvicorn, ONNX Runtime, contract checks,
every answer committed to the SQLite inference registry before it is sent, Prometheus metrics);
and the same with `--no-metrics`, so the cost of the /metrics instrumentation is measured in
the same run (the ratio is reported).

Figures: single-record p50/p99 latency and throughput over HTTP at concurrency 1 and 32 (the
load comes from a separate process: lifecycle.serving.loadgen), and batch rows per second.
Rounds are interleaved (this machine's CPU speed drifts) and medians reported.

mlflow lives in its own venv (default /tmp/mlflow-venv) so that our lock stays small; it is
created on first use (a few minutes, said when it happens). --no-mlflow skips it.

Usage: python bench/serving.py [--bundle models/bundle] [--rows data/processed/validation.parquet]
       [--rounds 3] [--requests 3000] [--batch-rows 1000000] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WARMUP = 50  # requests per load before timing starts
BARE = "ours HTTP --no-metrics"
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
       "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1"}
sys.path.insert(0, str(ROOT))
from tests.helpers_process import free_port, http_ok, wait_ready  # noqa: E402 - the tests' own


def load(url: str, bodies: Path, requests: int, concurrency: int) -> dict:
    """The load generator in its own process, so it does not share the server's loop."""
    out = subprocess.run([str(BIN / "python"), "-m", "lifecycle.serving.loadgen", "--url", url,
                          "--bodies", str(bodies), "--requests", str(requests),
                          "--concurrency", str(concurrency), "--warmup", str(WARMUP)],
                         env=ENV, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    bad = {k: v for k, v in result["statuses"].items() if k != "200"}
    if bad or result["errors"]:
        raise SystemExit(f"{url}: failed requests {bad} {result['errors']}")
    return result


# --- the HTTP floor: the same server stack doing no work ---------------------------------------
ECHO_APP = """
import sys, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
app = FastAPI()
@app.post("/predict")
async def predict(request: Request):
    await request.body()
    return Response(b'{"prediction": "No"}', media_type="application/json")
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            access_log=False, log_level="warning")
"""


def start_echo() -> tuple[subprocess.Popen, str]:
    """FastAPI + uvicorn answering a constant: what HTTP alone costs on this machine now
    (its p99 shows how much of ours is the machine's noise)."""
    port = free_port()
    proc = subprocess.Popen([str(BIN / "python"), "-c", ECHO_APP, str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(proc, http_ok(f"http://127.0.0.1:{port}/docs"), "FastAPI echo", timeout=120)
    return proc, f"http://127.0.0.1:{port}/predict"


# --- mlflow in its own venv ------------------------------------------------------------------
MLFLOW_SAVE = """
import sys, mlflow.sklearn, skops.io as sio
path, dest = sys.argv[1], sys.argv[2]
pipeline = sio.load(path, trusted=sio.get_untrusted_types(file=path))
mlflow.sklearn.save_model(pipeline, dest, pyfunc_predict_fn="predict_proba",
                          serialization_format="cloudpickle")
"""


def mlflow_venv(where: Path) -> Path:
    python = where / "bin" / "python"
    if (where / "bin" / "mlflow").exists():
        return where
    print(f"creating {where} with mlflow (one time, a few minutes; kept out of our lock)",
          file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    pins = [f"{p}=={version(p)}" for p in ("scikit-learn", "numpy", "pandas", "scipy",
                                           "skops")]
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "mlflow", *pins],
                   check=True)
    return where


def start_mlflow(venv: Path, bundle: Path, work: Path) -> tuple[subprocess.Popen, str]:
    model_dir = work / "mlflow-model"
    subprocess.run([str(venv / "bin" / "python"), "-c", MLFLOW_SAVE,
                    str(bundle / "model.skops"), str(model_dir)], check=True,
                   capture_output=True)
    port = free_port()
    log = open(work / "mlflow.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([str(venv / "bin" / "mlflow"), "models", "serve", "-m",
                             str(model_dir), "--env-manager", "local", "-h", "127.0.0.1",
                             "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "MLFLOW_TRACKING_URI": f"file://{work}/mlruns",
                                 # mlflow starts `uvicorn` from PATH: its own, not ours
                                 "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    wait_ready(proc, http_ok(f"http://127.0.0.1:{port}/ping"), "mlflow serve", timeout=120)
    return proc, f"http://127.0.0.1:{port}/invocations"


# --- the floor: in-process predict_proba -----------------------------------------------------
def floor_single(pipeline, frame: pd.DataFrame, n: int) -> dict:
    """predict_proba on one model-frame row at a time: latency percentiles and rate."""
    rows = [frame.iloc[[i % len(frame)]] for i in range(min(n, 300))]  # ~30 ms each
    for row in rows[:20]:
        pipeline.predict_proba(row)
    times = []
    for row in rows:
        start = time.perf_counter()
        pipeline.predict_proba(row)
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "throughput_rps": 1000 / float(ms.mean())}


def onnx_single(bundle, records: list[dict], n: int) -> dict:
    """Our in-process fast path on one record: check_records + predict_records (no HTTP)."""
    times = []
    for i in range(min(n, 3000)):
        record = records[i % len(records)]
        start = time.perf_counter()
        ok, _ = bundle.check_records([record])
        bundle.predict_records(ok)
        times.append(time.perf_counter() - start)
    ms = np.array(times[100:]) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "throughput_rps": 1000 / float(ms.mean())}


def rows_per_second(fn, rows: int) -> float:
    start = time.perf_counter()
    fn()
    return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(ROOT / "models" / "bundle"))
    parser.add_argument("--rows", default=str(ROOT / "data/processed/validation.parquet"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="per load at concurrency 1")
    parser.add_argument("--batch-rows", type=int, default=1_000_000)
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--mlflow-venv", default="/tmp/mlflow-venv")
    args = parser.parse_args()

    from lifecycle import features
    from lifecycle.packaging.runtime import load_bundle
    from lifecycle.serving.batch import score_file

    bundle_path = Path(args.bundle)
    if not (bundle_path / "manifest.json").exists():
        raise SystemExit(f"no bundle at {bundle_path}: run the DAG first (make run)")
    bundle = load_bundle(bundle_path, threads=1)
    names = [f["name"] for f in bundle.signature["fields"]]
    source = pd.read_parquet(args.rows)
    records = [{k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v)
                for k, v in row.items()} for row in source[names].to_dict("records")]
    frame = features.model_frame(source, bundle.contract, bundle.inference["derived"])
    pipeline = bundle.pipeline

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    ours_bodies, mlflow_bodies = work / "ours.jsonl", work / "mlflow.jsonl"
    ours_bodies.write_text("".join(json.dumps(r) + "\n" for r in records))
    mf_records = json.loads(frame.to_json(orient="records"))
    mlflow_bodies.write_text("".join(json.dumps({"dataframe_records": [r]}) + "\n"
                                     for r in mf_records))

    registry = work / "registry.sqlite"

    def start_ours(registry: Path, *flags: str) -> tuple[subprocess.Popen, str]:
        port = free_port()
        proc = subprocess.Popen([str(BIN / "python"), "-m", "lifecycle.serving", "serve",
                                 "--bundle", str(bundle_path), "--port", str(port),
                                 "--registry", f"sqlite:///{registry}", *flags], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc, f"http://127.0.0.1:{port}"

    ours, ours_url = start_ours(registry)
    bare, bare_url = start_ours(work / "registry-bare.sqlite", "--no-metrics")
    mlflow = mlflow_url = echo = None
    try:
        wait_ready(ours, http_ok(f"{ours_url}/health"), "our server", timeout=120)
        wait_ready(bare, http_ok(f"{bare_url}/health"), BARE, timeout=120)
        echo, echo_url = start_echo()
        if not args.no_mlflow:
            mlflow, mlflow_url = start_mlflow(mlflow_venv(Path(args.mlflow_venv)),
                                              bundle_path, work)
        results: dict[str, list[dict]] = {}

        def add(name: str, result: dict) -> None:
            results.setdefault(name, []).append(result)

        sent = 0
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
            add("floor predict_proba, c=1", floor_single(pipeline, frame, args.requests))
            add("in-process check+ONNX, c=1", onnx_single(bundle, records, args.requests))
            add("HTTP floor: FastAPI echo, c=1", load(echo_url, ours_bodies, args.requests, 1))
            add("ours HTTP, c=1", load(f"{ours_url}/predict", ours_bodies, args.requests, 1))
            add(BARE + ", c=1", load(f"{bare_url}/predict", ours_bodies, args.requests, 1))
            sent += args.requests + WARMUP
            slow = min(args.requests, 600)  # mlflow answers in tens of ms: fewer suffice
            if mlflow_url:
                add("mlflow serve, c=1", load(mlflow_url, mlflow_bodies, slow, 1))
            add("HTTP floor: FastAPI echo, c=32", load(echo_url, ours_bodies,
                                                       args.requests * 3, 32))
            add("ours HTTP, c=32", load(f"{ours_url}/predict", ours_bodies,
                                        args.requests * 3, 32))
            add(BARE + ", c=32", load(f"{bare_url}/predict", ours_bodies,
                                      args.requests * 3, 32))
            sent += args.requests * 3 + WARMUP
            if mlflow_url:
                add("mlflow serve, c=32", load(mlflow_url, mlflow_bodies, slow * 2, 32))

        # every answered request is in the registry
        import sqlalchemy as sa

        engine = sa.create_engine(f"sqlite:///{registry}")
        with engine.connect() as connection:
            recorded = connection.execute(sa.text("SELECT count(*) FROM predictions")).scalar()
        engine.dispose()

        # batch: rows per second on the same rows, resampled to --batch-rows
        reps = -(-args.batch_rows // len(source))
        big = pd.concat([source] * reps, ignore_index=True).head(args.batch_rows)
        big_file, big_csv = work / "batch.parquet", work / "batch.csv"
        big.to_parquet(big_file)
        big.to_csv(big_csv, index=False)
        big_frame = pd.concat([frame] * reps, ignore_index=True).head(args.batch_rows)
        batch: dict[str, list[float]] = {}
        chunk = 1000
        big_records = [records[i % len(records)] for i in range(args.batch_rows)]
        mf_big = [mf_records[i % len(mf_records)] for i in range(args.batch_rows)]
        for _ in range(args.rounds):
            batch.setdefault("floor predict_proba", []).append(rows_per_second(
                lambda: pipeline.predict_proba(big_frame), len(big_frame)))
            batch.setdefault("ours make predict, Parquet -> Parquet", []).append(
                rows_per_second(lambda: score_file(bundle, big_file, work / "scores.parquet",
                                                   progress=False), len(big)))
            batch.setdefault("ours make predict, CSV -> CSV", []).append(rows_per_second(
                lambda: score_file(bundle, big_csv, work / "scores.csv", progress=False),
                len(big)))
            with httpx.Client(timeout=300) as client:
                batch.setdefault("ours HTTP, 1000 records per request", []).append(
                    rows_per_second(lambda: [client.post(
                        f"{ours_url}/predict", json=big_records[i:i + chunk])
                        for i in range(0, 50_000, chunk)], 50_000))
                if mlflow_url:
                    batch.setdefault("mlflow serve, 1000 records per request", []).append(
                        rows_per_second(lambda: [client.post(
                            mlflow_url, json={"dataframe_records": mf_big[i:i + chunk]})
                            for i in range(0, 50_000, chunk)], 50_000))
    finally:
        for proc in (ours, bare, mlflow, echo):
            if proc is not None:
                proc.terminate()
                proc.wait(30)

    report(results, batch, recorded, sent, args)


def report(results: dict, batch: dict, recorded: int, sent: int, args) -> None:
    med = {name: {k: statistics.median(r[k] for r in runs)
                  for k in ("p50_ms", "p99_ms", "throughput_rps")}
           for name, runs in results.items()}
    floor = med["floor predict_proba, c=1"]
    lines = [f"Serving benchmark ({args.rounds} interleaved rounds, medians; "
             f"{os.cpu_count()} cores)", "",
             "| single record | p50 ms | p99 ms | requests/s | p50 / floor |",
             "|---|---|---|---|---|"]
    for name, m in med.items():
        lines.append(f"| {name} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | "
                     f"{m['throughput_rps']:,.0f} | {m['p50_ms'] / floor['p50_ms']:.2f} |")
    bmed = {name: statistics.median(v) for name, v in batch.items()}
    bfloor = bmed["floor predict_proba"]
    lines += ["", "| batch | rows/s | / floor |", "|---|---|---|"]
    for name, v in bmed.items():
        lines.append(f"| {name} | {v:,.0f} | {v / bfloor:.2f} |")
    (on1, off1), (on32, off32) = ((med[f"ours HTTP, c={c}"], med[f"{BARE}, c={c}"])
                                  for c in (1, 32))
    lines += ["", "/metrics instrumentation (ours / ours --no-metrics, same run): "
              f"c=1 p50 x{on1['p50_ms'] / off1['p50_ms']:.3f}, "
              f"p99 x{on1['p99_ms'] / off1['p99_ms']:.3f}; "
              f"c=32 requests/s x{on32['throughput_rps'] / off32['throughput_rps']:.3f}"]
    lines += ["", f"registry: {recorded} predictions recorded for the {sent} single-record "
                  "requests ours answered (all committed before their answer)",
              "targets: ours c=1 p50 <= 1.5 ms, p99 <= 3 ms; c=32 >= 1,000 requests/s; "
              "make predict >= 250,000 rows/s Parquet, >= 150,000 CSV (1M rows)",
              f"load average (1/5/15 min) at the end: "
              f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())}"]
    print("\n".join(lines))
    out = ROOT / "bench" / "results" / "serving.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"single": results, "batch": batch, "recorded": recorded},
                              indent=2, default=str))


if __name__ == "__main__":
    main()
