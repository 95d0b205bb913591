"""collect on the cluster: Parquet sources (local or s3://) read by the workers, a slice each;
other sources (SQL, HTTP, a stream, text files) read by this process as the pandas engine
reads them, then partitioned. The snapshot is written byte-identical to the pandas engine's."""

from __future__ import annotations

from collections import Counter

from lifecycle import io, sources
from lifecycle.errors import StageError
from lifecycle.scale import EngineParams, cluster
from lifecycle.scale import io as sio
from lifecycle.scale.frames import partitions


class Written:
    """What `sources.manifest` reads of the snapshot frame: its length, dtypes and attrs."""

    def __init__(self, meta, rows: int, attrs: dict):
        self.dtypes, self.attrs, self.rows = meta.dtypes, attrs, rows

    def __len__(self) -> int:
        return self.rows


def read_source(source, partition_rows: int):
    """(partitions, rejected lines, line counts, attrs): Parquet files (local or s3://) are
    read by the workers, a slice each; other sources by this process, then partitioned."""
    parquet = source.kind == "files" and (source.format == "parquet" or (
        source.format == "auto" and source.path.endswith(".parquet")))
    if parquet:
        ddf = sio.read(source.path, partition_rows)
        files = len({part.url for part in sio.slices(source.path, partition_rows)})
        return ddf.map_partitions(sources.snapshot_frame, meta=ddf._meta), \
            sources.rejected_frame([]), Counter(files=files), {}
    got = sources.read_source(source)
    frame = sources.snapshot_frame(got.frame)
    return partitions(frame, partition_rows), got.rejected, got.lines, frame.attrs


def collect(args, p, engine: EngineParams) -> str:
    source = sources.pin(p.source, args.manifest)
    with cluster.connect(engine) as client:
        ddf, rejected, lines, attrs = read_source(source, engine.partition_rows)
        rows = sio.write_file(ddf, args.snapshot, client)
    io.write_parquet(rejected, args.rejected)
    digest = io.sha256_file(args.snapshot)
    if "files" in lines and not sum(lines.values()) - lines["files"]:   # Parquet: rows = lines
        lines.update(rows=rows, data_lines=rows)
    got = sources.Collected(ddf._meta, rejected, lines)
    if not rows:
        raise StageError(f"source returned no rows: {sources.describe(source)}")
    io.write_json(sources.manifest(source, got, Written(ddf._meta, rows, attrs), digest),
                  args.manifest)
    sources.check_rejected(got, p.max_rejected_share)
    return (f"{rows} rows x {len(ddf.columns)} columns from {p.source.kind} -> {args.snapshot} "
            f"(sha256 {digest[:12]}; dask, {ddf.npartitions} partitions)")
