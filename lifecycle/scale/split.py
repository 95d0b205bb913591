"""split, on either engine (lifecycle/scale/parts.py): `splitting.assign` decides on (id,
target, event time) of every row, as the pandas engine always did; the rows are then put in
id order and each goes to its split's file, so each split holds the pandas engine's rows in its
order. In id order: on a Dask cluster by its sort; in this process by buckets of id order
(`engine.partition_rows` rows each) spilled to Arrow files beside the outputs, then written
bucket by bucket."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lifecycle import splitting
from lifecycle.contract import Contract
from lifecycle.scale import io as sio
from lifecycle.scale.parts import OnCluster

RANK = "__rank"   # a row's position in id order, carried through the spill


def _as_is(part: pd.DataFrame) -> pd.DataFrame:
    return part


def split_all(table, contract: Contract, p, task_type: str, outdir, partition_rows: int):
    """Write train / validation / test in id order; return (rows in, the small columns of each
    split, for check_splits and summary)."""
    columns = [c for c in dict.fromkeys([contract.id, contract.target.column,
                                         contract.event_time]) if c]
    small = table.compute(table.frame(_as_is, columns=columns, meta=None))
    order, labels = splitting.assign(small, contract, p.method, p.validation_size, p.test_size,
                                     p.seed)
    in_order = small.iloc[order].reset_index(drop=True)
    splits = {name: in_order[labels == name].reset_index(drop=True)
              for name in splitting.SPLITS}
    splitting.check_splits(splits, contract, task_type, p.min_rows)
    paths = {name: Path(outdir) / f"{name}.parquet" for name in splitting.SPLITS}
    if isinstance(table, OnCluster):
        _write_sorted_on_cluster(table, contract, labels, paths)
    else:
        _write_sorted_here(table, order, labels, paths, partition_rows)
    return len(small), splits


def _write_sorted_on_cluster(table: OnCluster, contract: Contract, labels: np.ndarray,
                             paths: dict) -> None:
    import dask.dataframe as dd
    from dask import delayed

    # the pandas engine sorts by id, then filters: the same order, across the cluster
    ordered = table.client.persist(table.ddf.sort_values(contract.id))
    lengths = np.asarray(ordered.map_partitions(len).compute(), dtype="int64")
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for name, path in paths.items():
        parts = [delayed(_keep)(part, table.client.scatter(labels[a:b], hash=False), name)
                 for part, a, b in zip(ordered.to_delayed(), starts[:-1], starts[1:],
                                       strict=True)]
        sio.write_file(dd.from_delayed(parts, meta=table.ddf._meta, verify_meta=False), path,
                       table.client)


def _keep(part: pd.DataFrame, labels: np.ndarray, name: str) -> pd.DataFrame:
    return part[labels == name]


def _write_sorted_here(table, order: np.ndarray, labels: np.ndarray, paths: dict,
                       bucket_rows: int) -> None:
    """Each split's rows in id order, holding one partition, then one bucket, at a time."""
    writers = {name: sio.FrameWriter(path) for name, path in paths.items()}
    if len(table) == 1:   # all of it in memory already
        rows = table.read(0).iloc[order].reset_index(drop=True)
        for name, writer in writers.items():
            writer.add(_keep(rows, labels, name))
    else:
        rank = np.empty(len(order), dtype="int64")
        rank[order] = np.arange(len(order))
        where = next(iter(paths.values())).parent
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=where, prefix=".spill-") as spill:
            buckets = _spill(table, rank, bucket_rows, Path(spill))
            for bucket in buckets:
                rows = _bucket(bucket)
                got = labels[rows.pop(RANK).to_numpy()]
                for name, writer in writers.items():
                    writer.add(_keep(rows, got, name))
    for writer in writers.values():
        writer.close()


def _spill(table, rank: np.ndarray, bucket_rows: int, where: Path) -> list[Path]:
    """Every row into the Arrow file of its bucket of id order (with its rank); the files, in
    bucket order."""
    import pyarrow as pa

    count = -(-len(rank) // bucket_rows)
    files = [where / f"bucket-{k:05d}.arrow" for k in range(count)]
    sinks: dict[int, tuple] = {}
    try:
        for part, start, stop in zip(table.slices, table.starts[:-1], table.starts[1:],
                                     strict=True):
            rows = sio.read_slice_arrow(part)
            ranks = rank[start:stop]
            rows = rows.append_column(RANK, pa.array(ranks))
            bucket = ranks // bucket_rows
            for k in np.unique(bucket).tolist():
                if k not in sinks:
                    sink = pa.OSFile(str(files[k]), "wb")
                    sinks[k] = (sink, pa.ipc.new_file(sink, rows.schema))
                sinks[k][1].write_table(rows.filter(pa.array(bucket == k)))
    finally:
        for sink, writer in sinks.values():
            writer.close()
            sink.close()
    return [f for f in files if f.exists()]


def _bucket(path: Path) -> pd.DataFrame:
    """One bucket's rows in id order, as pandas reads the file they came from."""
    import pyarrow as pa
    import pyarrow.compute as pc

    with pa.memory_map(str(path)) as source:
        rows = pa.ipc.open_file(source).read_all()
    return sio.to_pandas(rows.take(pc.sort_indices(rows[RANK])))
