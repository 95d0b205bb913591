"""validate: hold the raw snapshot to the data contract; quarantine what breaks it; score and
gate the four data-quality dimensions."""

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
    if (engine := scale.load()).kind == "dask":   # the same outputs, on a cluster
        from lifecycle.scale import validate as run
        return run.validate(args, p, contract, as_of, engine)
    raw = io.read_parquet(args.snapshot)
    verdict = quality.judge(raw, contract, as_of)

    io.write_parquet(verdict.valid, args.valid)
    io.write_parquet(verdict.quarantine, args.quarantine)
    io.write_json(verdict.scores, args.quality)
    dropped = verdict.first_reason.value_counts().to_dict()
    io.write_json(row_report(len(raw), len(verdict.valid),
                             {f"quarantined:{k}": v for k, v in dropped.items()}), args.metrics)

    problems = quality.gate(verdict.scores, p.min_scores.model_dump(), len(verdict.quarantine),
                            len(raw), p.max_quarantine_share)
    if problems:
        raise StageError("data-quality gate failed: " + "; ".join(problems)
                         + f" (see {args.quality} and {args.quarantine})")
    s = verdict.scores
    return (f"{len(verdict.valid)}/{len(raw)} rows meet the contract, "
            f"{len(verdict.quarantine)} quarantined; accuracy {s['accuracy']:.3f} "
            f"completeness {s['completeness']:.3f} consistency {s['consistency']:.3f} "
            f"timeliness {s['timeliness']:.3f}")


if __name__ == "__main__":
    cli.run("validate", main)
