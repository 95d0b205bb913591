"""The data stages at scale, engine pandas against engine dask, interleaved stage by stage in
the same run: wall time and peak memory of the stage's process and, for dask, of each worker;
the outputs of both engines compared byte for byte; the growth exponent between sizes.

The source is the demo CRM resampled to N rows (timing only, never for judging a model), its
snapshot cut into Parquet files (`--files`), which both engines read as `collect.source`:
the pandas engine in one process, the dask engine one slice per task on a LocalCluster this
script starts (`--workers` processes, 1 thread each), reached through DASK_SCHEDULER_ADDRESS.

Usage: python bench/scale.py [--rows 1000000 10000000] [--workers 2] [--partition-rows 1000000]
                             [--files 8] [--memory-limit 6GB]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from dag import ENV, run, stage_commands, workspace  # noqa: E402 - bench/dag.py's helpers

STAGES = ("collect", "validate", "preprocess", "split", "featurize")
OUTPUTS = {"collect": ["data/raw/snapshot.parquet"],
           "validate": ["data/interim/validated.parquet", "data/interim/quarantine.parquet"],
           "preprocess": ["data/interim/clean.parquet", "data/interim/removed.parquet"],
           "split": [f"data/processed/{n}.parquet" for n in ("train", "validation", "test")],
           "featurize": [f"data/features/{n}.parquet" for n in ("train", "validation")]}


class WorkerMemory:
    """Peak resident memory of each worker process, sampled every 0.2 s while running."""

    def __init__(self, pids: list[int]):
        import psutil

        self.procs = [psutil.Process(p) for p in pids]
        self.peaks = [0] * len(pids)
        self.cpu = 0.0   # user + sys seconds of all workers while running
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for i, proc in enumerate(self.procs):
                try:
                    self.peaks[i] = max(self.peaks[i], proc.memory_info().rss)
                except Exception:  # noqa: BLE001 - a worker restarting: sample it next time
                    pass
            time.sleep(0.2)

    def _cpu(self) -> float:
        return sum(t.user + t.system for t in (p.cpu_times() for p in self.procs))

    def __enter__(self) -> WorkerMemory:
        self._start_cpu = self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu = self._cpu() - self._start_cpu


def set_engine(ws: Path, kind: str, partition_rows: int) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["engine"].update(kind=kind, partition_rows=partition_rows)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def source_files(ws: Path, files: int) -> None:
    """The pandas engine's snapshot of the SQLite source, cut into `files` Parquet files; both
    engines then collect from them."""
    import pyarrow.parquet as pq

    run(stage_commands(ws)["collect"], ws)
    table = pq.read_table(ws / "data/raw/snapshot.parquet")
    lake = ws / "data/external/lake"
    lake.mkdir(parents=True, exist_ok=True)
    step = math.ceil(table.num_rows / files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), lake / f"part-{i:03d}.parquet",
                       compression="zstd")
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["collect"]["source"] = {"kind": "files", "path": "data/external/lake/*.parquet"}
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def bench(rows: int, args, cluster, tmp: Path) -> dict:
    ws = workspace(tmp / f"scale-{rows}", {"seed_demo_source.rows": rows})
    run("dvc repro -q seed_demo_source", ws)   # the source, untimed (it stands in for yours)
    source_files(ws, args.files)
    commands = stage_commands(ws)
    pids = list(cluster.run(os.getpid).values())   # the worker processes
    result = {"rows": rows, "stages": {}}
    for stage in STAGES:
        line = {}
        for kind in ("pandas", "dask"):
            set_engine(ws, kind, args.partition_rows)
            with WorkerMemory(pids) as workers:
                measured = run(commands[stage], ws)
            line[kind] = {"wall": round(measured.wall, 2), "cpu": round(measured.cpu, 2),
                          "peak_mb": round(measured.peak_mb),
                          "outputs": digest([ws / p for p in OUTPUTS[stage]])}
            if kind == "dask":
                line[kind]["worker_peak_mb"] = [round(p / 2**20) for p in workers.peaks]
                line[kind]["worker_cpu"] = round(workers.cpu, 2)
        line["same_bytes"] = line["pandas"]["outputs"] == line["dask"]["outputs"]
        result["stages"][stage] = line
        print(f"{rows:>11,} {stage:<10} pandas {line['pandas']['wall']:7.1f} s "
              f"{line['pandas']['peak_mb']:6} MB | dask {line['dask']['wall']:7.1f} s client "
              f"{line['dask']['peak_mb']:6} MB workers {line['dask']['worker_peak_mb']} MB | "
              f"same bytes: {line['same_bytes']}  (load {os.getloadavg()[0]:.1f})", flush=True)
    return result


def table(results: list[dict], args) -> str:
    out = [f"\nLocalCluster: {args.workers} workers x 1 thread, partitions of "
           f"{args.partition_rows:,} rows, source in {args.files} Parquet files; load average "
           f"at the end {os.getloadavg()[0]:.1f}\n",
           "| rows | stage | pandas s (CPU s) | pandas peak MB | dask s | dask/pandas | dask CPU s "
           "client + workers | dask client peak MB | dask worker peak MB | same bytes |",
           "|" + "---|" * 10]
    for r in results:
        for stage, line in r["stages"].items():
            p, d = line["pandas"], line["dask"]
            ratio = d["wall"] / max(p["wall"], 1e-9)
            out.append(f"| {r['rows']:,} | {stage} | {p['wall']:.1f} ({p['cpu']:.1f}) | "
                       f"{p['peak_mb']:,} | {d['wall']:.1f} | {ratio:.2f} "
                       f"| {d['cpu']:.1f} + {d['worker_cpu']:.1f} | "
                       f"{d['peak_mb']:,} | {' / '.join(f'{m:,}' for m in d['worker_peak_mb'])} "
                       f"| {'yes' if line['same_bytes'] else 'NO'} |")
        total = {k: sum(line[k]["wall"] for line in r["stages"].values())
                 for k in ("pandas", "dask")}
        r["total"] = total
        cpu = {"pandas": sum(line["pandas"]["cpu"] for line in r["stages"].values()),
               "dask": sum(line["dask"]["cpu"] + line["dask"]["worker_cpu"]
                           for line in r["stages"].values())}
        r["cpu"] = cpu
        out.append(f"| {r['rows']:,} | **total** | {total['pandas']:.1f} ({cpu['pandas']:.1f}) | "
                   f"| {total['dask']:.1f} | {total['dask'] / total['pandas']:.2f} | "
                   f"{cpu['dask']:.1f} | | | |")
    if len(results) >= 2:
        a, b = results[0], results[-1]
        for kind in ("pandas", "dask"):
            k = math.log(b["total"][kind] / a["total"][kind]) / math.log(b["rows"] / a["rows"])
            c = math.log(b["cpu"][kind] / a["cpu"][kind]) / math.log(b["rows"] / a["rows"])
            out.append(f"\ngrowth exponent {kind}, {a['rows']:,} -> {b['rows']:,} rows: "
                       f"wall ~ rows^{k:.2f}, CPU ~ rows^{c:.2f}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partition-rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--memory-limit", default="6GB", help="per worker")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from distributed import Client, LocalCluster

    from lifecycle.scale.cluster import configure

    configure()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      memory_limit=args.memory_limit, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        ENV["DASK_SCHEDULER_ADDRESS"] = cluster.scheduler_address
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            results = [bench(rows, args, client, Path(tmp)) for rows in args.rows]
    print(table(results, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
