"""featurize: fit the feature transformations on train only; write feature tables for train and
validation (features + `target`), the fitted transformer, the feature manifest and its
importance plot data (DVC draws it). (The test split is left to evaluate, the one stage that
reads it.) With `train.mode: incremental` (or `online`) nothing is fitted: the champion bundle's
featurizer (`train.champion`, hash-checked) transforms both splits, so the model can continue on
them (or the online learner, which read the same features, be checked on them)."""

from pathlib import Path

from lifecycle import cli, features, io, params, persistence, scale
from lifecycle.contract import load_contract
from lifecycle.feedback import incremental


def main() -> str:
    args = cli.paths(__doc__, train="train split", validation="validation split",
                     contract="data contract (YAML)", outdir="folder for feature tables",
                     featurizer="fitted transformer (skops)", manifest="feature manifest (JSON)",
                     importance="feature importance, DVC plot data (JSON)")
    task, p = params.load("task"), params.load("featurize")
    contract = load_contract(args.contract)
    splits = {"train": io.read_parquet(args.train), "validation": io.read_parquet(args.validation)}
    frames = {name: features.model_frame(f, contract, p.derived) for name, f in splits.items()}
    targets = {name: features.target_vector(f, contract, task.type) for name, f in splits.items()}
    mode = params.load("train", model=params.TrainMode)
    if mode.mode != "full":   # the champion's featurizer, as it was fitted: no refit
        champion = incremental.champion(mode.champion, task.type, p.derived,
                                        continues=mode.mode == "incremental")
        featurizer = champion.pipeline.named_steps["features"]
        manifest, train = features.transform_with_fitted(
            featurizer, frames["train"], targets["train"], contract, p, task.type)
        manifest["fitted_by"] = {"champion": champion.version, "bundle": mode.champion}
    else:
        featurizer, manifest, train = features.fit_transform_featurizer(
            frames["train"], targets["train"], contract, p, task.type)
    if (engine := scale.load()).kind == "dask":   # the same tables, on a cluster
        from lifecycle.scale import featurize as on_dask
        on_dask.write_tables(featurizer, {"train": args.train, "validation": args.validation},
                             contract, p.derived, task.type, args.outdir, engine)
    else:   # the train split's table is the fit's own output: transformed once
        tables = {"train": train, "validation": featurizer.transform(frames["validation"])}
        for name, table in tables.items():
            table = table.assign(**{features.TARGET: targets[name]})
            io.write_parquet(table, Path(args.outdir) / f"{name}.parquet")
    persistence.save(featurizer, args.featurizer)
    io.write_json(manifest, args.manifest)
    rows = features.importance_plot_data(manifest)
    io.write_json(rows, args.importance)
    kinds = ", ".join(f"{n} {t}" for t, n in manifest["by_type"].items() if n)
    fitted = (f"the champion's ({manifest['fitted_by']['champion']}), on"
              if "fitted_by" in manifest else "fitted on")
    return (f"{manifest['count']} features ({kinds}) {fitted} {len(frames['train'])} train rows, "
            f"version {manifest['version']}; most informative: {rows[0]['feature']}")


if __name__ == "__main__":
    cli.run("featurize", main)
