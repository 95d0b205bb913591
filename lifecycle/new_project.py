"""From a table to a project: `make new DATA=file TARGET=column [ID=column] [TASK=...]`.

    python -m lifecycle.new_project DATA --target COL [--id COL]
        [--task binary|multiclass|regression] [--positive VALUE] [--sensitive COL,COL]
        [--name NAME]

One command turns this template (the churn demo) into a project on your table:

- the data: copied to data/external/ (collect's source); without `--id`, a `row_id` column is
  added first: the first 16 hex digits of the sha256 of the row's values, so the same row
  always gets the same id (identical rows share one, and preprocess keeps one of them). At
  serving time the id only correlates logs and routes requests: send any string.
- contract.yaml: drafted from the data (`draft_contract.draft`): ids are never range-bounded,
  numbers a float-typed source holds are float, the target follows the task, and a binary
  task's positive class is the one you name (asked for when you did not, on a terminal);
- params.yaml: every demo-specific value set to a neutral default for the task: no derived
  features, sensitive features only those you name, the task's primary metric everywhere
  (evaluate, the search, the PR report), a gate that only asks to beat the naive baseline,
  the decision threshold by F1 (no campaign economics: fill in `evaluate.business` and set
  `threshold_objective: value` to use them), data-quality floors the drafted data meets, and
  the bundle and model card named after the dataset;
- dvc.yaml: the demo stage `seed_demo_source` removed, the artifact renamed after the dataset
  (and the deployment files under deploy/ with it).

It prints what to review. Comments in params.yaml and dvc.yaml are kept (ruamel.yaml).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

from lifecycle import metrics
from lifecycle.draft_contract import read_sample, to_yaml
from lifecycle.errors import StageError

ROW_ID = "row_id"
EXTERNAL = Path("data/external")


def content_ids(frame: pd.DataFrame) -> pd.Series:
    """A stable id per row from its values alone: sha256 of the row as JSON, 16 hex digits."""
    def one(row) -> str:
        values = [None if pd.isna(v) else str(v) for v in row]
        return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:16]

    return pd.Series([one(row) for row in frame.itertuples(index=False)], index=frame.index,
                     dtype="string")


def dataset_name(path: str, name: str | None) -> str:
    """A name for the data (artifact, bundle, card): letters, digits, `-` only."""
    raw = name or Path(path).stem
    text = re.sub(r"[^A-Za-z0-9]+", "-", raw).strip("-").lower()
    if not text:
        raise StageError(f"cannot make a name from {raw!r}: pass --name")
    return text


def data_quality_floors(frame: pd.DataFrame, contract) -> dict:
    """validate.min_scores the drafted data meets: the demo's floors, completeness lowered to
    what this data has (a column mostly empty would stop the DAG at its first run)."""
    declared = [c for c in contract.columns if c in frame]
    complete = float(frame[declared].notna().to_numpy().mean()) if declared else 1.0
    return {"accuracy": 0.95, "completeness": min(0.98, int(complete * 100 - 2) / 100),
            "consistency": 0.95, "timeliness": 0.90}


def set_params(params, *, source: str, task: str, contract, name: str,
               sensitive: list[str], floors: dict, as_of: str) -> None:
    """params.yaml (a ruamel round-trip mapping) made neutral for this data and task."""
    metric = metrics.DEFAULT[task]
    params.pop("seed_demo_source", None)
    src = params["collect"]["source"]
    for key in list(src):
        del src[key]
    src.update({"kind": "files", "path": source})
    params["validate"]["as_of"] = as_of
    params["validate"]["min_scores"].update(floors)
    params["split"]["method"] = "random" if task == "regression" else "stratified"
    params["task"]["type"] = task
    params["featurize"]["derived"] = {}
    params["train"]["search"]["metric"] = None
    params["evaluate"]["primary_metric"] = metric
    params["evaluate"]["threshold_objective"] = "f1"
    params["evaluate"]["gate"]["worst_acceptable"] = None
    params["evaluate"]["gate"]["min_skill"] = 0.0
    package = params["package"]
    package["name"] = f"{name}-model"
    target = contract.target.column
    what = {"binary": f"whether `{target}` is \"{contract.target.positive}\"",
            "multiclass": f"the class of `{target}`", "regression": f"`{target}`"}[task]
    card = package["card"]
    card["intended_use"] = (f"Predict {what} for new rows of the {name} data, one at a time "
                            "(API) or in bulk (batch). Written by `make new`: say who uses the "
                            "predictions and for what decision.")
    card["out_of_scope"] = ("Decisions about people without human review; data from another "
                            "source, population or period than the training data.")
    card["limitations"] = [f"Trained on {name} as drafted by `make new`: review the contract "
                           "and these words before anyone relies on the model."]
    card["sensitive_features"] = sensitive
    if "report" in params:
        report = params["report"]
        report["primary_metric"] = metric
        report["leaderboard_metrics"] = list(metrics.for_task(task))
        report["gates"] = {}


def set_dag(dag, name: str, task: str) -> str:
    """dvc.yaml without the demo stage; the artifact named after the dataset. Returns the old
    artifact name."""
    dag["stages"].pop("seed_demo_source", None)
    artifacts = dag.get("artifacts") or {}
    old = next(iter(artifacts), None)
    spec = artifacts.pop(old) if old else {"path": "models/bundle", "type": "model"}
    label = {"binary": "binary-classification", "multiclass": "multiclass-classification",
             "regression": "regression"}[task]
    spec["desc"] = (f"{name} {label} bundle: cleaning contract, fitted features and model "
                    "(skops, ONNX when the model has a converter), input signature, drift "
                    "reference statistics, model card, hashed manifest.")
    spec["labels"] = [name, label, "sklearn", "onnx"]
    artifacts[f"{name}-model"] = spec
    dag["artifacts"] = artifacts
    return old


def rename_in_deployments(root: Path, old: str | None, new: str) -> list[str]:
    """`model: <old>` -> `model: <new>` in deploy/*.yaml (text edit: comments stay)."""
    changed = []
    if not old:
        return changed
    for path in sorted((root / "deploy").glob("*.yaml")):
        text = path.read_text()
        edited = re.sub(rf"^(model:\s*){re.escape(old)}\b", rf"\g<1>{new}", text, flags=re.M)
        if edited != text:
            path.write_text(edited)
            changed.append(path.as_posix())
    return changed


def ask_positive(target: str, classes: list[str]) -> str | None:
    """The positive class, asked on a terminal; None when nobody can answer."""
    if not sys.stdin.isatty():
        return None
    answer = input(f"positive class of {target} ({' / '.join(classes)}): ").strip()
    return answer or None


def new_project(data: str, target: str, id_column: str | None, task: str | None,
                positive: str | None, sensitive: list[str], name: str | None,
                root: Path = Path(".")) -> list[str]:
    """Make the project at `root` one on `data`; returns the lines to print for review."""
    from ruamel.yaml import YAML

    from lifecycle.draft_contract import draft, guess_task

    frame = read_sample(data)
    name = dataset_name(data, name)
    if target not in frame.columns:
        raise StageError(f"TARGET {target!r} is not a column of {data}: "
                         f"{', '.join(map(str, frame.columns))}")
    if id_column is not None and id_column not in frame.columns:
        raise StageError(f"ID {id_column!r} is not a column of {data}")
    if id_column is not None and not (frame[id_column].notna().all()
                                      and frame[id_column].is_unique):
        raise StageError(f"ID {id_column!r} is not unique and complete: leave ID out and "
                         "make new adds a content-hash row_id")
    review = []
    dest_dir = root / EXTERNAL
    dest_dir.mkdir(parents=True, exist_ok=True)
    demo_db = dest_dir / "crm.sqlite"
    if demo_db.exists():
        demo_db.unlink()
    if id_column is None:
        if ROW_ID in frame.columns:
            raise StageError(f"{data} has a `{ROW_ID}` column: name it with ID=, or rename it")
        frame.insert(0, ROW_ID, content_ids(frame))
        id_column = ROW_ID
        dest = dest_dir / f"{name}.parquet"
        frame.to_parquet(dest, index=False)
        review.append(f"{dest}: your data with `{ROW_ID}` added (a hash of each row's values); "
                      "`dvc add` it")
    else:
        dest = dest_dir / Path(data).name
        if Path(data).resolve() != dest.resolve():
            shutil.copyfile(data, dest)
        review.append(f"{dest}: your data, collect's source; `dvc add` it")
    kinds = {"binary", "multiclass", "regression"}
    if task is not None and task not in kinds:
        raise StageError(f"TASK must be one of {', '.join(sorted(kinds))}, not {task!r}")
    from lifecycle.draft_contract import column_specs

    task = task or guess_task(frame[target], column_specs(frame[[target]])[target].type)
    if task == "binary" and positive is None:
        positive = ask_positive(target, sorted(frame[target].dropna().astype(str).unique()))
    contract, guesses = draft(frame, name, id_column, target, task, positive,
                              guess_positive=False)
    strangers = [c for c in sensitive if c not in contract.feature_columns]
    if strangers:
        raise StageError(f"SENSITIVE {strangers} are not feature columns of the drafted "
                         f"contract ({', '.join(contract.feature_columns)})")
    (root / "contract.yaml").write_text(to_yaml(contract, str(dest), guesses))

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)   # the template's own layout
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar(
        "tag:yaml.org,2002:null", "null"))
    params = yaml.load((root / "params.yaml").read_text())
    event = contract.event_time
    as_of = (pd.to_datetime(frame[event], errors="coerce").max().isoformat()
             if event else "now")
    set_params(params, source=dest.relative_to(root).as_posix(), task=task, contract=contract,
               name=name, sensitive=sensitive, floors=data_quality_floors(frame, contract),
               as_of=as_of)
    with open(root / "params.yaml", "w") as f:
        yaml.dump(params, f)
    dag = yaml.load((root / "dvc.yaml").read_text())
    old = set_dag(dag, name, task)
    with open(root / "dvc.yaml", "w") as f:
        yaml.dump(dag, f)
    if old:  # its mentions in comments too
        text = (root / "dvc.yaml").read_text()
        (root / "dvc.yaml").write_text(re.sub(rf"\b{re.escape(old)}\b", f"{name}-model", text))
    deployments = rename_in_deployments(root, old, f"{name}-model")

    features = contract.feature_columns
    review += [
        f"contract.yaml: {len(contract.columns)} columns, id `{contract.id}`, target "
        f"`{target}` ({task}" + (f", positive \"{contract.target.positive}\")"
                                 if task == "binary" else ")")
        + f", {len(features)} features; check types, ranges (widen them to what is plausible), "
        "allowed categories, personal_data, and `missing: impute | drop`",
        *(f"contract.yaml: guessed {g}" for g in guesses),
        f"params.yaml: task {task}, primary metric {metrics.DEFAULT[task]}, gate: beat the "
        "naive baseline (evaluate.gate), threshold by "
        + ("F1 (evaluate.business for a value objective)" if task == "binary" else "n/a"),
        "params.yaml: package.card says little yet: write its intended use and limitations",
        f"params.yaml: validate.as_of {as_of!r}, data-quality floors "
        f"{data_quality_floors(frame, contract)}",
        f"dvc.yaml: seed_demo_source removed, artifact {name}-model"
        + (f" (was {old}; also in {', '.join(deployments)})" if deployments else ""),
        "then: dvc repro",
    ]
    return review


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="a CSV, Parquet or JSON Lines file")
    parser.add_argument("--target", required=True, help="the column to predict")
    parser.add_argument("--id", dest="id_column", help="the column that identifies a row")
    parser.add_argument("--task", help="binary | multiclass | regression (default: guessed)")
    parser.add_argument("--positive", help="the positive class of a binary target")
    parser.add_argument("--sensitive", default="",
                        help="comma-separated feature columns that describe protected groups")
    parser.add_argument("--name", help="the dataset's name (default: the file's stem)")
    args = parser.parse_args(argv)
    sensitive = [c.strip() for c in args.sensitive.split(",") if c.strip()]
    try:
        lines = new_project(args.data, args.target, args.id_column or None, args.task or None,
                            args.positive or None, sensitive, args.name or None)
    except StageError as exc:
        print(f"new: error: {exc}", file=sys.stderr)
        return 2
    print("new: review:")
    for line in lines:
        print(f"  - {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
