"""Parquet for the Dask engine: partitioned reads of files, folders or globs on local disk or
S3 (`s3://bucket/prefix/*.parquet`), partitioned writes, and the stage outputs DVC tracks
written byte-identical to `lifecycle.io.write_parquet` (one file, the same row groups)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pandas as pd

ROW_GROUP_ROWS = 1024 * 1024   # pyarrow's default row group: what lifecycle.io.write_parquet makes


def storage_options(url: str) -> dict:
    """fsspec options: an S3-compatible endpoint from $AWS_ENDPOINT_URL (MinIO, moto, Ceph);
    credentials come from the usual AWS variables or files, never from params."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    return {"client_kwargs": {"endpoint_url": endpoint}} if url.startswith("s3://") and endpoint \
        else {}


def filesystem(url: str):
    import fsspec

    return fsspec.core.url_to_fs(url, **storage_options(url))


@dataclass(frozen=True)
class Slice:
    """Rows [start, stop) of one Parquet file: one partition."""
    url: str
    start: int
    stop: int
    columns: tuple[str, ...] = ()   # in the first file's order (files may order them apart)


def slices(url: str, partition_rows: int) -> list[Slice]:
    """A file, a folder of `*.parquet` or a glob, cut into partitions of at most
    `partition_rows` rows, in file-name order then row order."""
    import pyarrow.parquet as pq

    fs, path = filesystem(url)
    if fs.isdir(path):
        files = sorted(fs.glob(path.rstrip("/") + "/*.parquet"))
    elif any(ch in path for ch in "*?["):
        files = sorted(fs.glob(path))
    else:
        files = [path]
    if not files:
        from lifecycle.errors import StageError
        raise StageError(f"no Parquet file matches {url}")
    out, columns = [], None
    for name in files:
        with fs.open(name, "rb") as f:
            pf = pq.ParquetFile(f)
            rows, names = pf.metadata.num_rows, pf.schema_arrow.names
        full = fs.unstrip_protocol(name)
        if columns is None:
            columns = (full, names)
        elif sorted(names) != sorted(columns[1]):
            from lifecycle.errors import StageError
            raise StageError(f"{full} does not have the columns of {columns[0]} (every file "
                             "of a partitioned table must have the same columns)")
        out += [Slice(full, a, min(a + partition_rows, rows), tuple(columns[1]))
                for a in range(0, max(rows, 1), partition_rows)]
    return out


def read_slice(part: Slice) -> pd.DataFrame:
    """One partition, converted to pandas exactly as `pandas.read_parquet` converts a file."""
    import pyarrow.parquet as pq

    fs, path = filesystem(part.url)
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        groups, first, offset = [], None, 0
        for i in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if offset < part.stop and offset + n > part.start:
                groups.append(i)
                first = offset if first is None else first
            offset += n
        table = pf.read_row_groups(groups) if groups else pf.schema_arrow.empty_table()
    table = table.slice(part.start - (first or 0), part.stop - part.start)
    return to_pandas(table.select(part.columns) if part.columns else table)


def to_pandas(table) -> pd.DataFrame:
    # pandas' own conversion (its string dtype, nullable types from the pandas metadata), so a
    # partition has the dtypes `pd.read_parquet` would give the whole file
    from pandas.io._util import arrow_table_to_pandas

    return arrow_table_to_pandas(table)


def read(url: str, partition_rows: int):
    """A Dask DataFrame over Parquet at `url` (file, folder or glob; local or s3://)."""
    import dask.dataframe as dd
    import pyarrow.parquet as pq

    parts = slices(url, partition_rows)
    fs, path = filesystem(parts[0].url)
    with fs.open(path, "rb") as f:
        meta = to_pandas(pq.ParquetFile(f).schema_arrow.empty_table())
    return dd.from_map(read_slice, parts, meta=meta, enforce_metadata=False)


def _arrow(frame: pd.DataFrame):
    import pyarrow as pa

    return pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)


def _shape(table) -> tuple:
    return table.schema, [table.num_rows - table.column(i).null_count
                          for i in range(table.num_columns)]


def unify_schemas(shapes: list[tuple]):
    """One schema for partitions converted apart, as pandas would give the whole frame: each
    column takes its type (and its pandas metadata entry) from the first partition where it
    holds values; a partition where it is all null or empty converts to that type."""
    import pyarrow as pa

    first = shapes[0][0]
    pandas_meta = first.metadata and first.metadata.get(b"pandas")
    meta = json.loads(pandas_meta) if pandas_meta else None
    fields = list(first)
    for i in range(len(fields)):
        donor = next((schema for schema, present in shapes if present[i]), None)
        if donor is None:
            continue
        fields[i] = donor.field(i)
        if meta:
            meta["columns"][i] = json.loads(donor.metadata[b"pandas"])["columns"][i]
    metadata = dict(first.metadata or {})
    if meta:
        metadata[b"pandas"] = json.dumps(meta).encode()
    return pa.schema(fields, metadata=metadata)


def write_file(ddf, path, client) -> int:
    """The partitions, in order, as ONE Parquet file with the bytes `lifecycle.io.write_parquet`
    gives the concatenated frame. Workers convert; this process only streams row groups, so its
    memory holds one row group. Returns the rows written."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq
    from dask import delayed

    tables = client.compute([delayed(_arrow)(d) for d in ddf.to_delayed()])
    schema = unify_schemas(client.gather([client.submit(_shape, t) for t in tables]))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    buffered, rows = [], 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for future in tables:
            table = future.result()
            future.release()
            buffered.append(table.select(schema.names).cast(schema).replace_schema_metadata(
                schema.metadata))
            if sum(len(t) for t in buffered) >= ROW_GROUP_ROWS:
                whole = pa.concat_tables(buffered).combine_chunks()
                cut = len(whole) - len(whole) % ROW_GROUP_ROWS
                writer.write_table(whole.slice(0, cut))
                buffered = [whole.slice(cut)]
            rows += len(table)
        whole = pa.concat_tables(buffered).combine_chunks() if buffered else \
            schema.empty_table()
        if len(whole) or rows == 0:
            writer.write_table(whole)
    return rows


def part_name(url: str, index: int) -> str:
    """The `index`-th part file of a partitioned table at `url` (file-name order = row order)."""
    return f"{url.rstrip('/')}/part-{index:05d}.parquet"


def clear_parts(url: str) -> None:
    """Remove the part files a previous run left at `url`, so none outlives this run."""
    fs, path = filesystem(url)
    fs.makedirs(path, exist_ok=True)
    for old in fs.glob(path.rstrip("/") + "/part-*.parquet"):
        fs.rm(old)


def write_one(frame: pd.DataFrame, url: str) -> int:
    """One Parquet file at `url` (local or s3://), as `lifecycle.io.write_parquet` writes it."""
    import pyarrow.parquet as pq

    fs, path = filesystem(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as f:
        pq.write_table(_arrow(frame), f, compression="zstd")
    return len(frame)
