"""evaluate: score the test split once (no other stage reads it) against a naive baseline, at the
decision threshold chosen on the validation split; write metrics and plot data (DVC draws them);
stop the DAG when the quality gate is missed (after writing them, so the reason is visible)."""

import csv
from pathlib import Path

from lifecycle import cli, evaluation, features, io, metrics, models, params, persistence
from lifecycle.contract import load_contract
from lifecycle.errors import StageError


def main() -> str:
    args = cli.paths(__doc__, test="test split", validation="validation split",
                     train="train split (only its target is read: it fits the baseline)",
                     contract="data contract (YAML)", featurizer="fitted featurizer (skops)",
                     model="fitted model (skops)", scores="test metrics (JSON)",
                     plots="folder for plot data")
    task = params.load("task").type
    derived = params.load("featurize").derived
    p = params.load("evaluate")
    metrics.require(task, p.primary_metric)
    trusted = models.trusted_prefixes(params.load("train", model=models.TrainParams).model)
    contract = load_contract(args.contract)
    target = contract.target.column

    from sklearn.pipeline import Pipeline

    pipeline = Pipeline([("features", persistence.load(args.featurizer)),
                         ("model", persistence.load(args.model, trusted))])

    def scored(path: str) -> evaluation.Predictions:
        frame = io.read_parquet(path)
        return evaluation.predict(pipeline, features.model_frame(frame, contract, derived),
                                  features.target_vector(frame, contract, task), task)

    validation, test = scored(args.validation), scored(args.test)
    y_train = features.target_vector(io.read_parquet(args.train, columns=[target]), contract, task)
    baseline = evaluation.baseline_predictions(task, y_train, test.y, test.classes)
    names = evaluation.display_names(task, contract.target.positive,
                                     contract.columns[target].allowed)
    scores, plots = evaluation.report(test, baseline, validation, p, names)

    io.write_json(scores, args.scores)
    outdir = Path(args.plots)
    outdir.mkdir(parents=True, exist_ok=True)
    for name, rows in plots.items():
        if name == "confusion":  # one row per test row: CSV keeps it a fraction of JSON's size
            with open(outdir / "confusion.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, ["actual", "predicted"], lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
        else:
            io.write_json(rows, outdir / f"{name}.json")

    primary = p.primary_metric
    ci = scores["ci"][primary]
    summary = (f"test {primary} {scores[primary]:.4f} [{ci['low']:.4f}, {ci['high']:.4f}] vs "
               f"baseline {scores['baseline'][primary]:.4f} on {len(test.y)} rows")
    if scores["threshold"] is not None:
        b = scores["business"]
        summary += (f"; threshold {scores['threshold']:.4f} ({p.threshold_objective}, on "
                    f"validation); campaign value {b['model']:.0f} vs baseline {b['baseline']:.0f}")
    if not scores["gate"]["passed"]:
        raise StageError("quality gate failed: " + "; ".join(scores["gate"]["failures"])
                         + f" (see {args.scores})")
    return summary


if __name__ == "__main__":
    cli.run("evaluate", main)
