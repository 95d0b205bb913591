"""preprocess, partition by partition, on either engine (lifecycle/scale/parts.py): which rows
go (older versions of an id, duplicate records, no target) is decided by
`cleaning.remove_rows` itself, once, on small columns of every row (id, event time, target,
drop-policy columns, a hash of the content columns), so duplicates are found across
partitions; each partition then keeps or removes its rows with those reasons. Its input is
coherent already (validate typed it), as the rows the pandas engine held whole were."""

from __future__ import annotations

import pandas as pd

from lifecycle import cleaning
from lifecycle.contract import Contract, mask
from lifecycle.scale.frames import CONTENT, content_hash


def _decision_columns(rows: pd.DataFrame, start: int, contract: Contract) -> pd.DataFrame:
    keep = [c for c in dict.fromkeys([contract.id, contract.event_time, contract.target.column,
                                      *(n for n, s in contract.columns.items()
                                        if s.missing == "drop")]) if c and c in rows]
    small = rows[keep].copy()
    small[CONTENT] = content_hash(rows, contract.content_columns).to_numpy()
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


def clean_all(table, contract: Contract, p, clean_path, removed_path):
    """Write clean and removed rows; return (rows in, kept, removed reasons)."""
    starts = table.starts
    small = pd.concat(table.map(_decision_columns, contract, each=starts[:-1].tolist()))
    _, removed = cleaning.remove_rows(small, decision_contract(contract),
                                      p.drop_duplicate_records, p.drop_missing_target)
    reason = pd.Series(pd.NA, index=small.index, dtype="string")
    reason[removed.index] = removed["reason"]
    del small
    cuts = [reason.iloc[a:b].reset_index(drop=True)
            for a, b in zip(starts[:-1], starts[1:], strict=True)]
    kept = table.write(_apply_removal, [clean_path, removed_path], contract, each=cuts)
    return int(starts[-1]), sum(kept), cleaning.count_reasons(removed)


def _apply_removal(rows: pd.DataFrame, reason: pd.Series, contract: Contract):
    """The partition's kept and removed rows (personal data masked), given the reasons
    decided globally; and how many it kept."""
    reason = reason.set_axis(rows.index)
    out = reason.notna().to_numpy()
    removed = rows[out].assign(reason=reason[out])
    for column in contract.personal_data:
        if column != contract.id:
            removed[column] = mask(removed[column].tolist())
    return (rows[~out], removed), int((~out).sum())
