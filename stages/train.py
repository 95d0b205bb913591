"""train: fit the model family named in params on the train feature table."""

from lifecycle import cli, features, io, models, params


def main() -> str:
    args = cli.paths(__doc__, train="train feature table", target="target column name",
                     model="fitted model (skops)", metrics="training metrics (JSON)")
    task, p = params.load("task"), params.load("train")
    table = io.read_parquet(args.train)
    y = table.pop(args.target).to_numpy()
    model = models.build_model(task.type, p)
    model.fit(table, y)
    features.save(model, args.model)
    io.write_json({"model": p.model, "train_rows": len(table), "features": table.shape[1]},
                  args.metrics)
    return f"{p.model} fitted on {len(table)} rows x {table.shape[1]} features"


if __name__ == "__main__":
    cli.run("train", main)
