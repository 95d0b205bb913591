"""Batch inference: score a CSV, Parquet or JSON Lines file with a bundle, chunk by chunk.

Each chunk's rows get the input check the API uses (`inputs.InputCheck`: bounds, declared
columns, then the bundle's contract checks); rows that fail go to the rejects file with their
reason (personal data masked, as in quarantine),
the rest are scored. Memory stays bounded by the chunk size whatever the file's size, and
rows in = rows scored + rows rejected, always.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lifecycle.contract import mask
from lifecycle.errors import StageError
from lifecycle.serving.inputs import InputCheck

FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def file_format(path: str | Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if not fmt:
        raise StageError(f"cannot tell the format of {path}: use .csv, .parquet or .jsonl")
    return fmt


def read_chunks(path: str | Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows, `chunk_rows` at a time, as the source holds them."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"input file not found: {path}")
    fmt = file_format(path)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                yield batch.to_pandas()
        elif fmt == "csv":
            yield from pd.read_csv(path, chunksize=chunk_rows)
        else:
            yield from _jsonl_chunks(path, chunk_rows)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise StageError(f"cannot read {path} as {fmt}: {exc}") from exc


def _jsonl_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """JSON Lines, each line read by `inputs.loads` as the API reads a body (any integer, no
    type guessing across lines, NaN and Infinity kept apart), so both paths judge the same
    values; a line that is not a JSON object is one error naming its line."""
    from lifecycle.serving.inputs import NotJson, loads

    rows, marked = [], set()
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = loads(line)
            except (ValueError, RecursionError) as exc:  # not JSON, or nested too deep
                raise StageError(f"{path}:{number}: not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise StageError(f"{path}:{number}: a line must be a JSON object, not "
                                 f"{type(row).__name__}")
            if "NaN" in line or "Infinity" in line:  # rare: which columns hold a NotJson?
                marked.update(k for k, v in row.items() if type(v) is NotJson)
            rows.append(row)
            if len(rows) == chunk_rows:
                yield _frame(rows, marked)
                rows, marked = [], set()
    if rows:
        yield _frame(rows, marked)


def _frame(rows: list[dict], marked: set[str]) -> pd.DataFrame:
    """The rows as a frame; a column holding a NotJson stays Python objects (a text column
    would otherwise turn it into the plain text "NaN" and the input check could not see it)."""
    frame = pd.DataFrame.from_records(rows)
    for name in marked:
        frame[name] = pd.Series([row.get(name) for row in rows], index=frame.index,
                                dtype=object)
    return frame


def count_rows(path: str | Path) -> int | None:
    """Rows in the file when that is cheap to know (Parquet metadata), else None."""
    if file_format(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


class ChunkWriter:
    """Append DataFrames to one CSV, Parquet or JSON Lines file, one chunk at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.format = file_format(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self._parquet = None
        self._schema = None
        self._started = False
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        frame = frame.reset_index(drop=True)
        if self.format == "csv":
            frame.to_csv(self.path, mode="a", header=not self._started, index=False)
        elif self.format == "jsonl":
            with open(self.path, "a") as f:
                frame.to_json(f, orient="records", lines=True, date_format="iso")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self._parquet is None:
                self._schema = pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type)
                                          else f for f in table.schema])
                self._parquet = pq.ParquetWriter(self.path, self._schema, compression="zstd")
            self._parquet.write_table(table.select(self._schema.names).cast(self._schema))
        self._started = True
        self.rows += len(frame)

    def close(self, empty_columns: list[str]) -> None:
        """Finish the file; with no rows at all, still write one with the columns."""
        if not self._started:
            self.write(pd.DataFrame(columns=empty_columns))
        if self._parquet is not None:
            self._parquet.close()


@dataclass
class BatchSummary:
    rows_in: int = 0
    scored: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    version: str = ""
    engine: str = ""

    def line(self, output: Path, rejects: Path) -> str:
        top = ", ".join(f"{r}: {n}" for r, n in self.reasons.most_common(5))
        more = f" (top reasons: {top})" if top else ""
        return (f"scored {self.scored} rows -> {output}, rejected {self.rejected} rows -> "
                f"{rejects}{more}; {self.rows_in} rows in (model {self.version}, "
                f"{self.engine})")


def score_file(bundle, input_path: str | Path, output: str | Path,
               rejects: str | Path | None = None, chunk_rows: int = 50_000,
               engine: str = "onnx", progress: bool = True) -> BatchSummary:
    """Score every row of `input_path` into `output`; rejects beside it unless named.

    Output columns: `row` (position in the input), the contract's id when present,
    `prediction`, `probability` (classification), `model_version`.
    """
    from tqdm import tqdm

    output = Path(output)
    rejects = Path(rejects) if rejects else output.with_name(
        f"{output.name.removesuffix(output.suffix)}.rejects{output.suffix}")
    file_format(output), file_format(rejects)  # fail before any work on a bad name
    contract = bundle.contract
    id_column = contract.id
    summary = BatchSummary(version=bundle.version, engine=engine)
    check = InputCheck(bundle)  # the same input check as the API's
    scored_out, rejects_out = ChunkWriter(output), ChunkWriter(rejects)

    def score_and_write(ok: pd.DataFrame, bad: pd.DataFrame) -> None:
        if len(ok):
            answers = bundle.predict(ok, engine=engine)
            out = pd.DataFrame({"row": ok.index.to_numpy()}, index=ok.index)
            if id_column in ok:
                out[id_column] = ok[id_column].to_numpy()
            for column in answers.columns:
                out[column] = answers[column].to_numpy()
            out["model_version"] = bundle.version
            scored_out.write(out)
            summary.scored += len(out)
        if len(bad):
            bad = bad.copy()
            for column in contract.personal_data:
                if column in bad:
                    bad[column] = mask(bad[column].tolist())
            bad.insert(0, "row", bad.index.to_numpy())
            rejects_out.write(bad)
            summary.rejected += len(bad)
            summary.reasons.update(bad["reason"].astype(str).tolist())

    # Three stages overlap, each on its own thread, chunks in order: reading the next chunk,
    # checking this one (mostly Python), scoring and writing the one before (ONNX Runtime and
    # Arrow, which release the GIL). At most a few chunks are in memory at once.
    with tqdm(total=count_rows(input_path), unit=" rows", desc="predict",
              disable=not progress, mininterval=0.5) as bar, \
            ThreadPoolExecutor(1, "predict-score") as scoring:
        pending: Future | None = None
        for chunk in _prefetched(read_chunks(input_path, chunk_rows)):
            chunk.index = pd.RangeIndex(summary.rows_in, summary.rows_in + len(chunk))
            summary.rows_in += len(chunk)
            ok, bad = check.frame(chunk)
            if pending is not None:
                pending.result()
            pending = scoring.submit(score_and_write, ok, bad)
            pending.add_done_callback(_advance(bar, len(chunk)))
        if pending is not None:
            pending.result()
    scored_out.close(["row", id_column, "prediction", "model_version"])
    rejects_out.close(["row", "reason"])
    if summary.scored + summary.rejected != summary.rows_in:
        raise StageError(f"row accounting broken: {summary.rows_in} in, {summary.scored} "
                         f"scored, {summary.rejected} rejected")
    return summary


def _advance(bar, rows: int):
    """A future's done-callback that moves the progress bar by `rows`."""
    return lambda _future: bar.update(rows)


def _prefetched(chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The chunks of `chunks`, the next one read by a thread of its own while the caller
    works on this one (one chunk ahead at most); its errors are raised here, in order."""
    ahead: queue.Queue = queue.Queue(maxsize=1)
    done = object()

    def read() -> None:
        try:
            for chunk in chunks:
                ahead.put(chunk)
            ahead.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
            ahead.put(exc)

    threading.Thread(target=read, name="predict-read", daemon=True).start()
    while (item := ahead.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def load_batch_bundle(path: str | Path):
    """The bundle as batch scoring runs it (manifest checked): ONNX Runtime on one thread,
    as the chunk being scored already runs beside the next one being checked, and idle
    worker threads spinning would take CPU from that (and from the machine's other work)."""
    from lifecycle.packaging.runtime import load_bundle

    return load_bundle(path, threads=1)


def run(bundle_path: str | Path, input_path: str | Path, output: str | Path,
        rejects: str | Path | None = None, chunk_rows: int = 50_000,
        engine: str = "onnx") -> str:
    """Load the bundle (manifest checked) and score the file; returns the summary line."""
    bundle = load_batch_bundle(bundle_path)
    start = time.perf_counter()
    output = Path(output)
    summary = score_file(bundle, input_path, output, rejects, chunk_rows, engine)
    rejects = Path(rejects) if rejects else output.with_name(
        f"{output.name.removesuffix(output.suffix)}.rejects{output.suffix}")
    rate = summary.rows_in / max(time.perf_counter() - start, 1e-9)
    return summary.line(output, rejects) + f", {rate:,.0f} rows/s scored"
