"""featurize: fit the feature transformations on train only; write feature tables for train and
validation, the fitted transformer, and the feature manifest. (The test split is left to
evaluate, the one stage that reads it.)"""

from pathlib import Path

import pandas as pd

from lifecycle import cli, features, io, params
from lifecycle.contract import load_contract


def main() -> str:
    args = cli.paths(__doc__, train="train split", validation="validation split",
                     contract="data contract (YAML)", outdir="folder for feature tables",
                     featurizer="fitted transformer (skops)", manifest="feature manifest (JSON)")
    task, p = params.load("task"), params.load("featurize")
    contract = load_contract(args.contract)
    splits = {"train": io.read_parquet(args.train), "validation": io.read_parquet(args.validation)}
    frames = {name: features.model_frame(f, contract, p.derived) for name, f in splits.items()}
    featurizer = features.build_featurizer(contract, p.derived, p.min_frequency, p.scale)
    featurizer.set_output(transform="pandas")
    featurizer.fit(frames["train"])
    for name, frame in frames.items():
        table = featurizer.transform(frame)
        table[contract.target.column] = features.target_vector(splits[name], contract, task.type)
        io.write_parquet(pd.DataFrame(table), Path(args.outdir) / f"{name}.parquet")
    features.save(featurizer, args.featurizer)
    names = list(featurizer.get_feature_names_out())
    io.write_json({"features": names, "count": len(names)}, args.manifest)
    return f"{len(names)} features fitted on {len(splits['train'])} train rows"


if __name__ == "__main__":
    cli.run("featurize", main)
