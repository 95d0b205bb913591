"""validate, partition by partition, on either engine (lifecycle/scale/parts.py): each
partition judged by `quality.judge` (the contract's pandera schema, rules and reasons, row by
row); what spans partitions decided once: the ids held with differing content, and the scores
from counts summed over partitions (`quality.add_counts`)."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from lifecycle import quality
from lifecycle.cleaning import make_coherent
from lifecycle.contract import Contract
from lifecycle.scale.frames import CONTENT, content_hash


def _coherent_ids(rows: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """The partition's ids as `make_coherent` reads them (text ids held as Arrow strings: a
    table's worth of them stays small)."""
    ids = make_coherent(rows[[contract.id]], contract)[0][contract.id]
    return pd.DataFrame({"id": ids.astype("string[pyarrow]") if ids.dtype == "string"
                         else ids})


def _id_and_content(raw: pd.DataFrame, contract: Contract, repeated: set) -> pd.DataFrame:
    """(id, content hash) of the partition's rows whose id appears more than once."""
    ids = make_coherent(raw[[contract.id]], contract)[0][contract.id]
    rows = raw[ids.isin(repeated).fillna(False).to_numpy(dtype=bool)]
    coherent, _ = make_coherent(quality.check_columns(rows, contract), contract)
    return pd.DataFrame({"id": coherent[contract.id].astype(object),
                         CONTENT: content_hash(coherent, contract.content_columns)})


def conflicting_ids(table, contract: Contract) -> set:
    """Ids held with differing content anywhere in the table (as `quality._conflicting_ids`,
    content compared by its hash): the ids first, then the content of repeated ids only."""
    counts = table.frame(_coherent_ids, contract, columns=[contract.id])["id"].value_counts()
    repeated = set(table.compute(counts[counts > 1]).index.tolist())
    if not repeated:
        return set()
    pairs = table.frame(_id_and_content, contract, repeated,
                        meta={"id": "object", CONTENT: "uint64"})
    variants = pairs.drop_duplicates().groupby("id")[CONTENT].count()
    return set(table.compute(variants[variants > 1]).index.tolist())


def _judged(raw: pd.DataFrame, contract: Contract, as_of: pd.Timestamp, conflicting: set):
    verdict = quality.judge(raw, contract, as_of, conflicting)
    return ((verdict.valid, verdict.quarantine),
            (verdict.counts, len(verdict.valid), Counter(verdict.first_reason.tolist())))


def judge_all(table, contract: Contract, as_of: pd.Timestamp, valid_path, quarantine_path):
    """Write valid rows and quarantine; return (rows in, rows valid, quarantined reasons (the
    first failed check of each row), scores)."""
    quality.check_columns(pd.DataFrame(columns=list(table.slices[0].columns)), contract)
    conflicting = conflicting_ids(table, contract)
    judged = table.write(_judged, [valid_path, quarantine_path], contract, as_of, conflicting)
    counts = quality.add_counts([c for c, _, _ in judged])
    reasons = sum((r for _, _, r in judged), Counter())
    return (counts["rows"], sum(n for _, n, _ in judged), reasons,
            quality.scores_from_counts(counts, contract))
