"""Benchmark experiments: eight runs as plain sequential `dvc exp run`, through DVC's queue with
one worker and with two (`make sweep JOBS=1|2`), and the time of `make report`.

All in a private copy of the project on which the whole DAG has run once and been committed.
Each way gets its own eight values of train.logistic_regression.C (same ranges, different
numbers) so DVC's run cache cannot replay an earlier result. Also printed: how much the DVC cache
grew per way (the data is linked, not copied, so only models and figures should add to it) and
the load average of the machine, which matters on a shared box.

Usage: python bench/experiments.py [--experiments 8] [--targets evaluate]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
from tests.conftest import make_workspace  # noqa: E402 - the tests' project copy

C_BASE = [0.01, 0.03, 0.1, 0.3, 1.5, 3.0, 10.0, 30.0]


def sh(cmd: str | list[str], cwd: Path, ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    """Run a command; its wall time and output (fail loudly on an exit code not in `ok`)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(cwd)}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:  # a file: queue workers inherit it, a pipe blocks
        proc = subprocess.run(cmd, cwd=cwd, shell=isinstance(cmd, str), env=env, text=True,
                              stdout=out, stderr=subprocess.STDOUT)
        out.seek(0)
        text = out.read()
    if proc.returncode not in ok:
        raise SystemExit(f"{cmd} failed:\n{text[-3000:]}")
    return time.perf_counter() - start, text


def cache_bytes(ws: Path) -> int:
    return sum(p.stat().st_size for p in (ws / ".dvc" / "cache").rglob("*") if p.is_file())


def project(dest: Path) -> Path:
    """The project's source in a fresh git repo, the DAG reproduced and committed."""
    make_workspace(dest)
    sh("git config user.name b && git config user.email b@b", dest)
    seconds, _ = sh("dvc repro -q", dest)
    sh("git add -A && git commit -qm reproduced", dest)
    print(f"setup: full dvc repro {seconds:.1f} s", flush=True)
    return dest


def values(way: int, count: int) -> list[float]:
    factor = 1 + 0.1 * way
    return [round(c * factor, 6) for c in (C_BASE * (count // len(C_BASE) + 1))[:count]]


def sequential(ws: Path, cs: list[float], targets: list[str]) -> float:
    """`dvc exp run -S ...` one after the other in the workspace, as a person would."""
    total = 0.0
    for c in cs:
        seconds, _ = sh(["dvc", "exp", "run", "-q", "-S", f"train.logistic_regression.C={c}",
                         *targets], ws)
        total += seconds
    sh("git checkout -q -- . && dvc checkout -q", ws)  # back to the committed baseline
    return total


def queued(ws: Path, cs: list[float], jobs: int, targets: list[str]) -> float:
    """`make sweep` (queue, `dvc queue start -j N`, wait) over the values."""
    grid = "train.logistic_regression.C=" + ",".join(str(c) for c in cs)
    seconds, out = sh(["make", "-o", ".venv/.installed", "sweep", f"GRID={grid}",
                       f"JOBS={jobs}"]
                      + ([f"TARGETS={' '.join(targets)}"] if targets else []), ws)
    if f"{len(cs)}/{len(cs)} experiments succeeded" not in out:
        raise SystemExit(f"sweep did not finish cleanly:\n{out[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=8)
    parser.add_argument("--targets", nargs="*", default=[],
                        help="stages to run to (default: the whole DAG, as `make sweep` does)")
    args = parser.parse_args()
    n = args.experiments
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-exp-") as tmp:
        ws = project(Path(tmp) / "project")
        ways = [("sequential dvc exp run", lambda cs: sequential(ws, cs, args.targets)),
                ("queue, -j 1", lambda cs: queued(ws, cs, 1, args.targets)),
                ("queue, -j 2", lambda cs: queued(ws, cs, 2, args.targets))]
        for i, (name, way) in enumerate(ways):
            load = os.getloadavg()[0]
            before = cache_bytes(ws)
            seconds = way(values(i, n))
            results[name] = {"seconds": round(seconds, 1), "per_experiment": round(seconds / n, 1),
                             "cache_growth_mb": round((cache_bytes(ws) - before) / 1e6, 2),
                             "load_before": round(load, 1)}
            print(f"{name:24} {seconds:7.1f} s  ({seconds / n:5.1f} s per experiment, cache "
                  f"+{results[name]['cache_growth_mb']} MB, load {load:.1f})", flush=True)

        data_mb = sum(p.stat().st_size for p in (ws / "data").rglob("*") if p.is_file()) / 1e6
        best = json.loads(sh(["dvc", "exp", "show", "--json"], ws)[1])
        name = best[1]["experiments"][0]["name"]
        sh(["dvc", "exp", "apply", name], ws)  # a changed workspace, as in a pull request
        report = [sh(["make", "-o", ".venv/.installed", "report", "BASE=HEAD"], ws,
                     ok=(0, 2))[0] for _ in range(3)]  # 2: make's code for a broken gate
        results["make report"] = {"seconds": [round(s, 1) for s in report]}
        print(f"{'make report BASE=HEAD':24} {min(report):7.1f} s  (best of 3; "
              f"{' '.join(f'{s:.1f}' for s in report)})")
        print(f"data in the workspace: {data_mb:.1f} MB (not copied into the cache per "
              f"experiment; cache.type {sh(['dvc', 'config', 'cache.type'], ws)[1].strip()})")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "experiments.json").write_text(json.dumps(
        {"experiments": n, "targets": args.targets, "cpus": os.cpu_count(), **results},
        indent=2))


if __name__ == "__main__":
    main()
