"""split on the cluster: `splitting.split` decides on (id, target, event time) of every row, as
the pandas engine does; the rows are sorted by id across the cluster and each partition keeps
its slice of the assignment, so each split holds the pandas engine's rows in its order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lifecycle import io, splitting
from lifecycle.accounting import row_report
from lifecycle.contract import Contract
from lifecycle.scale import EngineParams, cluster
from lifecycle.scale import io as sio
from lifecycle.scale.frames import offsets


def split_all(rows, contract: Contract, p, task_type: str, client, outdir):
    """Write train / validation / test in the pandas engine's order; return (rows in, small
    frames of each split for check_splits and summary)."""
    from dask import delayed

    columns = [c for c in dict.fromkeys([contract.id, contract.target.column,
                                         contract.event_time]) if c]
    small = rows[columns].compute()
    splits = splitting.split(small, contract, p.method, p.validation_size, p.test_size, p.seed)
    splitting.check_splits(splits, contract, task_type, p.min_rows)
    # the pandas engine sorts by id, then filters: the same order, across the cluster
    ordered = client.persist(rows.sort_values(contract.id))
    names = pd.Series("", index=pd.RangeIndex(len(small)))
    position = small[contract.id].sort_values(kind="stable").reset_index(drop=True)
    where = {name: set(f[contract.id].tolist()) for name, f in splits.items()}
    for name in splitting.SPLITS:
        names[position.isin(where[name]).to_numpy()] = name
    starts = offsets(ordered)
    for name in splitting.SPLITS:
        parts = [delayed(_keep)(part, client.scatter(names.iloc[a:b].to_numpy(), hash=False), name)
                 for part, a, b in zip(ordered.to_delayed(), starts[:-1], starts[1:],
                                       strict=True)]
        import dask.dataframe as dd

        sio.write_file(dd.from_delayed(parts, meta=rows._meta, verify_meta=False),
                       Path(outdir) / f"{name}.parquet", client)
    return len(small), splits


def _keep(part: pd.DataFrame, names: np.ndarray, name: str) -> pd.DataFrame:
    return part[names == name]

def split(args, p, task, contract, engine: EngineParams) -> str:
    with cluster.connect(engine) as client:
        rows = sio.read(args.clean, engine.partition_rows)
        rows_in, splits = split_all(rows, contract, p, task.type, client, args.outdir)
    rows_out = sum(len(f) for f in splits.values())
    io.write_json(row_report(rows_in, rows_out, {}, method=p.method,
                             splits=splitting.summary(splits, contract)), args.metrics)
    sizes = " / ".join(f"{len(f)} {name}" for name, f in splits.items())
    return f"{p.method} split of {rows_in} rows (dask): {sizes}"
