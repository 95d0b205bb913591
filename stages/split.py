"""split: write train / validation / test, stratified or by time, no id in two splits."""

from pathlib import Path

from lifecycle import cli, io, params, scale, splitting
from lifecycle.accounting import row_report
from lifecycle.contract import load_contract


def main() -> str:
    args = cli.paths(__doc__, clean="clean rows", contract="data contract (YAML)",
                     outdir="folder for train/validation/test.parquet",
                     metrics="sizes and balance (JSON)")
    p, task = params.load("split"), params.load("task")
    contract = load_contract(args.contract)
    if (engine := scale.load()).kind == "dask":   # the same outputs, on a cluster
        from lifecycle.scale import split as run
        return run.split(args, p, task, contract, engine)
    rows = io.read_parquet(args.clean)
    splits = splitting.split(rows, contract, p.method, p.validation_size, p.test_size, p.seed)
    splitting.check_splits(splits, contract, task.type, p.min_rows)
    for name, frame in splits.items():
        io.write_parquet(frame, Path(args.outdir) / f"{name}.parquet")
    rows_out = sum(len(f) for f in splits.values())
    io.write_json(row_report(len(rows), rows_out, {}, method=p.method,
                             splits=splitting.summary(splits, contract)), args.metrics)
    sizes = " / ".join(f"{len(f)} {name}" for name, f in splits.items())
    return f"{p.method} split of {len(rows)} rows: {sizes}"


if __name__ == "__main__":
    cli.run("split", main)
