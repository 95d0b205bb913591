"""Benchmark the DAG against its floors, interleaved in the same run, and print the table.

Lines, each with its floor and ratio from this run (medians over the rounds):
  - full `dvc repro -f` (the seed stage excluded: it stands in for your database) against
    bench/floors/floor.py, the essential work as one plain process written independently:
    stages run by the warm runner (lifecycle/warm.py) with its server up, with a fresh server
    (the first run after it idled out), and cold (LIFECYCLE_WARM=0, one process per stage);
  - the same `dvc repro -f` of DVC alone on a DAG of the same shape (trivial commands): the part
    of the full run no stage can remove;
  - no-op `dvc repro` against bench/floors/dvc_shape_floor.py, DVC itself on a DAG of the same
    shape with trivial commands;
  - batch scoring (`python -m lifecycle.serving predict`), Parquet -> Parquet and CSV -> CSV, of
    the clean rows, in rows per second.
Per stage: wall and CPU seconds and peak memory of its own process (cold), and its wall through
the warm runner (above 100,000 rows the full DAG is timed as the sum of one
`dvc repro -f -s <stage>` per stage, which gives the per-stage figures of the same run and counts
DVC's start-up once per stage).

CPU of a warm line adds the warm servers' own CPU and their children's (from /proc) to the
client's: the stage runs in the server's child, not the client's.

Wall time on a shared machine is noisy: CPU seconds (user + sys of the process tree) are
printed beside it, and ratios are taken within one run. The scaled data (rows above 7,043) is
resampled: use it for timing, never to judge a model.

Usage: python bench/dag.py [--rows 7043 1000000] [--10m] [--model logistic_regression]
                           [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FLOORS = ROOT / "bench" / "floors"
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
COLD = {"LIFECYCLE_WARM": "0"}
FLOOR_MODEL = {"logistic_regression": "lr", "random_forest": "rf"}  # what floor.py fits
sys.path.insert(0, str(ROOT))
from tests.conftest import make_workspace  # noqa: E402 - the tests' project copy
from tests.helpers_stages import set_params  # noqa: E402

FLOOR_MB_PER_MILLION = 2_600   # floor.py holds the whole table: 2.2 GB at 1M rows, and a margin


def floor_fits(rows: int) -> tuple[bool, str]:
    """Whether floor.py's memory (it grows with the rows) is available now: on a shared machine
    a 10M-row floor (~20 GB) must not run beside other heavy work."""
    need = FLOOR_MB_PER_MILLION * max(rows, 1_000_000) / 1e6
    with open("/proc/meminfo") as f:
        free = next(int(line.split()[1]) / 1024 for line in f if line.startswith("MemAvailable"))
    return free > need, f"floor.py needs ~{need / 1024:.0f} GB, {free / 1024:.0f} GB available"


@dataclass
class Run:
    wall: float     # seconds
    cpu: float      # user + sys seconds of the process and the children it waited for
    peak_mb: float  # largest resident set of the process or one of those children


def run(argv: list[str] | str, cwd: Path, env: dict | None = None) -> Run:
    """Run a command (a list, or a shell string); fail loudly; measure it (with the warm
    servers' CPU: the stages it runs are their children)."""
    shell = isinstance(argv, str)
    servers = warm_cpu()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, shell=shell,
                            env={**ENV, "PYTHONPATH": str(cwd), **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{argv} failed in {cwd}:\n{err[-3000:]}")
    served = sum(cpu - servers.get(pid, 0.0) for pid, cpu in warm_cpu().items())
    return Run(wall, usage.ru_utime + usage.ru_stime + served, usage.ru_maxrss / 1024)


def warm_cpu() -> dict[int, float]:
    """CPU seconds so far of each live warm server of this bench, its reaped children's too."""
    folder = ENV.get("LIFECYCLE_WARM_DIR")
    pids = {int(line.split(" pid ")[1].split(":")[0]) for log in Path(folder).glob("*.log")
            for line in log.read_text().splitlines() if ": serving " in line} if folder else ()
    cpu = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited
        cpu[pid] = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return cpu


def stop_warm_servers(ws: Path) -> None:
    """Stop this bench's warm servers and wait until they are gone (the next run starts one)."""
    run([sys.executable, "-m", "lifecycle.warm", "--stop"], ws)
    deadline = time.monotonic() + 30
    while warm_cpu() and time.monotonic() < deadline:
        time.sleep(0.05)


def workspace(dest: Path, params: dict[str, object]) -> Path:
    """A copy of the project in a fresh git repo (what a clone holds), some params overridden."""
    make_workspace(dest)
    set_params(dest, params)
    run("git -c user.name=b -c user.email=b@b commit -qam 'bench params'", dest)
    return dest


def stage_commands(ws: Path) -> dict[str, list[str]]:
    stages = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    return {name: shlex.split(" ".join(spec["cmd"].split())) for name, spec in stages.items()}


def shape_floor(ws: Path, dest: Path) -> Path:
    """DVC's floor for a DAG shaped like the workspace's, committed and up to date."""
    run([sys.executable, str(FLOORS / "dvc_shape_floor.py"), str(ws), str(dest)], ws)
    return dest


def batch_inputs(ws: Path) -> dict[str, Path]:
    """The clean rows as Parquet (as preprocess wrote them) and as CSV."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    parquet = ws / "data" / "interim" / "clean.parquet"
    csv = ws / "bench-input.csv"
    pcsv.write_csv(pq.read_table(parquet), csv)
    return {"parquet": parquet, "csv": csv}


def bench(rows: int, model: str, rounds: int, tmp: Path) -> dict:
    load_before = os.getloadavg()
    ws = workspace(tmp / f"dag-{rows}", {"seed_demo_source.rows": rows, "train.model": model})
    run("dvc repro -q seed_demo_source", ws)  # the source, untimed (it stands in for yours)
    if rows <= 100_000:
        run("dvc repro -q", ws)  # warms the caches
    floor_dvc = shape_floor(ws, tmp / f"shape-floor-{rows}")
    floor_cmd = [sys.executable, str(FLOORS / "floor.py"), "data/external/crm.sqlite",
                 FLOOR_MODEL.get(model, "rf")]
    result: dict = {"rows": rows, "model": model,
                    **{k: [] for k in ("dag", "dag_fresh", "dag_cold", "dvc_forced", "floor",
                                       "noop", "dvc_floor", "batch_parquet", "batch_csv")}}
    stages = [name for name in stage_commands(ws) if name != "seed_demo_source"]
    full = "dvc repro -f -q --downstream collect"
    for _ in range(rounds):  # interleaved, so drifts in CPU speed hit both sides alike
        if rows <= 100_000:
            stop_warm_servers(ws)
            result["dag_fresh"].append(run(full, ws))
            result["dag"].append(run(full, ws))  # the server the run before started is up
            result["dvc_forced"].append(run(full, floor_dvc))
            result["dag_cold"].append(run(full, ws, COLD))
        else:  # one `dvc repro -s` per stage: per-stage time and peak from the same run
            result["stages"] = {name: run(f"dvc repro -f -q -s {name}", ws) for name in stages}
            result["dag"].append(Run(sum(s.wall for s in result["stages"].values()),
                                     sum(s.cpu for s in result["stages"].values()),
                                     max(s.peak_mb for s in result["stages"].values())))
        fits, memory = floor_fits(rows)
        if fits:
            result["floor"].append(run(floor_cmd, ws))
        else:
            result["floor_skipped"] = memory
            print(f"{rows:,} rows: floor not run ({memory})", file=sys.stderr, flush=True)
        result["noop"].append(run("dvc repro -q", ws))
        result["dvc_floor"].append(run("dvc repro -q", floor_dvc))
    inputs = batch_inputs(ws)
    result["scored_rows"] = int(run_python(ws, "import pyarrow.parquet as pq; print(pq.ParquetFile("
                                               "'data/interim/clean.parquet').metadata.num_rows)"))
    for _ in range(rounds):
        for kind, path in inputs.items():
            out = ws / f"bench-scores.{kind}"
            result[f"batch_{kind}"].append(run(
                [sys.executable, "-m", "lifecycle.serving", "predict", "--bundle", "models/bundle",
                 "--input", str(path), "--output", str(out)], ws))
    if rows <= 100_000:
        result["stages"] = {name: run(argv, ws, COLD) for name, argv in stage_commands(ws).items()
                            if name in stages}
        for _ in range(2):  # the second time with the server the first started
            result["stages_warm"] = {name: run(argv, ws) for name, argv in
                                     stage_commands(ws).items() if name in stages}
    result["load"] = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    return result


def run_python(cwd: Path, code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=ENV, check=True,
                          capture_output=True, text=True).stdout.strip()


def median(runs: list[Run], field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs)


def report(r: dict) -> str:
    """The table for one size, as Markdown."""
    load = r["load"]
    lines = [f"\n### {r['rows']:,} rows, {r['model']} (median of {len(r['dag'])}; load average "
             f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} before, "
             f"{load[3]:.2f} / {load[4]:.2f} / {load[5]:.2f} after, on {os.cpu_count()} cores)\n",
             "| work | wall s | CPU s | peak MB | floor wall s | floor CPU s | ratio wall | "
             "ratio CPU |", "|---|---|---|---|---|---|---|---|"]

    def line(label: str, runs: list[Run], floor: list[Run]) -> None:
        w, c = median(runs, "wall"), median(runs, "cpu")
        peak = max(x.peak_mb for x in runs)
        if not floor:
            lines.append(f"| {label} | {w:.2f} | {c:.2f} | {peak:.0f} | not run: "
                         f"{r['floor_skipped']} | - | - | - |")
            return
        f_w, f_c = median(floor, "wall"), median(floor, "cpu")
        lines.append(f"| {label} | {w:.2f} | {c:.2f} | {peak:.0f} | {f_w:.2f} | {f_c:.2f} | "
                     f"{w / f_w:.2f}x | {c / f_c:.2f}x |")

    line("full `dvc repro -f` (seed excluded), warm server up, vs floor.py", r["dag"],
         r["floor"])
    if r["dag_fresh"]:
        line("the same, fresh warm server (first run after idle), vs floor.py", r["dag_fresh"],
             r["floor"])
        line("the same, cold (`LIFECYCLE_WARM=0`, a process per stage), vs floor.py",
             r["dag_cold"], r["floor"])
        line("warm server up vs DVC alone on the same shape (`dvc repro -f`)", r["dag"],
             r["dvc_forced"])
    line("no-op `dvc repro` vs DVC on the same shape", r["noop"], r["dvc_floor"])
    for kind in ("parquet", "csv"):
        runs = r[f"batch_{kind}"]
        w = median(runs, "wall")
        lines.append(f"| batch scoring {kind} -> {kind}: {r['scored_rows'] / w:,.0f} rows/s | "
                     f"{w:.2f} | {median(runs, 'cpu'):.2f} | "
                     f"{max(x.peak_mb for x in runs):.0f} | - | - | - | - |")
    warm = r.get("stages_warm", {})
    lines += ["", "| stage | wall s | CPU s | peak MB | warm runner wall s |",
              "|---|---|---|---|---|"]
    for name, s in r["stages"].items():
        w = f"{warm[name].wall:.2f}" if name in warm else "-"
        lines.append(f"| {name} | {s.wall:.2f} | {s.cpu:.2f} | {s.peak_mb:.0f} | {w} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[7043, 1_000_000])
    parser.add_argument("--10m", dest="ten_million", action="store_true",
                        help="add 10,000,000 rows (about half an hour, 24 GB machine)")
    parser.add_argument("--model", default="logistic_regression")
    parser.add_argument("--rounds", type=int, default=3, help="rounds below 100,000 rows")
    args = parser.parse_args()
    sizes = args.rows + ([10_000_000] if args.ten_million else [])
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-dag-") as tmp:
        ENV["LIFECYCLE_WARM_DIR"] = str(Path(tmp) / "warm")  # this bench's servers only
        for rows in sizes:
            results.append(bench(rows, args.model, args.rounds if rows <= 100_000 else 1,
                                 Path(tmp)))
            print(report(results[-1]), flush=True)
        stop_warm_servers(Path(tmp))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    plain = [{k: ([asdict(x) for x in v] if isinstance(v, list) and k != "load" else
                  {n: asdict(s) for n, s in v.items()} if k.startswith("stages") else v)
              for k, v in r.items()} for r in results]
    (out / f"dag-{args.model}.json").write_text(json.dumps(plain, indent=2))


if __name__ == "__main__":
    main()
