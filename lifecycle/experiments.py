"""Experiments: queue a grid of `dvc exp run`s, wait for the queue, rank them in a leaderboard.

`sweep` turns a grid (sweep.yaml, or GRID="train.model=a,b train.seed=1,2") into DVC's own
sweep syntax (`dvc exp run --queue -S key=v1,v2`), runs it with `dvc queue start -j N`, waits,
and prints each failed experiment's log (`dvc queue logs`). `compare` parses `dvc exp show --json`
into a Markdown leaderboard: the params that vary, the key metrics, sorted by the primary one.
The metric helpers (flattening, directions, name lookup, Markdown) are shared with
`lifecycle.report`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lifecycle import models, params
from lifecycle.errors import ParamsError, StageError

MetricKey = tuple[str, str]  # (metrics file, dotted key inside it)


# --- metrics: names, directions, formatting (shared with lifecycle.report) -------------------
def flatten(tree: object, prefix: str = "") -> dict[str, object]:
    """Nested dicts as dotted keys, the way `dvc metrics show` names them."""
    if not isinstance(tree, Mapping):
        return {prefix: tree} if prefix else {}
    flat: dict[str, object] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def direction(key: str, higher_is_better: Iterable[str], lower_is_better: Iterable[str]):
    """'higher', 'lower' or None for a metric key, judged by its full key or its last part."""
    last = key.rsplit(".", 1)[-1]
    if key in lower_is_better or last in lower_is_better:
        return "lower"
    if key in higher_is_better or last in higher_is_better:
        return "higher"
    return None


def resolve_metric(name: str, available: Iterable[MetricKey], preferred_file: str,
                   where: str) -> MetricKey | None:
    """The (file, key) a metric name means: `file:key`, or a bare key found in one file.

    A bare key present in several files resolves to `preferred_file` (the model's scores),
    otherwise it is ambiguous and must be written as `file:key`. None when it is nowhere.
    """
    available = set(available)
    if ":" in name:
        file, key = name.rsplit(":", 1)
        return (file, key) if (file, key) in available else None
    files = sorted({f for f, k in available if k == name})
    if not files:
        return None
    if len(files) == 1:
        return files[0], name
    if preferred_file in files:
        return preferred_file, name
    raise ParamsError(f"{where}: metric '{name}' is in {', '.join(files)}; "
                      f"write it as '<file>:{name}'")


def fmt(value: object) -> str:
    """A value for a Markdown cell: numbers with 4 significant decimals, none as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e4 or (value and abs(value) < 1e-3) \
            else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured Markdown table ('|' inside cells escaped)."""
    def cell(v: object) -> str:
        return (v if isinstance(v, str) else fmt(v)).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# --- running dvc --------------------------------------------------------------------------
def dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the dvc CLI; a failure is one StageError carrying its output.

    Output goes through a file, not a pipe: `dvc queue start` leaves workers behind that
    inherit it, and reading a pipe would wait for them to exit.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(["dvc", *args], text=True, stdout=out, stderr=err)
        out.seek(0)
        err.seek(0)
        proc.stdout, proc.stderr = out.read(), err.read()
    if check and proc.returncode != 0:
        raise StageError(f"`dvc {' '.join(args)}` failed:\n{proc.stdout}{proc.stderr}".strip())
    return proc


# --- the grid -----------------------------------------------------------------------------
Grid = dict[str, list]  # dotted param -> values; every combination is one experiment


def parse_grid_string(text: str) -> list[Grid]:
    """GRID="train.model=a,b train.logistic_regression.C=0.1,1" as one grid (values as YAML)."""
    grid: Grid = {}
    for item in text.split():
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ParamsError(f"GRID: '{item}' is not param=value1,value2,...")
        grid[key] = [yaml.safe_load(v) for v in values.split(",")]
    return [grid] if grid else []


def load_grid(path: Path) -> list[Grid]:
    """sweep.yaml: a mapping param -> list of values, or a list of such mappings (grids)."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ParamsError(f"{path} not found: write a grid there or pass GRID=...") from exc
    grids = doc if isinstance(doc, list) else [doc]
    out = []
    for i, grid in enumerate(grids):
        where = f"{path}" + (f"[{i}]" if isinstance(doc, list) else "")
        if not isinstance(grid, dict) or not grid:
            raise ParamsError(f"{where}: expected a mapping of param -> list of values")
        out.append({str(k): v if isinstance(v, list) else [v] for k, v in grid.items()})
        empty = [k for k, v in out[-1].items() if not v]
        if empty:
            raise ParamsError(f"{where}: {empty[0]}: the list of values is empty")
    return out


def combinations(grid: Grid) -> list[dict[str, object]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def check_grid(grids: list[Grid], params_file: Path, where: str) -> int:
    """Check every combination against params.yaml and its models before queueing anything.

    A key that is not in params.yaml (DVC would silently add it) or a value its section's model
    rejects is one ParamsError naming it. Returns the number of experiments.
    """
    base = yaml.safe_load(Path(params_file).read_text()) or {}
    count = 0
    for grid in grids:
        for key in grid:
            node = base
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    raise ParamsError(f"{where}: {key} is not a key of {params_file}")
                node = node[part]
        for combo in combinations(grid):
            count += 1
            trial = json.loads(json.dumps(base))
            for key, value in combo.items():
                *path, last = key.split(".")
                node = trial
                for part in path:
                    node = node[part]
                node[last] = value
            with tempfile.TemporaryDirectory() as tmp:
                trial_file = Path(tmp) / "params.yaml"
                trial_file.write_text(yaml.safe_dump(trial, sort_keys=False))
                sections = {**params.SECTIONS, "train": models.TrainParams}
                for section in {k.split(".")[0] for k in combo} & set(sections):
                    try:
                        params.load(section, trial_file, sections[section])
                    except ParamsError as exc:
                        raise ParamsError(f"{where} {combo}: {exc}") from exc
    return count


def hydra_value(value: object) -> str:
    """One value in the override syntax `dvc exp run -S` parses (Hydra's)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if re.fullmatch(r"[A-Za-z_][\w\-./]*", text) and text.lower() not in ("null", "true",
                                                                             "false"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def set_args(grid: Grid) -> list[str]:
    """`-S key=v1,v2` per param: DVC queues the product of the comma-separated sweeps."""
    args = []
    for key, values in grid.items():
        args += ["-S", f"{key}=" + ",".join(hydra_value(v) for v in values)]
    return args


# --- the queue ----------------------------------------------------------------------------
def queue_grid(grid: Grid, targets: list[str]) -> list[str]:
    """Queue every combination of one grid; the names DVC gave the experiments."""
    proc = dvc("exp", "run", "--queue", *set_args(grid), *targets)
    names = re.findall(r"Queued experiment '([^']+)'", proc.stdout + proc.stderr)
    if len(names) != len(combinations(grid)):
        raise StageError(f"expected {len(combinations(grid))} queued experiments, dvc reported "
                         f"{len(names)}:\n{proc.stdout}{proc.stderr}".strip())
    return names


def queue_states() -> dict[str, str]:
    """Experiment name -> Queued | Running | Success | Failed, from `dvc queue status`."""
    states = {}
    for line in dvc("queue", "status").stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] != "Task" and re.fullmatch(r"[0-9a-f]{7,}", parts[0]):
            states[parts[1]] = parts[-1]
    return states


def wait(names: list[str], poll: float, timeout: float | None) -> dict[str, str]:
    """Poll the queue until none of `names` is queued or running; their final states."""
    start, last = time.monotonic(), ""
    while True:
        everything = queue_states()
        states = {n: everything.get(n, "Unknown") for n in names}
        counts = {s: sum(v == s for v in states.values()) for s in sorted(set(states.values()))}
        line = ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
        if line != last:
            print(f"sweep: {line} ({time.monotonic() - start:.0f} s)", file=sys.stderr)
            last = line
        if not {"Queued", "Running"} & set(states.values()):
            return states
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(f"experiments still running after {timeout:.0f} s")
        time.sleep(poll)


def failure_log(name: str, lines: int = 40) -> str:
    """The last lines of a failed experiment's output (`dvc queue logs NAME`)."""
    proc = dvc("queue", "logs", name, check=False)
    text = (proc.stdout + proc.stderr).rstrip().splitlines()
    return "\n".join(text[-lines:])


def sweep(grids: list[Grid], jobs: int, targets: list[str], poll: float,
          timeout: float | None) -> tuple[list[str], dict[str, str]]:
    """Queue the grids, run them on `jobs` workers, wait; names and final states.

    The workers are told to stop once the queue is empty (and killed on timeout or Ctrl-C), so
    no celery process outlives the sweep.
    """
    names: list[str] = []
    for grid in grids:
        names += queue_grid(grid, targets)
    print(f"sweep: queued {len(names)} experiments: {' '.join(names)}", file=sys.stderr)
    dvc("queue", "start", "-j", str(jobs))
    try:
        states = wait(names, poll, timeout)
    except (KeyboardInterrupt, TimeoutError):
        dvc("queue", "kill", *names, check=False)
        dvc("queue", "stop", "--kill", check=False)
        raise
    dvc("queue", "stop", check=False)
    return names, states


# --- the leaderboard ----------------------------------------------------------------------
@dataclass
class Row:
    name: str
    rev: str
    state: str  # baseline | success | failed | queued | running
    params: dict[str, object] = field(default_factory=dict)
    metrics: dict[MetricKey, object] = field(default_factory=dict)


def _data(entry: dict) -> tuple[dict[str, object], dict[MetricKey, object]]:
    data = entry.get("data") or {}
    flat_params: dict[str, object] = {}
    for file, content in (data.get("params") or {}).items():
        prefix = "" if file == "params.yaml" else f"{file}:"
        for key, value in flatten((content or {}).get("data") or {}).items():
            flat_params[prefix + key] = value
    metrics = {(file, key): value
               for file, content in (data.get("metrics") or {}).items()
               for key, value in flatten((content or {}).get("data") or {}).items()}
    return flat_params, metrics


def experiment_rows(show: list[dict]) -> list[Row]:
    """The baseline commit and each of its experiments from `dvc exp show --json`.

    Queued, running and failed experiments keep their params but show no metrics: what DVC
    reports for them is the baseline's.
    """
    rows = []
    for commit in show:
        if commit.get("rev") == "workspace":
            continue
        p, m = _data(commit)
        rows.append(Row(commit.get("name") or commit["rev"][:7], commit["rev"][:7], "baseline",
                        p, m))
        for exp in commit.get("experiments") or []:
            latest = (exp.get("revs") or [{}])[0]
            state = ((exp.get("executor") or {}).get("state") or "success").lower()
            p, m = _data(latest)
            if latest.get("error") and state == "success":
                state = "failed"
            rows.append(Row(exp.get("name") or latest.get("name") or latest["rev"][:7],
                            latest.get("rev", "")[:7], state, p,
                            m if state == "success" else {}))
    return rows


def varying_params(rows: list[Row]) -> list[str]:
    """Params whose values differ between rows (in params.yaml order)."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row.params if k not in keys]
    return [k for k in keys
            if len({json.dumps(r.params.get(k), sort_keys=True) for r in rows}) > 1]


def leaderboard(rows: list[Row], report: params.ReportParams) -> tuple[str, Row | None, str]:
    """The Markdown leaderboard, best first by the primary metric; the best experiment and
    its primary metric as text."""
    available = {k for r in rows for k in r.metrics}
    where = "params.yaml: report"
    wanted = list(dict.fromkeys([report.primary_metric, *report.leaderboard_metrics]))
    columns = [(n, k) for n in wanted
               if (k := resolve_metric(n, available, report.metrics_file, where)) is not None]
    primary = dict(columns).get(report.primary_metric)
    lower = primary is not None and direction(
        primary[1], report.higher_is_better, report.lower_is_better) == "lower"

    def number(row: Row) -> float | None:
        value = row.metrics.get(primary) if primary else None
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    # stable sort: ties and rows without the metric keep DVC's order, the latter last
    ranked = sorted(rows, key=lambda r: (number(r) is None,
                                         0 if number(r) is None else
                                         (number(r) if lower else -number(r))))
    varying = varying_params(rows)
    headers = ["#", "experiment", "rev", "state", *varying, *[n for n, _ in columns]]
    table = [[i, r.name, r.rev, r.state, *[r.params.get(k) for k in varying],
              *[r.metrics.get(key) for _, key in columns]] for i, r in enumerate(ranked, 1)]
    text = markdown_table(headers, table)
    missing = [n for n in wanted if n not in dict(columns)]
    if missing:
        text += f"\n\nNot in any row's metrics: {', '.join(missing)}."
    best = next((r for r in ranked if r.state in ("success", "baseline")
                 and number(r) is not None), None)
    return text, best, fmt(number(best)) if best else ""


def how_to_keep(name: str) -> str:
    """The three DVC commands that keep an experiment (the README shows them too)."""
    return (f"  dvc exp apply {name}             # its params, metrics and outputs into the "
            "workspace; then git commit\n"
            f"  dvc exp branch {name} <branch>   # or a git branch of its own\n"
            f"  dvc exp push origin {name}       # share it: git ref + DVC cache to the remotes")


def compare(names: list[str] | None = None, all_commits: bool = False) -> str:
    """The leaderboard of HEAD's experiments (or only `names`) as Markdown, with how to keep
    the best one."""
    report = params.load("report")
    show = json.loads(dvc("exp", "show", "--json", *(["-A"] if all_commits else [])).stdout)
    rows = experiment_rows(show)
    if names is not None:
        rows = [r for r in rows if r.state == "baseline" or r.name in names]
    text, best, value = leaderboard(rows, report)
    experiments = sum(r.state != "baseline" for r in rows)
    out = f"## Experiments: {experiments}, best first by {report.primary_metric}\n\n{text}\n"
    if experiments == 0:
        out += "\nNo experiments of this commit yet: make sweep (or dvc exp run -S ...).\n"
    elif best is not None and best.state == "baseline":
        out += (f"\nNo experiment beats the baseline {best.name} "
                f"({report.primary_metric} {value}).\n")
    elif best is not None:
        out += (f"\nBest: {best.name} ({report.primary_metric} {value}). Keep it with:\n"
                f"```\n{how_to_keep(best.name)}\n```\n")
    return out


# --- command line -------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep", help="queue a grid of experiments and run it")
    s.add_argument("--grid-file", default="sweep.yaml", help="YAML: param -> list of values")
    s.add_argument("--grid", default="", help='instead of the file: "a.b=1,2 c=x,y"')
    s.add_argument("--jobs", type=int, default=1, help="parallel queue workers")
    s.add_argument("--targets", nargs="*", default=[], help="stages to run to (default: all)")
    s.add_argument("--poll", type=float, default=5.0, help="seconds between queue checks")
    s.add_argument("--timeout", type=float, default=None, help="give up after this many s")
    c = sub.add_parser("compare", help="leaderboard of this commit's experiments")
    c.add_argument("--all-commits", action="store_true", help="experiments of every commit")
    args = parser.parse_args(argv)
    try:
        if args.command == "compare":
            print(compare(all_commits=args.all_commits))
            return 0
        where = "GRID" if args.grid else args.grid_file
        grids = parse_grid_string(args.grid) if args.grid else load_grid(Path(args.grid_file))
        if args.jobs < 1:
            raise ParamsError(f"JOBS must be at least 1 (got {args.jobs})")
        count = check_grid(grids, params.PARAMS_FILE, where)
        print(f"sweep: {count} experiments from {where} on {args.jobs} worker(s)",
              file=sys.stderr)
        start = time.monotonic()
        names, states = sweep(grids, args.jobs, args.targets, args.poll, args.timeout)
        failed = [n for n, s in states.items() if s != "Success"]
        for name in failed:
            print(f"\nsweep: experiment {name} {states[name].lower()}; its log "
                  f"(dvc queue logs {name}):\n{failure_log(name)}\n", file=sys.stderr)
        print(compare(names))
        print(f"sweep: {len(names) - len(failed)}/{len(names)} experiments succeeded in "
              f"{time.monotonic() - start:.0f} s"
              + (f"; failed: {' '.join(failed)}" if failed else ""), file=sys.stderr)
        return 1 if failed else 0
    except ParamsError as exc:
        print(f"{args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (StageError, TimeoutError) as exc:
        print(f"{args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
