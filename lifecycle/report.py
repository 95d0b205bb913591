"""Pull-request report: the workspace against a BASE revision, as report.md and PNG figures.

What changed and whether it is better: the params (`dvc params diff`), every metric with its delta
and direction (`dvc metrics diff`), data quality and the split, the feature manifest (added and
removed features, its hash), and the plots of both sides side by side, drawn offline with
matplotlib from the plot data of both revisions (BASE's read with `git show`; no network).
Regression gates (params.yaml: report.gates) make the command exit 1 naming each broken metric.

Usage: python -m lifecycle.report --base origin/main [--output report.md] [--figures DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from lifecycle import cli, params
from lifecycle.errors import StageError
from lifecycle.experiments import direction, flatten, fmt, markdown_table, resolve_metric

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg")
CONFUSION = ("confusion", "confusion_normalized")
MAX_BARS = 25  # a bar chart shows its largest bars only: a readable figure, not every feature


# --- reading both sides ---------------------------------------------------------------------
def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True)


def resolve_base(base: str) -> str:
    """The commit BASE names; one clear error if it names none."""
    proc = git("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
    if proc.returncode != 0:
        raise StageError(f"BASE '{base}' is not a git revision here (fetch it first: "
                         f"git fetch origin {base})")
    return proc.stdout.decode().strip()


def at_base(commit: str, path: str) -> bytes | None:
    """A git-tracked file's bytes at BASE (`git show BASE:path`), None if it is not there."""
    proc = git("show", f"{commit}:{path}")
    return proc.stdout if proc.returncode == 0 else None


def in_workspace(path: str) -> bytes | None:
    p = Path(path)
    return p.read_bytes() if p.is_file() else None


def dvc_json(*args: str) -> subprocess.Popen:
    """Start a `dvc ... --json` command (several run at once; collect with `finish`)."""
    return subprocess.Popen(["dvc", *args, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise StageError(f"`{' '.join(proc.args)}` failed: {err.strip() or out.strip()}")
    return json.loads(out or "{}")


# --- metrics and gates ----------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    file: str
    key: str
    old: object
    new: object
    direction: str | None  # higher | lower | None (neutral)

    @property
    def numeric(self) -> bool:
        return all(isinstance(v, int | float) and not isinstance(v, bool)
                   for v in (self.old, self.new))

    @property
    def delta(self) -> float | None:
        return self.new - self.old if self.numeric else None

    @property
    def verdict(self) -> str:
        if self.old is None:
            return "new"
        if self.new is None:
            return "gone"
        if self.old == self.new:
            return "same"
        if not self.numeric or self.direction is None:
            return "changed"
        better = self.delta > 0 if self.direction == "higher" else self.delta < 0
        return "better" if better else "worse"


def metric_changes(diff: dict, report: params.ReportParams, base: str) -> list[Change]:
    """Every metric of `dvc metrics diff --all --json`, with the direction its name implies,
    in the order the metrics files write them (DVC's JSON has none)."""
    changes = []
    for file, entries in diff.items():
        order: dict[str, int] = {}
        for raw in (in_workspace(file), at_base(base, file)):
            try:
                keys = flatten(yaml.safe_load(raw)) if raw else {}
            except yaml.YAMLError:
                keys = {}
            for key in keys:
                order.setdefault(key, len(order))
        for key in sorted(entries, key=lambda k: (order.get(k, len(order)), k)):
            v = entries[key]
            changes.append(Change(file, key, v.get("old"), v.get("new"),
                                  direction(key, report.higher_is_better,
                                            report.lower_is_better)))
    return changes


@dataclass(frozen=True)
class GateResult:
    metric: str
    change: Change | None
    limit: str
    ok: bool
    why: str


def check_gates(changes: list[Change], report: params.ReportParams) -> list[GateResult]:
    """Each gate against its metric: the worsening (in the metric's bad direction) must not
    exceed the gate's limit. A gated metric missing from the workspace breaks its gate; one
    missing at BASE passes (nothing to compare)."""
    by_key = {(c.file, c.key): c for c in changes}
    results = []
    for name, gate in report.gates.items():
        limit = f"{gate.limit * 100:.4g}% of BASE" if gate.relative else f"{gate.limit:.4g}"
        key = resolve_metric(name, by_key, report.metrics_file, "params.yaml: report.gates")
        change = by_key.get(key) if key else None
        if change is None or change.new is None:
            old = change.old if change else None
            results.append(GateResult(name, change, limit, False,
                                      "missing in the workspace"
                                      + (f" (BASE: {fmt(old)})" if old is not None else "")))
            continue
        if change.old is None:
            results.append(GateResult(name, change, limit, True, "new: nothing at BASE"))
            continue
        if not change.numeric:
            raise StageError(f"gate on '{name}': its value is not a number ({change.new!r})")
        if change.direction is None:
            raise params.ParamsError(
                f"params.yaml: report.gates.{name}: is higher or lower better? Add "
                f"'{change.key.rsplit('.', 1)[-1]}' to report.higher_is_better or "
                "report.lower_is_better")
        worse_by = -change.delta if change.direction == "higher" else change.delta
        allowed = gate.limit * abs(change.old) if gate.relative else gate.limit
        ok = worse_by <= allowed + 1e-12 or math.isclose(worse_by, allowed)
        word = "dropped" if change.direction == "higher" else "rose"
        why = (f"{word} {abs(change.delta):.4g} ({fmt(change.old)} -> {fmt(change.new)}), "
               f"allowed {allowed:.4g}") if worse_by > 0 else "not worse"
        results.append(GateResult(name, change, limit, ok, why))
    return results


# --- the feature manifest -------------------------------------------------------------------
def _features(manifest: dict) -> dict[str, dict]:
    """Feature name -> its entry, whether the manifest lists names, records or a mapping."""
    listed = manifest.get("features", [])
    if isinstance(listed, dict):
        return {str(k): v if isinstance(v, dict) else {"value": v} for k, v in listed.items()}
    out = {}
    for item in listed:
        if isinstance(item, dict):
            out[str(item.get("name"))] = item
        else:
            out[str(item)] = {}
    return out


def _manifest_hash(manifest: dict, raw: bytes) -> str:
    for key in ("hash", "version", "version_hash", "sha256", "fingerprint"):
        if isinstance(manifest.get(key), str):
            return manifest[key]
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:12]


def feature_changes(old_raw: bytes | None, new_raw: bytes | None) -> dict:
    """Added and removed features, features whose definition changed, and both hashes."""
    old = json.loads(old_raw) if old_raw else {}
    new = json.loads(new_raw) if new_raw else {}
    before, after = _features(old), _features(new)

    def definition(entry: dict) -> dict:  # importance etc. move with every retrain; not a change
        return {k: v for k, v in entry.items()
                if not (isinstance(v, int | float) and not isinstance(v, bool))}

    return {
        "count": (len(before) if old_raw else None, len(after) if new_raw else None),
        "added": [f for f in after if f not in before],
        "removed": [f for f in before if f not in after],
        "redefined": [f for f in after if f in before
                      and definition(after[f]) != definition(before[f])],
        "hash": (_manifest_hash(old, old_raw) if old_raw else None,
                 _manifest_hash(new, new_raw) if new_raw else None),
    }


# --- plots ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlotSpec:
    file: str
    x: str | None = None
    ys: tuple[str, ...] = ()
    template: str = "linear"
    title: str | None = None

    @property
    def image(self) -> bool:
        return self.file.lower().endswith(IMAGE_SUFFIXES)


def _props(file: str, props: dict | None) -> PlotSpec:
    props = props or {}
    y = props.get("y")
    ys = tuple(y) if isinstance(y, list) else ((y,) if isinstance(y, str) else ())
    x = props.get("x") if isinstance(props.get("x"), str) else None
    return PlotSpec(file, x, ys, props.get("template", "linear"), props.get("title"))


def plot_specs(dvc_yaml: dict) -> list[PlotSpec]:
    """Every plot file dvc.yaml declares (stage `plots:` outputs and top-level `plots:`)."""
    specs: list[PlotSpec] = []
    for stage in (dvc_yaml.get("stages") or {}).values():
        for item in stage.get("plots") or []:
            if isinstance(item, str):
                specs.append(PlotSpec(item))
            else:
                specs += [_props(f, p) for f, p in item.items()]
    for item in dvc_yaml.get("plots") or []:
        if isinstance(item, str):
            specs.append(PlotSpec(item))
            continue
        for plot_id, props in item.items():
            props = props or {}
            if isinstance(props.get("y"), dict):  # y: {file: field(s)}, x: field or {file: field}
                for file, fields in props["y"].items():
                    x = props.get("x")
                    specs.append(_props(file, {**props, "y": fields,
                                               "x": x.get(file) if isinstance(x, dict) else x}))
            else:
                specs.append(_props(plot_id, props))
    unique: dict[str, PlotSpec] = {}
    for spec in specs:
        unique.setdefault(spec.file, spec)
    return list(unique.values())


def _expand_dirs(specs: list[PlotSpec], base: str) -> list[PlotSpec]:
    """A plot output that is a folder stands for each file in it (on either side)."""
    out = []
    for spec in specs:
        if spec.file.lower().endswith((*IMAGE_SUFFIXES, ".json", ".csv", ".tsv", ".yaml")):
            out.append(spec)
            continue
        listed = git("ls-tree", "-r", "--name-only", base, "--", spec.file).stdout.decode()
        files = set(listed.split()) | {str(p) for p in Path(spec.file).rglob("*") if p.is_file()}
        out += [PlotSpec(f, spec.x, spec.ys, spec.template, spec.title) for f in sorted(files)]
    return out


def choose_plots(report: params.ReportParams, ws_yaml: dict, base_yaml: dict,
                 base: str) -> list[PlotSpec]:
    """The plots to compare: report.plots, or every plot data file either side declares."""
    declared = _expand_dirs(plot_specs(ws_yaml) + plot_specs(base_yaml), base)
    by_file = {}
    for spec in declared:
        by_file.setdefault(spec.file, spec)
    if not report.plots:
        return [s for s in by_file.values() if not s.image]
    return [by_file.get(f, PlotSpec(f)) for f in report.plots]


def read_plot_data(raw: bytes, file: str):
    """Plot data as a DataFrame: JSON records (or {key: records}), CSV, TSV or YAML."""
    import pandas as pd

    if file.endswith((".csv", ".tsv")):
        return pd.read_csv(io.BytesIO(raw), sep="\t" if file.endswith(".tsv") else ",")
    data = yaml.safe_load(raw) if file.endswith(".yaml") else json.loads(raw)
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), [data])
    return pd.DataFrame(data)


def draw(spec: PlotSpec, sides: dict[str, bytes | None], out: Path) -> None:
    """One PNG: BASE and workspace side by side, on the same axes (line plots repeat BASE's
    curve, dashed, on the workspace's side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frames = {label: (None if raw is None or spec.image else read_plot_data(raw, spec.file))
              for label, raw in sides.items()}
    base_label = next(iter(sides))
    confusion = spec.template in CONFUSION
    share = not (spec.image or confusion or spec.template.startswith("bar"))
    bars = spec.template.startswith("bar_horizontal")
    rows = max((len(f) for f in frames.values() if f is not None), default=0)
    height = min(max(4.5, 0.25 * min(rows, MAX_BARS) + 1.5), 10) if bars else 4.5
    fig, axes = plt.subplots(1, 2, figsize=(11, height), sharex=share, sharey=share)
    labels: list = []
    if confusion:  # DVC's convention: one row per prediction, x across, y down
        x, y = spec.x or "actual", spec.ys[0] if spec.ys else "predicted"
        for frame in frames.values():
            if frame is not None:
                labels += [v for v in pd.concat([frame[x], frame[y]]).unique() if v not in labels]
        labels.sort(key=str)
    for ax, (label, raw) in zip(axes, sides.items(), strict=True):
        ax.set_title(label)
        frame = frames[label]
        if raw is None:
            ax.text(0.5, 0.5, "not in this revision", ha="center", va="center")
            ax.set_axis_off()
        elif spec.image:
            ax.imshow(plt.imread(io.BytesIO(raw), format=spec.file.rsplit(".", 1)[-1]))
            ax.set_axis_off()
        elif confusion:
            matrix = pd.crosstab(frame[y], frame[x]).reindex(index=labels, columns=labels,
                                                             fill_value=0)
            if spec.template == "confusion_normalized":
                matrix = matrix.div(matrix.sum(axis=1).replace(0, 1), axis=0).round(3)
            ax.imshow(matrix.to_numpy(), cmap="Blues")
            top = matrix.to_numpy().max() or 1
            for (i, j), v in pd.DataFrame(matrix.to_numpy()).stack().items():
                ax.text(j, i, f"{v:g}", ha="center", va="center",
                        color="white" if v > top / 2 else "black")
            ax.set_xticks(range(len(labels)), [str(v) for v in labels])
            ax.set_yticks(range(len(labels)), [str(v) for v in labels])
            ax.set_xlabel(x)
            ax.set_ylabel(y)
        elif bars:  # x: the value, y: the label; the largest MAX_BARS only
            value = spec.x if spec.x in frame.columns else frame.columns[-1]
            names = spec.ys[0] if spec.ys and spec.ys[0] in frame.columns else frame.columns[0]
            shown = frame.nlargest(MAX_BARS, value)
            shown = shown.iloc[::-1] if spec.template.endswith("sorted") else shown.sort_index()
            ax.barh(shown[names].astype(str), shown[value])
            ax.set_xlabel(value + (f" (largest {MAX_BARS})" if len(frame) > MAX_BARS else ""))
            ax.tick_params(axis="y", labelsize=7)
        else:
            numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
            ys = [c for c in spec.ys if c in frame.columns] or numeric[-1:]
            xs = frame[spec.x] if spec.x in frame.columns else frame.index
            for column in ys:
                if spec.template == "scatter":
                    ax.scatter(xs, frame[column], s=8, label=column)
                else:
                    ax.plot(xs, frame[column], label=column)
            reference = frames[base_label]
            if label != base_label and reference is not None and spec.template != "scatter":
                ref_x = reference[spec.x] if spec.x in reference.columns else reference.index
                for column in [c for c in ys if c in reference.columns]:  # BASE, for reference
                    ax.plot(ref_x, reference[column], color="grey", linestyle="--",
                            linewidth=1, label=f"{column} (BASE)")
            ax.set_xlabel(spec.x or "step")
            if ax.get_legend_handles_labels()[0] and (len(ys) > 1 or label != base_label):
                ax.legend(fontsize=8)
            elif ys:
                ax.set_ylabel(ys[0])
            ax.grid(alpha=0.3)
    fig.suptitle(spec.title or spec.file)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


# --- the report -----------------------------------------------------------------------------
def _delta(change: Change) -> str:
    if change.delta is None:
        return ""
    if change.delta == 0:
        return "0"
    rel = f" ({change.delta / abs(change.old):+.1%})" if change.old else ""
    return f"{change.delta:+.4g}{rel}"


def metrics_tables(changes: list[Change], show_unchanged: bool) -> str:
    """A table of the changed metrics; the unchanged ones listed or folded away."""
    headers = ["metric", "BASE", "workspace", "delta", "verdict"]
    rows = [[c.key, c.old, c.new, _delta(c), c.verdict] for c in changes]
    changed = [r for r, c in zip(rows, changes, strict=True) if c.verdict != "same"]
    same = [r for r, c in zip(rows, changes, strict=True) if c.verdict == "same"]
    if show_unchanged:
        return markdown_table(headers, rows)
    text = markdown_table(headers, changed) if changed else "No changes."
    if same:
        text += (f"\n\n<details><summary>{len(same)} unchanged</summary>\n\n"
                 f"{markdown_table(headers, same)}\n\n</details>")
    return text


def build(base: str, base_name: str, report: params.ReportParams, figures: Path,
          output: Path) -> tuple[str, list[GateResult], dict]:
    """The report's Markdown, the gate results and a few counts for the summary line."""
    runs = {"params": dvc_json("params", "diff", base),
            "metrics": dvc_json("metrics", "diff", base, "--all"),
            "status": dvc_json("status")}
    results = {name: finish(proc) for name, proc in runs.items()}
    changes = metric_changes(results["metrics"], report, base)
    gates = check_gates(changes, report)
    broken = [g for g in gates if not g.ok]
    stale = {stage: what for stage, what in results["status"].items()
             if what != ["always changed"]}

    lines = [f"# Change report: workspace vs `{base_name}` ({base[:7]})", ""]
    if stale:
        lines += [f"> **Warning: results are stale.** `dvc status` lists changes in "
                  f"{', '.join(sorted(stale))}: run `dvc repro` before trusting this report.", ""]
    lines += ["## Regression gates", ""]
    if broken:
        lines += [f"**FAILED**: {', '.join(g.metric for g in broken)}.", ""]
    else:
        lines += [f"Passed: {len(gates)} of {len(gates)}." if gates else "No gates set.", ""]
    if gates:
        lines += [markdown_table(
            ["metric", "BASE", "workspace", "largest worsening allowed", "change", "result"],
            [[g.metric, g.change.old if g.change else None, g.change.new if g.change else None,
              g.limit, g.why, "pass" if g.ok else "**FAIL**"] for g in gates]), ""]

    param_rows = [[key, v.get("old"), v.get("new")] for file, entries in results["params"].items()
                  for key, v in entries.items()]
    lines += ["## Params that changed", ""]
    lines += [markdown_table(["param", "BASE", "workspace"], param_rows) if param_rows
              else "None.", ""]
    if any(k.startswith("report.gates") for k, *_ in param_rows):
        lines += ["> This change edits the regression gates (report.gates) it is judged by.", ""]

    by_file: dict[str, list[Change]] = {}
    for change in changes:
        by_file.setdefault(change.file, []).append(change)
    model_files = [f for f in by_file
                   if f not in report.data_metrics and f != report.feature_manifest]
    model_files.sort(key=lambda f: f != report.metrics_file)
    lines += ["## Metrics", ""]
    for file in model_files:
        lines += [f"### `{file}`", "", metrics_tables(by_file[file],
                                                       file == report.metrics_file), ""]
    lines += ["## Data quality and split", ""]
    for file in [f for f in report.data_metrics if f in by_file]:
        lines += [f"### `{file}`", "", metrics_tables(by_file[file], False), ""]

    manifest = report.feature_manifest
    features = feature_changes(at_base(base, manifest), in_workspace(manifest))
    lines += [f"## Features (`{manifest}`)", ""]
    old_count, new_count = features["count"]
    old_hash, new_hash = features["hash"]
    lines += [f"- features: {fmt(old_count)} -> {fmt(new_count)}",
              f"- hash: `{old_hash}` -> `{new_hash}`"
              + (" (unchanged)" if old_hash == new_hash else " (changed)")]
    for what in ("added", "removed", "redefined"):
        if features[what]:
            lines.append(f"- {what} ({len(features[what])}): "
                         + ", ".join(f"`{f}`" for f in features[what]))
    lines.append("")

    ws_yaml = yaml.safe_load(in_workspace("dvc.yaml") or b"{}") or {}
    base_yaml = yaml.safe_load(at_base(base, "dvc.yaml") or b"{}") or {}
    specs = choose_plots(report, ws_yaml, base_yaml, base)
    figures.mkdir(parents=True, exist_ok=True)
    for old in figures.glob("*.png"):
        old.unlink()
    lines += ["## Plots (BASE | workspace)", ""]
    drawn = 0
    for spec in specs:
        sides = {f"BASE {base_name}": at_base(base, spec.file),
                 "workspace": in_workspace(spec.file)}
        if all(v is None for v in sides.values()):
            continue
        png = figures / (re.sub(r"[^\w.-]+", "_", spec.file) + ".png")
        draw(spec, sides, png)
        drawn += 1
        link = os.path.relpath(png.resolve(), output.resolve().parent)
        lines += [f"![{spec.file}]({Path(link).as_posix()})", ""]
    if not drawn:
        lines += ["No plot data on either side.", ""]

    counts = {"params": len(param_rows), "figures": drawn,
              "better": sum(c.verdict == "better" for c in changes),
              "worse": sum(c.verdict == "worse" for c in changes)}
    return "\n".join(lines), gates, counts


def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="git revision to compare with")
    parser.add_argument("--output", default="report.md", help="the Markdown report")
    parser.add_argument("--figures", default="report_figures", help="folder for the PNGs")
    args = parser.parse_args()
    report = params.load("report")
    base = resolve_base(args.base)
    output = Path(args.output)
    text, gates, counts = build(base, args.base, report, Path(args.figures), output)
    output.write_text(text)
    broken = [g for g in gates if not g.ok]
    if broken:
        raise StageError(f"{output}: {len(broken)} regression gate(s) broken: "
                         + "; ".join(f"{g.metric} {g.why}" for g in broken))
    return (f"{output} vs {args.base}: {counts['params']} params changed, {counts['better']} "
            f"metrics better, {counts['worse']} worse, {counts['figures']} figures, "
            f"{len(gates)} gates passed")


if __name__ == "__main__":
    cli.run("report", main)
