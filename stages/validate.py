"""validate: hold the raw snapshot to the data contract; quarantine what breaks it; score and
gate the four data-quality dimensions. Partition by partition (`engine.partition_rows`), in this
process or on a Dask cluster (`engine.kind`): the same outputs either way."""

import pandas as pd

from lifecycle import cli, io, params, quality, scale
from lifecycle.accounting import row_report
from lifecycle.contract import load_contract
from lifecycle.errors import StageError


def main() -> str:
    args = cli.paths(__doc__, snapshot="raw snapshot", contract="data contract (YAML)",
                     valid="rows that meet the contract", quarantine="rows that do not",
                     quality="data-quality scores (JSON)", metrics="row accounting (JSON)")
    p = params.load("validate")
    contract = load_contract(args.contract)
    as_of = pd.Timestamp.now("UTC") if p.as_of == "now" else pd.Timestamp(p.as_of)
    if as_of.tz is not None:  # event times are compared in naive UTC
        as_of = as_of.tz_convert("UTC").tz_localize(None)
    from lifecycle.scale import parts, validate

    with parts.opened(engine := scale.load()) as table:
        snapshot = table(args.snapshot)
        rows_in, rows_valid, reasons, s = validate.judge_all(
            snapshot, contract, as_of, args.valid, args.quarantine)
    quarantined = rows_in - rows_valid
    io.write_json(s, args.quality)
    io.write_json(row_report(rows_in, rows_valid,
                             {f"quarantined:{k}": v for k, v in reasons.items()}), args.metrics)
    problems = quality.gate(s, p.min_scores.model_dump(), quarantined, rows_in,
                            p.max_quarantine_share)
    if problems:
        raise StageError("data-quality gate failed: " + "; ".join(problems)
                         + f" (see {args.quality} and {args.quarantine})")
    return (f"{rows_valid}/{rows_in} rows meet the contract, {quarantined} quarantined "
            f"({engine.kind}, {len(snapshot)} partitions); accuracy {s['accuracy']:.3f} "
            f"completeness {s['completeness']:.3f} consistency {s['consistency']:.3f} "
            f"timeliness {s['timeliness']:.3f}")


if __name__ == "__main__":
    cli.run("validate", main)
