"""collect on the cluster: Parquet sources (a file, a folder or a glob, local or s3://) are read
by the workers, a slice each, and written as the pandas engine writes them. Other sources (a
database, HTTP, a stream, text files) are read by one process whatever the engine: collect
then runs the pandas engine's own code (`sources.write_snapshot`)."""

from __future__ import annotations

from collections import Counter

from lifecycle import io, sources
from lifecycle.errors import StageError
from lifecycle.scale import EngineParams, cluster
from lifecycle.scale import io as sio


def is_parquet(source) -> bool:
    return source.kind == "files" and (source.format == "parquet" or (
        source.format == "auto" and source.path.endswith(".parquet")))


def write_parquet_source(source, path, partition_rows: int, client) -> sources.Collected:
    """The snapshot of a partitioned Parquet source; what was read (no line is rejected:
    Parquet has no malformed lines)."""
    parts = sio.slices(source.path, partition_rows)
    ddf = sio.read(source.path, partition_rows)
    rows = sio.write_file(ddf.map_partitions(sources.snapshot_frame, meta=ddf._meta), path,
                          client)
    if not rows:
        raise StageError(f"source returned no rows: {sources.describe(source)}")
    lines = Counter(files=len({part.url for part in parts}), rows=rows, data_lines=rows)
    return sources.Collected(ddf._meta.iloc[:0], sources.rejected_frame([]), lines)


def collect(args, p, engine: EngineParams) -> str:
    source = sources.pin(p.source, args.manifest)
    if is_parquet(source):
        with cluster.connect(engine) as client:
            got = write_parquet_source(source, args.snapshot, engine.partition_rows, client)
        how = f"dask, {len(sio.slices(source.path, engine.partition_rows))} partitions"
    else:   # one process reads a database or an API, whichever the engine
        got = sources.write_snapshot(source, args.snapshot)
        how = "read by this process: only Parquet sources are read by the workers"
    io.write_parquet(got.rejected, args.rejected)
    digest = io.sha256_file(args.snapshot)
    manifest = sources.manifest(source, got, args.snapshot, digest)
    io.write_json(manifest, args.manifest)
    sources.check_rejected(got, p.max_rejected_share)
    return (f"{manifest['rows']} rows x {len(manifest['columns'])} columns from "
            f"{p.source.kind} -> {args.snapshot} (sha256 {digest[:12]}; {how})")
