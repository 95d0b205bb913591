"""Batch scoring on the cluster: each partition of a Parquet table (a file, a folder or a glob,
local or s3://) is scored on a worker by the serving code itself (`serving.batch.score_file`:
the API's input check, rejects with reasons, the bundle's ONNX model), into
`part-NNNNN.parquet` files under the output and rejects folders (a partition with no rows of
one kind writes no file there). `row` is the row's position
in the whole input; rows in = scored + rejected, summed over partitions.

    python -m lifecycle.scale.batch --bundle models/bundle --input s3://lake/customers/ \\
        --output s3://lake/scores/ [--rejects s3://lake/scores-rejects/]

The workers load the bundle from `--bundle` (with its manifest checked), so that folder must
be readable where they run: this machine for a LocalCluster, a shared disk or the workers'
image (`dvc artifacts get . churn-model`) for a remote one."""

from __future__ import annotations

import argparse
import functools
import tempfile
from collections import Counter
from pathlib import Path

import pandas as pd

from lifecycle.errors import StageError
from lifecycle.scale import EngineParams, cluster
from lifecycle.scale import io as sio


@functools.lru_cache(maxsize=2)
def _bundle(path: str):
    """One loaded bundle per worker process (ONNX sessions are not sent between processes)."""
    from lifecycle.packaging.runtime import load_bundle

    return load_bundle(path, threads=1)


def score_part(bundle_path: str, part: sio.Slice, start: int, output: str, rejects: str,
               engine: str) -> tuple[int, int, int, Counter, str]:
    """Score one partition with `serving.batch.score_file`; write its scored and rejected rows
    (row numbers shifted to the whole input's); return (in, scored, rejected, reasons,
    version)."""
    from lifecycle.serving.batch import score_file

    bundle = _bundle(bundle_path)
    with tempfile.TemporaryDirectory(prefix="score-part-") as tmp:
        here = Path(tmp)
        sio.read_slice(part).to_parquet(here / "in.parquet", index=False)
        summary = score_file(bundle, here / "in.parquet", here / "out.parquet",
                             here / "rejects.parquet", engine=engine, progress=False)
        for local, remote in ((here / "out.parquet", output), (here / "rejects.parquet", rejects)):
            table = pd.read_parquet(local)
            if len(table):   # no file for no rows: an empty one would hold other columns
                table["row"] = table["row"] + start
                sio.write_one(table, remote)
    return summary.rows_in, summary.scored, summary.rejected, summary.reasons, summary.version


def score(bundle_path: str, input_url: str, output_url: str, rejects_url: str | None,
          p: EngineParams, engine: str = "onnx") -> str:
    """Score every row of `input_url` on the cluster; returns the summary line."""
    import time

    rejects_url = rejects_url or output_url.rstrip("/") + "-rejects"
    parts = sio.slices(input_url, p.partition_rows)
    starts = [0]
    for part in parts:
        starts.append(starts[-1] + part.stop - part.start)
    for url in (output_url, rejects_url):
        sio.clear_parts(url)
    begin = time.perf_counter()
    with cluster.connect(p) as client:
        futures = [client.submit(score_part, str(Path(bundle_path).resolve()), part, start,
                                 sio.part_name(output_url, i), sio.part_name(rejects_url, i),
                                 engine, pure=False)
                   for i, (part, start) in enumerate(zip(parts, starts, strict=False))]
        results = client.gather(futures)
    rows_in = sum(r[0] for r in results)
    scored, rejected = sum(r[1] for r in results), sum(r[2] for r in results)
    reasons = sum((r[3] for r in results), Counter())
    if rows_in != starts[-1] or scored + rejected != rows_in:
        raise StageError(f"row accounting broken: {starts[-1]} rows in the input, {rows_in} "
                         f"read, {scored} scored, {rejected} rejected")
    rate = rows_in / max(time.perf_counter() - begin, 1e-9)
    top = ", ".join(f"{r}: {n}" for r, n in reasons.most_common(5))
    return (f"scored {scored} rows -> {output_url}, rejected {rejected} rows -> {rejects_url}"
            + (f" (top reasons: {top})" if top else "")
            + f"; {rows_in} rows in, {len(parts)} partitions (model {results[0][4]}, {engine}), "
            f"{rate:,.0f} rows/s")


def main(argv: list[str] | None = None) -> None:
    from lifecycle import cli, scale

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="models/bundle")
    parser.add_argument("--input", required=True, help="Parquet: a file, a folder or a glob")
    parser.add_argument("--output", required=True, help="a folder (local or s3://)")
    parser.add_argument("--rejects", help="a folder; default: <output>-rejects")
    parser.add_argument("--engine", choices=["onnx", "sklearn"], default="onnx")
    args = parser.parse_args(argv)
    cli.run("predict (dask)", lambda: score(args.bundle, args.input, args.output, args.rejects,
                                            scale.load(), args.engine))


if __name__ == "__main__":
    main()
