"""explain: global importance of each input column (permutation, SHAP where exact) and local
explanations of a few sample rows, on the validation split; personal data masked."""

from lifecycle import cli, explain, features, io, models, params, persistence, sampling
from lifecycle.contract import load_contract, mask
from lifecycle.evaluation import display_names, rounded


def main() -> str:
    args = cli.paths(__doc__, validation="validation split", contract="data contract (YAML)",
                     featurizer="fitted featurizer (skops)", model="fitted model (skops)",
                     output="explanations (JSON)", plots="folder for plot data")
    task = params.load("task").type
    derived = params.load("featurize").derived
    p = params.load("explain")
    family = models.family_of(params.load("train", model=models.TrainParams).model)
    contract = load_contract(args.contract)
    split = io.read_parquet(args.validation)
    validation_rows = len(split)
    split = sampling.sample_frame(split, p.rows, p.seed + 1)  # bounds every estimate's cost
    frame = features.model_frame(split, contract, derived)
    y = features.target_vector(split, contract, task)
    ids = (mask(split[contract.id].tolist()) if contract.id in split
           else [f"row {i}" for i in range(len(split))])
    names = display_names(task, contract.target.positive,
                          contract.columns[contract.target.column].allowed)
    model = persistence.load(args.model, models.trusted_prefixes(family.name))
    result = explain.explain(persistence.load(args.featurizer), model, frame, y, ids, task, p,
                             names, explain.shap_installed(), family.traits)
    result["validation_rows"] = validation_rows  # `rows` of them explained (explain.rows)

    io.write_json(rounded(result), args.output)
    for name, rows in explain.plot_data(result).items():  # DVC draws them (dvc.yaml plots)
        io.write_json(rows, f"{args.plots}/{name}.json")
    top = ", ".join(list(result["importance"])[:3])
    shap = result["shap"]
    said = shap["method"] or f"none: {shap['reason']}"
    return (f"{len(frame.columns)} input columns ranked on {len(frame)} validation rows "
            f"(top: {top}); SHAP {said}; {len(result['local']['samples'])} rows explained "
            f"({result['local']['method']})")


if __name__ == "__main__":
    cli.run("explain", main)
