"""preprocess on the cluster: which rows go (older versions of an id, duplicate records, no
target) is decided by `cleaning.remove_rows` itself, once, on small columns of every row (id,
event time, target, drop-policy columns, a hash of the content columns), so duplicates are
found across partitions; each partition then keeps or removes its rows with those reasons."""

from __future__ import annotations

import pandas as pd

from lifecycle import cleaning, io
from lifecycle.accounting import row_report
from lifecycle.contract import Contract, mask
from lifecycle.scale import EngineParams, cluster
from lifecycle.scale import io as sio
from lifecycle.scale.frames import CONTENT, content_hash, offsets


def _decision_columns(rows: pd.DataFrame, contract: Contract, start: int) -> pd.DataFrame:
    coherent, _ = cleaning.make_coherent(rows, contract)
    keep = [c for c in dict.fromkeys([contract.id, contract.event_time, contract.target.column,
                                      *(n for n, s in contract.columns.items()
                                        if s.missing == "drop")]) if c and c in coherent]
    small = coherent[keep].copy()
    small[CONTENT] = content_hash(coherent, contract.content_columns).to_numpy()
    small.index = pd.RangeIndex(start, start + len(small))
    return small


def decision_contract(contract: Contract) -> Contract:
    """The contract as seen by `remove_rows` on decision columns: the content hash stands for
    the content columns, the drop-policy columns keep their policy."""
    from lifecycle.contract import ColumnSpec

    kept = {n: s for n, s in contract.columns.items()
            if n in (contract.id, contract.event_time, contract.target.column)
            or s.missing == "drop"}
    columns = {n: (s if n in (contract.id, contract.event_time, contract.target.column)
                   else s.model_copy(update={"role": "metadata"})) for n, s in kept.items()}
    columns[CONTENT] = ColumnSpec(type="string")
    return contract.model_copy(update={"columns": columns, "personal_data": [], "rules": [],
                                       "freshness": None})


def clean_all(rows, contract: Contract, p, client, clean_path, removed_path):
    """Write clean and removed rows; return (rows in, kept, removed reasons)."""
    from dask import delayed

    starts = offsets(rows)
    small = pd.concat(client.compute(
        [delayed(_decision_columns)(part, contract, int(s))
         for part, s in zip(rows.to_delayed(), starts[:-1], strict=True)], sync=True))
    _, removed = cleaning.remove_rows(small, decision_contract(contract),
                                      p.drop_duplicate_records, p.drop_missing_target)
    reason = pd.Series(pd.NA, index=small.index, dtype="string")
    reason[removed.index] = removed["reason"]
    cuts = [client.scatter(reason.iloc[a:b].reset_index(drop=True), hash=False)
            for a, b in zip(starts[:-1], starts[1:], strict=True)]
    apply = [delayed(_apply_removal)(part, why, contract)
             for part, why in zip(rows.to_delayed(), cuts, strict=True)]
    apply = client.persist(apply)
    import dask.dataframe as dd

    kept = dd.from_delayed([delayed(lambda t: t[0])(a) for a in apply], verify_meta=False)
    gone = dd.from_delayed([delayed(lambda t: t[1])(a) for a in apply], verify_meta=False)
    n_kept = sio.write_file(kept, clean_path, client)
    sio.write_file(gone, removed_path, client)
    return int(starts[-1]), n_kept, cleaning.count_reasons(removed)


def _apply_removal(rows: pd.DataFrame, reason: pd.Series, contract: Contract):
    """The pandas engine's outputs for one partition, given the reasons decided globally."""
    coherent, _ = cleaning.make_coherent(rows, contract)
    reason = reason.set_axis(coherent.index)
    out = reason.notna()
    removed = coherent[out].assign(reason=reason[out])
    for column in contract.personal_data:
        if column != contract.id:
            removed[column] = mask(removed[column].tolist())
    return coherent[~out], removed


def preprocess(args, p, contract, engine: EngineParams) -> str:
    with cluster.connect(engine) as client:
        rows = sio.read(args.valid, engine.partition_rows)
        rows_in, kept, reasons = clean_all(rows, contract, p, client, args.clean,
                                                   args.removed)
    io.write_json(row_report(rows_in, kept, reasons), args.metrics)
    detail = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())) or "none"
    return f"{kept}/{rows_in} rows kept (dask, {rows.npartitions} partitions); removed: {detail}"
