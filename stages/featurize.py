"""featurize: fit the feature transformations on train only; write feature tables for train and
validation (features + `target`), the fitted transformer, the feature manifest and its
importance plot data (DVC draws it). (The test split is left to evaluate, the one stage that
reads it.) With `train.mode: incremental` (or `online`) nothing is fitted: the champion bundle's
featurizer (`train.champion`, hash-checked) transforms both splits, so the model can continue on
them (or the online learner, which read the same features, be checked on them). Partition by
partition (`engine.partition_rows`), in this process or on a Dask cluster (`engine.kind`)."""

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
    mode = params.load("train", model=params.TrainMode)
    from lifecycle.scale import featurize, parts

    with parts.opened(scale.load()) as table:
        splits = {"train": table(args.train), "validation": table(args.validation)}
        if mode.mode != "full":   # the champion's featurizer, as it was fitted: no refit
            champion = incremental.champion(mode.champion, task.type, p.derived,
                                            continues=mode.mode == "incremental")
            featurizer = champion.pipeline.named_steps["features"]
            train = io.read_parquet(args.train)
            manifest, _ = features.transform_with_fitted(
                featurizer, features.model_frame(train, contract, p.derived),
                features.target_vector(train, contract, task.type), contract, p, task.type)
            manifest["fitted_by"] = {"champion": champion.version, "bundle": mode.champion}
        else:
            featurizer, manifest = featurize.fit(splits["train"], contract, p, task.type)
        rows = featurize.write_tables(featurizer, splits, contract, p.derived, task.type,
                                      args.outdir)
    persistence.save(featurizer, args.featurizer)
    io.write_json(manifest, args.manifest)
    importance = features.importance_plot_data(manifest)
    io.write_json(importance, args.importance)
    kinds = ", ".join(f"{n} {t}" for t, n in manifest["by_type"].items() if n)
    fitted = (f"the champion's ({manifest['fitted_by']['champion']}), on"
              if "fitted_by" in manifest else "fitted on")
    return (f"{manifest['count']} features ({kinds}) {fitted} {rows['train']} train rows, "
            f"version {manifest['version']}; most informative: {importance[0]['feature']}")


if __name__ == "__main__":
    cli.run("featurize", main)
