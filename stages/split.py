"""split: write train / validation / test, stratified or by time, no id in two splits. Decided on
(id, target, event time), then written bucket by bucket (`engine.partition_rows`), in this
process or on a Dask cluster (`engine.kind`)."""

from lifecycle import cli, io, params, scale, splitting
from lifecycle.accounting import row_report
from lifecycle.contract import load_contract


def main() -> str:
    args = cli.paths(__doc__, clean="clean rows", contract="data contract (YAML)",
                     outdir="folder for train/validation/test.parquet",
                     metrics="sizes and balance (JSON)")
    p, task = params.load("split"), params.load("task")
    contract = load_contract(args.contract)
    from lifecycle.scale import parts
    from lifecycle.scale import split as run

    with parts.opened(engine := scale.load()) as table:
        rows_in, splits = run.split_all(table(args.clean), contract, p, task.type, args.outdir,
                                        engine.partition_rows)
    rows_out = sum(len(f) for f in splits.values())
    io.write_json(row_report(rows_in, rows_out, {}, method=p.method,
                             splits=splitting.summary(splits, contract)), args.metrics)
    sizes = " / ".join(f"{len(f)} {name}" for name, f in splits.items())
    return f"{p.method} split of {rows_in} rows ({engine.kind}): {sizes}"


if __name__ == "__main__":
    cli.run("split", main)
