"""How many production rows a retrain on `collect.train_on: both` really adds: the simulator's
answers through the real server, then the real collect, validate and preprocess stages.

    python bench/production_rows.py [--rows 1000] [--shifts none,concept]

Needs the reproduced project (`make run`: models/bundle, data/external/crm.sqlite,
data/processed/test.parquet). For each shift and each way the simulator makes its customers
(`replayed`: the pool's customers as they are, who are also rows of the source; `new`: each
drawn row as a new customer, `simulate.new_customers`), `--rows` requests with their outcomes
go through a real server into a registry of their own, which is exported; then in a scratch
copy of the project (params: train_on both, judge_rows 100) the three stages run as DVC runs
them. Counted: production rows read by collect, and how many preprocess keeps (and why it
removes the others). Output: bench/results/production_rows.json and .md (gitignored).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from feedback_windows import ROOT, write_results  # bench/feedback_windows.py

from tests.helpers_process import free_port, http_ok, stop_process, wait_ready  # noqa: E402

STAGES = [  # as dvc.yaml runs them
    ["stages.collect", "--snapshot", "data/raw/snapshot.parquet", "--rejected",
     "data/raw/rejected.parquet", "--manifest", "data/raw/manifest.json"],
    ["stages.validate", "--snapshot", "data/raw/snapshot.parquet", "--contract",
     "contract.yaml", "--valid", "data/interim/validated.parquet", "--quarantine",
     "data/interim/quarantine.parquet", "--quality", "metrics/data_quality.json", "--metrics",
     "metrics/validate.json"],
    ["stages.preprocess", "--valid", "data/interim/validated.parquet", "--contract",
     "contract.yaml", "--clean", "data/interim/clean.parquet", "--removed",
     "data/interim/removed.parquet", "--metrics", "metrics/preprocess.json"],
]


def python(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args[:3])}: {proc.stderr.strip()[-500:]}")
    return proc


def answers(where: Path, shift: str, customers: str, rows: int) -> Path:
    """`rows` simulated requests and outcomes through a real server -> the registry export."""
    registry = f"sqlite:///{where / 'registry.sqlite'}"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "lifecycle.serving", "serve", "--bundle",
         str(ROOT / "models" / "bundle"), "--port", str(port), "--registry", registry],
        cwd=where, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        wait_ready(server, http_ok(f"http://127.0.0.1:{port}/health"), "server", timeout=120)
        python("-m", "lifecycle.monitoring.simulate", "--url", f"http://127.0.0.1:{port}",
               "--shift", shift, "--rows", str(rows), "--rate", "0", "--seed", "1",
               "--customers", customers, "--pool", str(ROOT / "data/processed/test.parquet"),
               "--contract", str(ROOT / "contract.yaml"), cwd=where)
    finally:
        stop_process(server)
    export = where / "predictions.parquet"
    python("-m", "lifecycle.serving", "export", "--registry", registry, "--output",
           str(export), cwd=where)
    return export


def retrain_data(where: Path, export: Path) -> dict:
    """collect (train_on both), validate, preprocess in a scratch project; the counts."""
    import pandas as pd

    project = where / "project"
    (project / "data" / "external").mkdir(parents=True)
    shutil.copy(ROOT / "data" / "external" / "crm.sqlite", project / "data" / "external")
    shutil.copy(ROOT / "contract.yaml", project)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    newest = pd.read_parquet(export, columns=["created_at"])["created_at"].max()
    params["collect"]["train_on"] = "both"
    params["collect"]["production"].update(export=str(export), judge_rows=100,
                                           until=newest.isoformat())
    params["validate"]["as_of"] = newest.isoformat()
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in STAGES:
        python("-m", *stage, cwd=project)
    read = yaml.safe_load((project / "data/raw/manifest.json").read_text())["production"]["rows"]
    masked = "masked:"  # a production row's id: the registry keeps it masked
    kept = pd.read_parquet(project / "data/interim/clean.parquet", columns=["customer_id"])
    removed = pd.read_parquet(project / "data/interim/removed.parquet",
                              columns=["customer_id", "reason"])
    quarantined = pd.read_parquet(project / "data/interim/quarantine.parquet")
    ours = removed[removed["customer_id"].astype(str).str.startswith(masked)]
    return {"production_rows_read": int(read),
            "kept_by_preprocess": int(kept["customer_id"].astype(str).str.startswith(
                masked).sum()),
            "removed_by_preprocess": ours["reason"].value_counts().to_dict(),
            "quarantined_by_validate": int(quarantined.get("customer_id", pd.Series(
                dtype=str)).astype(str).str.startswith(masked).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--shifts", default="none,concept")
    args = parser.parse_args()
    results = []
    for shift in args.shifts.split(","):
        for customers in ("replayed", "new"):
            with tempfile.TemporaryDirectory(prefix="production-rows-") as tmp:
                where = Path(tmp)
                counts = retrain_data(where, answers(where, shift, customers, args.rows))
            results.append({"shift": shift, "customers": customers, **counts})
            print(results[-1], flush=True)
    table = ["| shift | customers | production rows read | kept by preprocess | removed (why) |",
             "|---|---|---|---|---|"]
    table += [f"| {r['shift']} | {r['customers']} | {r['production_rows_read']} | "
              f"{r['kept_by_preprocess']} | "
              + ", ".join(f"{k}: {v}" for k, v in r["removed_by_preprocess"].items()) + " |"
              for r in results]
    write_results("production_rows", {"rows": args.rows, "results": results}, table)


if __name__ == "__main__":
    main()
