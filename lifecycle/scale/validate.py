"""validate on the cluster: each partition judged by `quality.judge` (the contract's pandera
schema, rules and reasons, row by row); what spans partitions decided once: the ids held with
differing content (a groupby on id and content hash), and the scores from counts summed over
partitions (`quality.add_counts`)."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from lifecycle import io, quality
from lifecycle.accounting import row_report
from lifecycle.contract import Contract
from lifecycle.errors import StageError
from lifecycle.scale import EngineParams, cluster
from lifecycle.scale import io as sio
from lifecycle.scale.frames import CONTENT, content_hash


def _id_and_content(raw: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    from lifecycle.cleaning import make_coherent
    from lifecycle.quality import check_columns

    coherent, _ = make_coherent(check_columns(raw, contract), contract)
    return pd.DataFrame({"id": coherent[contract.id],
                         CONTENT: content_hash(coherent, contract.content_columns)})


def conflicting_ids(raw, contract: Contract) -> set:
    """Ids held with differing content anywhere in the table (as `quality._conflicting_ids`)."""
    pairs = raw.map_partitions(_id_and_content, contract,
                               meta={"id": "object", CONTENT: "uint64"})
    variants = pairs.dropna(subset=["id"]).drop_duplicates().groupby("id")[CONTENT].count()
    found = variants[variants > 1].compute()
    return set(found.index.tolist())


def judge_all(raw, contract: Contract, as_of: pd.Timestamp, client, valid_path, quarantine_path):
    """Write valid rows and quarantine; return (rows in, rows valid, quarantined, first
    reasons, scores)."""
    from dask import delayed

    conflicting = conflicting_ids(raw, contract)
    parts = raw.to_delayed()
    judged = [delayed(quality.judge)(p, contract, as_of, conflicting) for p in parts]
    judged = client.persist(judged)   # each partition judged once, read three times below
    import dask.dataframe as dd

    valid = dd.from_delayed([delayed(lambda v: v.valid)(j) for j in judged], verify_meta=False)
    quarantine = dd.from_delayed([delayed(lambda v: v.quarantine)(j) for j in judged],
                                 verify_meta=False)
    rows_valid = sio.write_file(valid, valid_path, client)
    rows_quarantined = sio.write_file(quarantine, quarantine_path, client)
    small = client.compute([delayed(lambda v: (v.counts, Counter(v.first_reason.tolist())))(j)
                            for j in judged], sync=True)
    counts = quality.add_counts([c for c, _ in small])
    reasons = sum((r for _, r in small), Counter())
    return (counts["rows"], rows_valid, rows_quarantined, reasons,
            quality.scores_from_counts(counts, contract))


def validate(args, p, contract, as_of: pd.Timestamp, engine: EngineParams) -> str:
    with cluster.connect(engine) as client:
        raw = sio.read(args.snapshot, engine.partition_rows)
        rows_in, rows_valid, rows_quarantined, reasons, scores = judge_all(
            raw, contract, as_of, client, args.valid, args.quarantine)
    io.write_json(scores, args.quality)
    io.write_json(row_report(rows_in, rows_valid,
                             {f"quarantined:{k}": v for k, v in reasons.items()}), args.metrics)
    problems = quality.gate(scores, p.min_scores.model_dump(), rows_quarantined, rows_in,
                            p.max_quarantine_share)
    if problems:
        raise StageError("data-quality gate failed: " + "; ".join(problems)
                         + f" (see {args.quality} and {args.quarantine})")
    return (f"{rows_valid}/{rows_in} rows meet the contract, {rows_quarantined} quarantined "
            f"(dask, {raw.npartitions} partitions); accuracy {scores['accuracy']:.3f} "
            f"completeness {scores['completeness']:.3f} consistency "
            f"{scores['consistency']:.3f} timeliness {scores['timeliness']:.3f}")
