"""Monitoring statistics, measured: alarm rates per shift x check, label-free coverage, scale.

    python bench/monitoring_power.py [--windows 50] [--size 1000] [--scale-rows 1000000]

Needs the reproduced project (`make run`: models/bundle, data/processed/test.parquet).

1. Power and false alarms: for each shift of the traffic simulator (lifecycle/monitoring/
   simulate.py: none, and the medium shifts it defines), `--windows` seeded windows of `--size`
   requests, drawn from the held-out test rows and scored by the bundle in-process (the same
   `draw` as `make simulate`, the same bundle as the API), judged by every check with the
   params.yaml settings. A cell is the share of windows whose check says drift (dataset level).
2. Label-free estimates: on unshifted and covariate-shifted windows, the share of windows whose
   CBPE estimate (ROC AUC, accuracy) falls inside the realized 95% interval (DeLong, Wilson).
3. Evidently's `DataDriftPreset` (0.7.23, in its own venv bench/.venv-evidently, created here:
   it does not import with pandas 3) on the very same windows and reference rows: its dataset
   drift (>= 50% of columns drift, its default) and "any column drifts".
4. Scale: `--scale-rows` recorded predictions (a registry export: half unshifted, half with
   prices +10%), our monitoring run (every check, windows of 100,000) vs DataDriftPreset on the
   same windows (a report per window), each in its own process, interleaved (ours, Evidently,
   ours): wall time, CPU time, peak RSS, the load average around each, and the windows each
   alarmed on.
5. Repeated records: multivariate_drift on unshifted windows of 10 x `--size` rows drawn with
   replacement from the test split (as the scale export is): its false-alarm rate.

Outputs under bench/results/: monitoring_*.json per part and monitoring_power.md merging them
(the JSON and the report are committed; the registry exports and Evidently's inputs are not).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
EVIDENTLY_VENV = ROOT / "bench" / ".venv-evidently"
EVIDENTLY_VERSION = "0.7.23"
CHECK_COLUMNS = ["data_drift", "multivariate_drift", "prediction_drift", "data_quality",
                 "performance", "performance_estimate", "concept_drift"]
OWN_CHECK = {"none": None, "contract_mix": "data_drift", "price": "data_drift",
             "prior": "prediction_drift", "concept": "concept_drift", "quality": "data_quality"}


def setup():
    from lifecycle import params
    from lifecycle.contract import load_contract
    from lifecycle.monitoring import reference
    from lifecycle.packaging.runtime import load_bundle

    bundle = load_bundle(ROOT / "models" / "bundle")
    ref = reference.load(ROOT / "models" / "bundle")
    contract = load_contract(ROOT / "contract.yaml")
    import pandas as pd

    pool = pd.read_parquet(ROOT / "data" / "processed" / "test.parquet")
    p = params.load("monitor", ROOT / "params.yaml")
    return bundle, ref, contract, pool, p


def labels(contract):
    target, positive = contract.target.column, str(contract.target.positive)
    negative = next(str(v) for v in contract.columns[target].allowed if str(v) != positive)
    return target, positive, negative


def power(windows: int, size: int, seed: int, shifts=None, only=None) -> tuple[dict, dict]:
    """Alarm rates and coverage; writes the windows' inputs for Evidently."""
    import pandas as pd

    from lifecycle.monitoring import run, simulate
    from lifecycle.monitoring.checks import CHECKS
    from lifecycle.monitoring.windows import Window

    checks = {c: f for c, f in CHECKS.items() if not only or c in only}

    bundle, ref, contract, pool, p = setup()
    target, positive, negative = labels(contract)
    fields = [contract.id, *contract.feature_columns]
    features = list(ref.kinds)
    rates, coverage, seconds = {}, {}, {}
    inputs = RESULTS / "evidently_in"
    inputs.mkdir(parents=True, exist_ok=True)
    ref.features.to_parquet(inputs / "reference.parquet")
    for k, shift in enumerate(simulate.SHIFTS):
        if shifts and shift not in shifts:
            continue
        verdicts, inside, frames = [], {"roc_auc": [], "accuracy": []}, []
        start = time.perf_counter()
        for i in range(windows):
            rows = simulate.draw(pool, shift, size, seed + 1000 * k + i, target, positive,
                                 negative)
            scored = simulate.score_window(bundle, rows, target, fields)
            window = Window(i, None, None, scored, bundle.version)
            judged = run.judge([window], ref, p, checks)[0]["checks"]
            v = {c: run.check_verdict(judged, c) for c in CHECK_COLUMNS}
            for r in judged:
                if r["check"] == "concept_drift":
                    v[f"concept_drift.{r['target']}"] = r["verdict"]
            v["any"] = "drift" if "drift" in {v[c] for c in CHECK_COLUMNS} else "ok"
            verdicts.append(v)
            real = {r["target"]: r for r in judged if r["check"] == "performance"}
            est = {r["target"]: r for r in judged if r["check"] == "performance_estimate"}
            for m in inside:
                if m in real and m in est and real[m]["low"] is not None:
                    inside[m].append(real[m]["low"] <= est[m]["value"] <= real[m]["high"])
            frames.append(scored[features].assign(window=i))
        seconds[shift] = time.perf_counter() - start
        pd.concat(frames, ignore_index=True).to_parquet(inputs / f"{shift}.parquet")
        keys = verdicts[0].keys()
        rates[shift] = {c: sum(v[c] == "drift" for v in verdicts) / len(verdicts) for c in keys}
        coverage[shift] = {m: (sum(x) / len(x) if x else None) for m, x in inside.items()}
        print(f"{shift}: {windows} windows in {seconds[shift]:.0f} s: "
              + ", ".join(f"{c} {r:.2f}" for c, r in rates[shift].items())
              + f"; CBPE inside the realized 95% CI: {coverage[shift]}", flush=True)
    return rates, {"coverage": coverage, "seconds": seconds}


def resampled(windows: int, size: int, seed: int) -> dict:
    """multivariate_drift's false-alarm rate on unshifted windows drawn WITH replacement (the
    scale export's rows repeat: `size` rows from the test split's ~1,400), where repeated
    records on both sides of the classifier's split used to make it alarm by memorisation."""
    from lifecycle.monitoring import multivariate, simulate
    from lifecycle.monitoring.windows import Window

    bundle, ref, contract, pool, p = setup()
    target, positive, negative = labels(contract)
    out = []
    for i in range(windows):
        rows = simulate.draw(pool, "none", size, seed + i, target, positive, negative)
        [r] = multivariate.domain_classifier(Window(i, None, None, rows, bundle.version), ref,
                                             p.multivariate_drift)
        out.append(r.as_dict())
    rate = sum(r["verdict"] == "drift" for r in out) / len(out)
    print(f"multivariate_drift on {windows} resampled windows of {size}: false alarms {rate:.2f}",
          flush=True)
    return {"windows": windows, "size": size, "pool": len(pool), "false_alarm_rate": rate,
            "auc_mean": sum(r["value"] for r in out) / len(out),
            "auc_max": max(r["value"] for r in out)}


# --- Evidently, in its own venv ---------------------------------------------------------
EVIDENTLY_SCRIPT = r'''
import json, resource, sys, time
import pandas as pd
from evidently import Dataset, DataDefinition, Report
from evidently.presets import DataDriftPreset

mode, reference_path, current_path, kinds_json, limit = sys.argv[1:6]
kinds = json.loads(kinds_json)
definition = DataDefinition(
    numerical_columns=[c for c, k in kinds.items() if k == "number"],
    categorical_columns=[c for c, k in kinds.items() if k == "category"])

def plain(frame):
    """Numbers as float64, categories as text: what Evidently expects of each kind."""
    out = frame[list(kinds)].copy()
    for c, k in kinds.items():
        out[c] = (pd.to_numeric(out[c], errors="coerce").astype("float64") if k == "number"
                  else out[c].astype(object).where(out[c].notna(), None))
    return out

reference = plain(pd.read_parquet(reference_path))

def judge(current):
    snapshot = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(plain(current), data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition))
    for metric in snapshot.dict()["metrics"]:
        if metric["metric_name"].startswith("DriftedColumnsCount"):
            return metric["value"]["count"], metric["value"]["share"]
    raise SystemExit("no DriftedColumnsCount in the report")

start = time.perf_counter()
if mode == "windows":
    frame = pd.read_parquet(current_path)
    out = [judge(part) for w, part in frame.groupby("window", sort=True) if w < int(limit)]
else:
    out = [judge(pd.read_parquet(current_path))]
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"windows": out, "seconds": seconds, "reference_rows": len(reference),
                  "cpu_seconds": usage.ru_utime + usage.ru_stime,
                  "peak_mb": usage.ru_maxrss / 1024}))
'''


def evidently_python() -> Path:
    python = EVIDENTLY_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
    check = subprocess.run([str(python), "-c", "import evidently; print(evidently.__version__)"],
                           capture_output=True, text=True)
    if check.stdout.strip() != EVIDENTLY_VERSION:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        f"evidently=={EVIDENTLY_VERSION}", "pandas<3", "numpy<2.3", "pyarrow"],
                       check=True)
    return python


def evidently(mode: str, current: Path, kinds: dict, limit: int = 0) -> dict:
    script = RESULTS / "evidently_run.py"
    script.write_text(EVIDENTLY_SCRIPT)
    proc = subprocess.run([str(evidently_python()), str(script), mode,
                           str(RESULTS / "evidently_in" / "reference.parquet"), str(current),
                           json.dumps(kinds), str(limit)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode:
        raise SystemExit(f"evidently failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def evidently_rates(kinds: dict, limit: int) -> dict:
    """DataDriftPreset on the first `limit` windows of each shift (waits for `power` to write
    them when both run at once)."""
    from lifecycle.monitoring import simulate

    out = {}
    for shift in simulate.SHIFTS:
        path = RESULTS / "evidently_in" / f"{shift}.parquet"
        while not path.exists():
            time.sleep(5)
        time.sleep(5)
        got = evidently("windows", path, kinds, limit)
        windows = got["windows"]
        out[shift] = {"windows": len(windows),
                      "dataset_drift": sum(share >= 0.5 for _, share in windows) / len(windows),
                      "any_column": sum(count >= 1 for count, _ in windows) / len(windows),
                      "seconds": got["seconds"]}
        print(f"evidently {shift}: {out[shift]}", flush=True)
    return out


# --- scale ------------------------------------------------------------------------------
def make_export(rows: int, path: Path, seed: int) -> None:
    """A registry export of `rows` answers (held-out rows, unshifted, with outcomes)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lifecycle.monitoring import simulate

    bundle, ref, contract, pool, _ = setup()
    target, positive, negative = labels(contract)
    fields = [contract.id, *contract.feature_columns]
    writer = None
    chunk = 100_000
    for start in range(0, rows, chunk):
        drawn = simulate.draw(pool, "price" if start >= rows // 2 else "none",
                              min(chunk, rows - start), seed + start, target, positive,
                              negative)
        scored = simulate.score_window(bundle, drawn, target, fields, start=float(start))
        out = {f"input.{c}": scored[c] for c in ref.kinds}
        out.update(request_id=[f"r{start + i:09d}" for i in range(len(scored))],
                   role="served", created_at=scored["created_at"] + np.timedelta64(start, "s"),
                   model_version=scored["model_version"], prediction=scored["prediction"],
                   probability=scored["score"], outcome=scored["outcome"])
        import pandas as pd

        table = pa.Table.from_pandas(pd.DataFrame(out), preserve_index=False)
        writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table)
    writer.close()


def ours_on(path: str, window: int) -> None:
    """Our monitoring run on an export (run in its own process by `scale`)."""
    import resource

    from lifecycle.monitoring import reference, run, source, windows

    start = time.perf_counter()
    _, _, _, _, p = setup()
    p = p.model_copy(update={"window": p.window.model_copy(update={"size": window})})
    ref = reference.load(ROOT / "models" / "bundle")
    rows = source.read(path, list(ref.kinds))
    judged = run.judge(windows.cut(rows, "count", window, "1D", ref.version), ref, p)
    seconds = time.perf_counter() - start
    verdicts = [{c: run.check_verdict(w["checks"], c) for c in CHECK_COLUMNS} for w in judged]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": seconds, "windows": len(judged), "verdicts": verdicts,
                      "cpu_seconds": usage.ru_utime + usage.ru_stime,
                      "peak_mb": usage.ru_maxrss / 1024}))


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def scale(rows: int, window: int, seed: int, kinds: dict) -> dict:
    """Ours and DataDriftPreset on the same export, interleaved (ours, Evidently, ours): the
    first half unshifted, the second half prices +10% (`make_export`); windows of `window`
    rows each, so the verdicts compare window by window on shifted and unshifted traffic."""
    from lifecycle.monitoring import reference

    path = RESULTS / f"registry_{rows}.parquet"
    if not path.exists():
        make_export(rows, path, seed)
    (RESULTS / "evidently_in").mkdir(parents=True, exist_ok=True)
    reference.load(ROOT / "models" / "bundle").features.to_parquet(
        RESULTS / "evidently_in" / "reference.parquet")
    # Evidently reads the same rows, as plain columns, with the same window numbers
    import pandas as pd

    current = RESULTS / f"evidently_current_{rows}_{window}.parquet"
    if not current.exists():
        frame = pd.read_parquet(path, columns=[f"input.{c}" for c in kinds])
        frame.columns = list(kinds)
        frame["window"] = [i // window for i in range(len(frame))]
        frame.to_parquet(current)
        del frame

    def ours() -> dict:
        before = load()
        proc = subprocess.run([sys.executable, __file__, "--ours-on", str(path), "--size",
                               str(window)], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise SystemExit(f"our run failed:\n{proc.stderr[-3000:]}")
        return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load": [before, load()]}

    runs = [ours()]
    print(f"ours: {runs[0]['seconds']:.1f} s, {runs[0]['peak_mb']:.0f} MB, load {runs[0]['load']}",
          flush=True)
    before = load()
    theirs = {**evidently("windows", current, kinds, 10 ** 9), "load": [before, load()]}
    print(f"evidently: {theirs['seconds']:.1f} s, {theirs['peak_mb']:.0f} MB, "
          f"load {theirs['load']}", flush=True)
    runs.append(ours())
    print(f"ours: {runs[1]['seconds']:.1f} s, {runs[1]['peak_mb']:.0f} MB, load {runs[1]['load']}",
          flush=True)
    shifted = [i * window >= rows // 2 for i in range(len(runs[0]["verdicts"]))]
    side = {"ours": [v["data_drift"] == "drift" for v in runs[0]["verdicts"]],
            "evidently": [share >= 0.5 for _, share in theirs["windows"]],
            "evidently_any_column": [count >= 1 for count, _ in theirs["windows"]]}
    by_half = {name: {"unshifted": sum(d for d, s in zip(v, shifted, strict=True) if not s),
                      "shifted": sum(d for d, s in zip(v, shifted, strict=True) if s)}
               for name, v in side.items()}
    ours_seconds = sum(r["seconds"] for r in runs) / len(runs)
    ours_cpu = sum(r["cpu_seconds"] for r in runs) / len(runs)
    return {"rows": rows, "window": window, "windows": len(shifted),
            "windows_shifted": sum(shifted), "ours": runs, "evidently": theirs,
            "data_drift_windows": by_half, "speedup": theirs["seconds"] / ours_seconds,
            "speedup_cpu": theirs["cpu_seconds"] / ours_cpu}


# --- report -----------------------------------------------------------------------------
def markdown(rates: dict, extra: dict, ev: dict | None, sc: dict | None, windows: int,
             size: int) -> str:
    cols = [*CHECK_COLUMNS, "concept_drift.error_stream", "any"]
    head = ["shift", *cols] + ([f"Evidently dataset ({next(iter(ev.values()))['windows']} w)",
                                "Evidently any column"] if ev else [])
    lines = [f"Alarm rate per window ({windows} windows x {size} requests per cell; "
             "dataset-level verdict of each check)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for shift, r in rates.items():
        own = OWN_CHECK[shift]
        cells = [(f"**{r.get(c, 0):.2f}**" if c == own else f"{r.get(c, 0):.2f}") for c in cols]
        if ev:
            cells += [f"{ev[shift]['dataset_drift']:.2f}", f"{ev[shift]['any_column']:.2f}"]
        lines.append(f"| {shift} | " + " | ".join(cells) + " |")
    lines += ["", "Label-free estimate (CBPE) inside the realized 95% interval (DeLong, Wilson):",
              "",
              "| shift | ROC AUC | accuracy |", "|---|---|---|"]
    for shift, c in extra["coverage"].items():
        fmt = [("-" if c[m] is None else f"{c[m]:.2f}") for m in ("roc_auc", "accuracy")]
        lines.append(f"| {shift} | {fmt[0]} | {fmt[1]} |")
    if sc:
        e, runs = sc["evidently"], sc["ours"]
        half = sc["data_drift_windows"]
        lines += ["", f"Scale: {sc['rows']:,} recorded predictions in {sc['windows']} windows of "
                  f"{sc['window']:,} ({sc['windows'] - sc['windows_shifted']} unshifted, then "
                  f"{sc['windows_shifted']} with prices +10%), reference "
                  f"{e.get('reference_rows', '')} rows; run interleaved (ours, Evidently, "
                  "ours), each in its own process", "",
                  "| | wall seconds | CPU seconds | peak RSS (MB) | load average (1 min) "
                  "before, after | windows alarmed: unshifted | shifted |",
                  "|---|---|---|---|---|---|---|"]
        for i, o in enumerate(runs):
            lines.append(f"| ours, run {i + 1} (every check) | {o['seconds']:.1f} | "
                         f"{o['cpu_seconds']:.1f} | {o['peak_mb']:.0f} | "
                         f"{o['load'][0][0]}, {o['load'][1][0]} | "
                         f"{half['ours']['unshifted']} | {half['ours']['shifted']} |")
        lines.append(f"| Evidently DataDriftPreset (a report per window) | {e['seconds']:.1f} | "
                     f"{e['cpu_seconds']:.1f} | {e['peak_mb']:.0f} | "
                     f"{e['load'][0][0]}, {e['load'][1][0]} | "
                     f"{half['evidently']['unshifted']} | {half['evidently']['shifted']} |")
        lines += ["", f"Speed-up (Evidently / mean of ours): {sc['speedup']:.1f}x in wall time, "
                  f"{sc['speedup_cpu']:.1f}x in CPU time (CPU time survives the load). "
                  "Alarmed: ours = data_drift's dataset verdict; Evidently = its dataset drift "
                  "(half the columns or more); any column drifting in Evidently: "
                  f"{half['evidently_any_column']['unshifted']} unshifted, "
                  f"{half['evidently_any_column']['shifted']} shifted."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=50)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=20260)
    parser.add_argument("--scale-rows", type=int, default=1_000_000)
    parser.add_argument("--scale-window", type=int, default=100_000)
    parser.add_argument("--evidently-windows", type=int, default=50,
                        help="windows per shift given to Evidently (its reports are slow)")
    parser.add_argument("--shifts", help="comma-separated shifts (default: all)")
    parser.add_argument("--checks", help="comma-separated checks (default: all)")
    parser.add_argument("--parts", default="power,evidently,scale,resampled",
                        help="what to run (each saves its JSON; the report merges them)")
    parser.add_argument("--ours-on", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.ours_on:
        return ours_on(args.ours_on, args.size)
    RESULTS.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))

    def save(name, obj):
        (RESULTS / f"monitoring_{name}.json").write_text(json.dumps(obj, indent=2))

    def saved(name):
        path = RESULTS / f"monitoring_{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    from lifecycle.monitoring import reference

    kinds = reference.load(ROOT / "models" / "bundle").kinds
    if "power" in parts:
        shifts = args.shifts.split(",") if args.shifts else None
        only = args.checks.split(",") if args.checks else None
        rates, extra = power(args.windows, args.size, args.seed, shifts, only)
        name = "power" + (f"_{'_'.join(shifts)}" if shifts else "") + (
            f"_{'_'.join(only)}" if only else "")
        save(name, {"windows": args.windows, "size": args.size, "seed": args.seed,
                    "rates": rates, **extra})
    if "evidently" in parts:
        save("evidently", evidently_rates(kinds, args.evidently_windows))
    if "scale" in parts:
        save("scale", scale(args.scale_rows, args.scale_window, args.seed, kinds))
    if "resampled" in parts:
        save("resampled", resampled(args.windows, 10 * args.size, args.seed))
    got, ev, sc = saved("power"), saved("evidently"), saved("scale")
    if got:
        text = markdown(got["rates"], got, ev, sc, got["windows"], got["size"])
        rs = saved("resampled")
        if rs:
            text += (f"\nmultivariate_drift on {rs['windows']} unshifted windows of "
                     f"{rs['size']:,} rows drawn with replacement from {rs['pool']:,} test rows "
                     f"(repeated records): false-alarm rate {rs['false_alarm_rate']:.2f}, "
                     f"domain AUC mean {rs['auc_mean']:.3f}, max {rs['auc_max']:.3f}.\n")
        (RESULTS / "monitoring_power.md").write_text(text)
        print(text)


if __name__ == "__main__":
    main()
