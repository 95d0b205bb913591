"""preprocess: resolve duplicates, drop rows that cannot be used.

Its input is already coherent (types, whitespace, category spellings): validate made it so to
judge it, with the same `cleaning.make_coherent` that serving runs on each request. Learns
nothing from the data (no imputation or scaling: featurize fits those on train). Partition by
partition (`engine.partition_rows`), in this process or on a Dask cluster (`engine.kind`)."""

from lifecycle import cli, io, params, scale
from lifecycle.accounting import row_report
from lifecycle.contract import load_contract


def main() -> str:
    args = cli.paths(__doc__, valid="validated rows", contract="data contract (YAML)",
                     clean="clean rows", removed="removed rows with their reason",
                     metrics="row accounting (JSON)")
    p = params.load("preprocess")
    contract = load_contract(args.contract)
    from lifecycle.scale import parts, preprocess

    with parts.opened(engine := scale.load()) as table:
        rows = table(args.valid)
        rows_in, kept, reasons = preprocess.clean_all(rows, contract, p, args.clean,
                                                      args.removed)
    io.write_json(row_report(rows_in, kept, reasons), args.metrics)
    detail = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())) or "none"
    return (f"{kept}/{rows_in} rows kept ({engine.kind}, {len(rows)} partitions); "
            f"removed: {detail}")


if __name__ == "__main__":
    cli.run("preprocess", main)
