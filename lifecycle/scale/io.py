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


def read_slice(part: Slice, columns: list[str] | None = None) -> pd.DataFrame:
    """One partition, converted to pandas exactly as `pandas.read_parquet` converts a file."""
    return to_pandas(read_slice_arrow(part, columns))


def read_slice_arrow(part: Slice, columns: list[str] | None = None):
    """One partition as an Arrow table (only `columns`, when given): the row groups it
    overlaps are read, nothing else."""
    import pyarrow.parquet as pq

    fs, path = filesystem(part.url)
    wanted = list(columns) if columns is not None else (list(part.columns) or None)
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        groups, first, offset = [], None, 0
        for i in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if offset < part.stop and offset + n > part.start:
                groups.append(i)
                first = offset if first is None else first
            offset += n
        table = pf.read_row_groups(groups, columns=wanted) if groups else \
            pf.schema_arrow.empty_table()
    table = table.slice(part.start - (first or 0), part.stop - part.start)
    return table.select(wanted) if wanted else table


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


class RowGroups:
    """Arrow tables appended in order to one Parquet file in row groups of ROW_GROUP_ROWS:
    the bytes `pq.write_table` gives their concatenation. Holds one row group at most."""

    def __init__(self, path, schema):
        from pathlib import Path

        import pyarrow.parquet as pq

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.schema, self.rows, self._buffered = schema, 0, []
        self._writer = pq.ParquetWriter(path, schema, compression="zstd")

    def add(self, table) -> None:
        import pyarrow as pa

        self._buffered.append(table.select(self.schema.names).cast(self.schema)
                              .replace_schema_metadata(self.schema.metadata))
        self.rows += len(table)
        if sum(len(t) for t in self._buffered) >= ROW_GROUP_ROWS:
            whole = pa.concat_tables(self._buffered).combine_chunks()
            cut = len(whole) - len(whole) % ROW_GROUP_ROWS
            self._writer.write_table(whole.slice(0, cut), row_group_size=ROW_GROUP_ROWS)
            self._buffered = [whole.slice(cut)]

    def close(self) -> int:
        """Write what is left; the rows written."""
        import pyarrow as pa

        whole = pa.concat_tables(self._buffered).combine_chunks() if self._buffered else \
            self.schema.empty_table()
        if len(whole) or self.rows == 0:
            self._writer.write_table(whole)
        self._writer.close()
        return self.rows


def write_file(ddf, path, client) -> int:
    """The partitions, in order, as ONE Parquet file with the bytes `lifecycle.io.write_parquet`
    gives the concatenated frame. Workers convert; this process only streams row groups, so its
    memory holds one row group. Returns the rows written."""
    from dask import delayed

    tables = client.compute([delayed(_arrow)(d) for d in ddf.to_delayed()])
    schema = unify_schemas(client.gather([client.submit(_shape, t) for t in tables]))
    out = RowGroups(path, schema)
    for future in tables:
        out.add(future.result())
        future.release()
    return out.close()


class FrameWriter:
    """pandas frames (the partitions of a table, in order) streamed into ONE Parquet file with
    the bytes `lifecycle.io.write_parquet` gives their concatenation, in this process.

    The file's schema is `unify_schemas` of the partitions': settled as soon as every column
    has held a value (its type then cannot change); partitions seen before that wait, in memory
    up to a row group, then in Arrow files beside the output."""

    def __init__(self, path):
        self.path, self._out, self._waiting, self._shapes = path, None, [], []
        self._spill, self._spilled_files = None, 0

    def add(self, frame: pd.DataFrame) -> None:
        table = _arrow(frame)
        if self._out is not None:
            self._out.add(table)
            return
        self._shapes.append(_shape(table))
        self._waiting.append(table)
        columns = range(len(self._shapes[0][1]))
        if all(any(present[i] for _, present in self._shapes) for i in columns):
            self._start(unify_schemas(self._shapes))   # every column has its type
        elif sum(len(t) for t in self._waiting if not isinstance(t, str)) >= ROW_GROUP_ROWS:
            self._waiting = [self._spilled(t) for t in self._waiting]

    def _spilled(self, table):
        """`table` in an Arrow file beside the output (its name stands for it), or the name."""
        import tempfile

        import pyarrow as pa

        if isinstance(table, str):
            return table
        if self._spill is None:
            from pathlib import Path

            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._spill = tempfile.TemporaryDirectory(dir=Path(self.path).parent,
                                                      prefix=".spill-")
        self._spilled_files += 1
        name = f"{self._spill.name}/{self._spilled_files:06d}.arrow"
        with pa.OSFile(name, "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        return name

    def _start(self, schema) -> None:
        import pyarrow as pa

        self._out = RowGroups(self.path, schema)
        for table in self._waiting:
            if isinstance(table, str):
                with pa.memory_map(table) as source:
                    table = pa.ipc.open_file(source).read_all()
            self._out.add(table)
        self._waiting = []

    def close(self) -> int:
        """Finish the file; the rows written."""
        if self._out is None:
            if not self._shapes:
                self.add(pd.DataFrame())
            self._start(unify_schemas(self._shapes))
        rows = self._out.close()
        if self._spill is not None:
            self._spill.cleanup()
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
