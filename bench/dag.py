"""Benchmark the DAG: each stage, the whole `dvc repro`, a no-op `dvc repro`, against floors.

Floors, measured in the same run and interleaved (this machine's CPU speed drifts):
  - the same work as one plain Python process with no DVC (every stage's main() in turn),
  - DVC's own no-op floor: `dvc repro` of a one-stage pipeline that is up to date.
Per stage: wall time and peak memory of its process, run on its own.

Usage: python bench/dag.py [--rows 7043 1000000] [--model logistic_regression] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SOURCE = ["lifecycle", "stages", "dvc.yaml", "params.yaml", "contract.yaml", ".dvc/config",
          ".dvcignore", ".gitignore", "pyproject.toml", "bench"]
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def sh(cmd: str, cwd: Path) -> float:
    """Run a shell command; return its wall time (fail loudly)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, shell=True, env={**ENV, "PYTHONPATH": str(cwd)},
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - start


def timed_process(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env={**ENV, "PYTHONPATH": str(cwd)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{argv} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def workspace(dest: Path, params: dict[str, object]) -> Path:
    """A copy of the project in a fresh git repo, with some params overridden."""
    for item in SOURCE:
        src, target = ROOT / item, dest / item
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "results"))
        elif src.exists():
            shutil.copy2(src, target)
    everything = yaml.safe_load((dest / "params.yaml").read_text())
    for dotted, value in params.items():
        *path, key = dotted.split(".")
        node = everything
        for part in path:
            node = node[part]
        node[key] = value
    (dest / "params.yaml").write_text(yaml.safe_dump(everything, sort_keys=False))
    sh("git init -q && git add -A && git -c user.name=b -c user.email=b@b commit -qm bench", dest)
    return dest


def stage_commands(ws: Path) -> dict[str, str]:
    stages = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    return {name: " ".join(spec["cmd"].split()) for name, spec in stages.items()}


PLAIN = """
import runpy, shlex, sys, time
t0 = time.perf_counter()
for cmd in {cmds!r}:
    argv = shlex.split(cmd)
    sys.argv = [argv[2]] + argv[3:]
    try:
        runpy.run_module(argv[2], run_name="__main__")
    except SystemExit as exc:
        if exc.code:
            raise
print(time.perf_counter() - t0)
"""


def dvc_floor(floor: Path) -> Path:
    """A one-stage DVC project that is up to date: what any no-op `dvc repro` costs."""
    floor.mkdir(parents=True)
    (floor / "dvc.yaml").write_text("stages:\n  touch:\n    cmd: echo x > out.txt\n"
                                    "    outs: [out.txt]\n")
    sh("git init -q && dvc init -q && dvc config core.analytics false && dvc repro -q && "
       "git add -A && git -c user.name=b -c user.email=b@b commit -qm floor", floor)
    return floor


def bench(rows: int, model: str, rounds: int, tmp: Path) -> dict:
    params = {"seed_demo_source.rows": rows, "train.model": model}
    dag_ws = workspace(tmp / f"dag-{rows}", params)
    plain_ws = workspace(tmp / f"plain-{rows}", params)
    floor = dvc_floor(tmp / f"floor-{rows}")
    cmds = list(stage_commands(dag_ws).values())
    plain_script = PLAIN.format(cmds=cmds)

    result = {"rows": rows, "model": model, "dag": [], "plain": [], "noop": [], "dvc_floor": []}
    for _ in range(rounds):  # interleaved: DAG, floor, no-op, DVC floor
        result["dag"].append(sh("dvc repro -f -q", dag_ws))
        # package records lineage from dvc.lock; the plain run makes identical outputs
        shutil.copy2(dag_ws / "dvc.lock", plain_ws / "dvc.lock")
        result["plain"].append(sh(f"{shlex.quote(sys.executable)} -c {shlex.quote(plain_script)}",
                                  plain_ws))
        result["noop"].append(sh("dvc repro -q", dag_ws))
        result["dvc_floor"].append(sh("dvc repro -q", floor))
    result["stages"] = {}
    for name, cmd in stage_commands(dag_ws).items():
        wall, peak = timed_process(shlex.split(cmd), dag_ws)
        result["stages"][name] = {"seconds": round(wall, 2), "peak_mb": round(peak)}
    return result


def report(r: dict) -> None:
    best = {k: min(r[k]) for k in ("dag", "plain", "noop", "dvc_floor")}
    print(f"\n== {r['rows']:,} rows, model {r['model']} (best of {len(r['dag'])}) ==")
    print(f"full dvc repro      {best['dag']:7.2f} s   plain script (floor) {best['plain']:7.2f} s"
          f"   ratio {best['dag'] / best['plain']:.2f}")
    print(f"no-op dvc repro     {best['noop']:7.2f} s   DVC floor            "
          f"{best['dvc_floor']:7.2f} s   ratio {best['noop'] / best['dvc_floor']:.2f}")
    print("stage                seconds   peak MB")
    for name, s in r["stages"].items():
        print(f"  {name:18} {s['seconds']:8.2f} {s['peak_mb']:9}")
    largest = max(r["stages"].items(), key=lambda kv: kv[1]["peak_mb"])
    print(f"largest stage by memory: {largest[0]} ({largest[1]['peak_mb']} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[7043, 1_000_000])
    parser.add_argument("--model", default="logistic_regression")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        for rows in args.rows:
            rounds = args.rounds if rows <= 100_000 else 1
            results.append(bench(rows, args.model, rounds, Path(tmp)))
            report(results[-1])
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"dag-{args.model}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
