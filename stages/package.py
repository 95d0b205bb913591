"""package: compose the cleaning rules (the contract), the fitted features and the model into one
inference bundle in models/bundle/ (lifecycle/packaging/): the sklearn Pipeline (skops) and its
ONNX export, checked to agree on the validation split and synthetic edge rows; the input
signature; reference statistics for drift checks; a model card; and a manifest with the sha256
of every file and the lineage (data, params and code hashes) from dvc.lock.

It reads the train split (reference statistics) and the validation split (the checks), never the
test split: evaluate alone reads that, and its metrics reach the card through scores.json.

dvc.lock is read but not declared as a dependency: DVC rewrites it after every stage, this one
included, so the stage would never be up to date. The upstream outputs it does declare (splits,
featurizer, model, scores) change whenever their lineage does, and the stage refuses a dvc.lock
whose record of those files is stale.
"""

from pathlib import Path

import pandas as pd

from lifecycle import cli, io, models, params, persistence, sampling
from lifecycle.errors import ParamsError, StageError
from lifecycle.packaging import build, lineage, parity, runtime, store


def main() -> str:
    args = cli.paths(__doc__, contract="data contract (YAML)", train="train split",
                     validation="validation split", featurizer="fitted featurizer (skops)",
                     model="fitted model (skops)", scores="test metrics from evaluate (JSON)",
                     split="split sizes and time ranges (JSON)", lock="dvc.lock (lineage)",
                     bundle="bundle folder to write", metrics="package check results (JSON)")
    task = params.load("task").type
    derived = params.load("featurize").derived
    p = params.load("package")
    # model.skops may hold the family's own types (lightgbm., xgboost., an import path's package)
    trusted = models.trusted_prefixes(params.load("train", model=models.TrainParams).model)
    contract_text, contract = build.load_contract_text(args.contract)
    strangers = [c for c in p.card.sensitive_features if c not in contract.feature_columns]
    if strangers:
        raise ParamsError(f"params.yaml: package.card.sensitive_features: {strangers} are not "
                          "feature columns of the contract")
    if not Path(args.lock).exists():
        raise StageError(f"{args.lock} not found: run the package stage through `dvc repro`")

    inputs = {path: lineage.md5_file(path) for path in (
        args.contract, args.train, args.validation, args.featurizer, args.model, args.scores,
        args.split)}
    provenance = lineage.lineage(
        params.read_yaml(args.lock) or {}, inputs,
        lineage.imported_code(Path.cwd()),
        {"task": {"type": task}, "featurize.derived": derived, "package": p.model_dump()})
    scores = io.read_json(args.scores)
    train, validation = io.read_parquet(args.train), io.read_parquet(args.validation)
    samples = {"train_rows": len(train), "validation_rows": len(validation)}
    # seeded samples bound the cost of the reference statistics and the checks on big data
    train = sampling.sample_frame(train, p.reference_rows, p.seed)
    validation = sampling.sample_frame(validation, p.check_rows, p.seed + 1)
    samples.update(reference_rows=len(train), check_rows=len(validation))
    files = build.build_files(
        name=p.name, task=task, contract_text=contract_text,
        featurizer=persistence.load(args.featurizer), model=persistence.load(args.model, trusted),
        derived=derived, threshold=build.read_threshold(scores, task), train=train,
        validation=validation, scores=scores, split_summary=io.read_json(args.split),
        lineage_info=provenance, card=p.card.model_dump(), opset=p.onnx_opset,
        tolerance=p.tolerance, unknown_category=p.unknown_category,
        bins=p.reference_bins, reference_sample=p.reference_sample.model_dump())
    manifest = store.write_bundle(args.bundle, files, provenance)

    bundle = runtime.load_bundle(args.bundle)
    checked = pd.concat([validation, parity.edge_rows(validation, contract)],
                        ignore_index=True)
    engines = parity.compare_engines(bundle, checked, p.tolerance)
    paths = parity.compare_paths(bundle, validation)
    io.write_json({"version": manifest["version"], "onnx_vs_sklearn": engines,
                   "records_vs_frame": paths, "samples": samples,
                   "bytes": {name: len(data) for name, data in files.items()}}, args.metrics)
    if not engines["ok"] or not paths["ok"]:
        store.remove_bundle(args.bundle)
        raise StageError(f"the bundle's engines disagree (bundle removed): ONNX vs sklearn "
                         f"{engines}; records vs frame {paths} (see {args.metrics})")
    checked = (f"ONNX agrees with sklearn on {engines['rows']} validation + edge rows (max "
               f"difference {engines['max_difference']:.1e} <= {p.tolerance:g})"
               if "skipped" not in engines else f"served by sklearn ({engines['skipped']})")
    return (f"bundle {manifest['version']} ({len(files)} files, "
            f"{sum(map(len, files.values())) / 1e6:.1f} MB): {checked}, lineage of "
            f"{len(provenance['stages'])} stages from {args.lock}")


if __name__ == "__main__":
    cli.run("package", main)
