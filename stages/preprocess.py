"""preprocess: resolve duplicates, drop rows that cannot be used.

Its input is already coherent (types, whitespace, category spellings): validate made it so to
judge it, with the same `cleaning.make_coherent` that serving runs on each request. Learns
nothing from the data (no imputation or scaling: featurize fits those on train)."""

from lifecycle import cleaning, cli, io, params, scale
from lifecycle.accounting import row_report
from lifecycle.contract import load_contract, mask


def main() -> str:
    args = cli.paths(__doc__, valid="validated rows", contract="data contract (YAML)",
                     clean="clean rows", removed="removed rows with their reason",
                     metrics="row accounting (JSON)")
    p = params.load("preprocess")
    contract = load_contract(args.contract)
    if (engine := scale.load()).kind == "dask":   # the same outputs, on a cluster
        from lifecycle.scale import preprocess as run
        return run.preprocess(args, p, contract, engine)
    rows = io.read_parquet(args.valid)   # coherent already: validate typed them to judge them
    kept, removed = cleaning.remove_rows(rows, contract, p.drop_duplicate_records,
                                         p.drop_missing_target)
    for column in contract.personal_data:
        if column != contract.id:
            removed[column] = mask(removed[column].tolist())
    io.write_parquet(kept, args.clean)
    io.write_parquet(removed, args.removed)
    reasons = cleaning.count_reasons(removed)
    io.write_json(row_report(len(rows), len(kept), reasons), args.metrics)
    detail = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())) or "none"
    return f"{len(kept)}/{len(rows)} rows kept; removed: {detail}"


if __name__ == "__main__":
    cli.run("preprocess", main)
