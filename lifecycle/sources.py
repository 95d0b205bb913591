"""Where raw data comes from: SQL (via SQLAlchemy), files (CSV, Parquet, JSON Lines), HTTP JSON,
a Redis stream of events.

Each reader returns the rows exactly as the source holds them; judging them is `validate`'s job.
Text files are read strictly (lifecycle.textfiles): values stay text for the contract to type,
and a line that is not a well-formed row is rejected with its file, line and reason, never
guessed at. Every file of a glob must have the same columns.
"""

from __future__ import annotations

import glob
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import pandas as pd

from lifecycle import textfiles
from lifecycle.errors import StageError, clip, clip_names
from lifecycle.params import FilesSource, HttpSource, SqlSource, StreamSource

REJECTED_COLUMNS = {"file": "string", "line": "int64", "reason": "string", "text": "string"}


@dataclass
class Collected:
    """The rows a source gave, and (text files) the lines rejected and the line counts."""

    frame: pd.DataFrame
    rejected: pd.DataFrame = field(default_factory=lambda: rejected_frame([]))
    lines: Counter = field(default_factory=Counter)   # data_lines = rows + rejected, blank
    events: list[dict] | None = None   # a stream: the events that held no record, with why


def rejected_frame(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(records, columns=list(REJECTED_COLUMNS)).astype(REJECTED_COLUMNS)


def read_source(source: SqlSource | FilesSource | HttpSource | StreamSource) -> Collected:
    """Read the whole source named in params; an empty or unreadable one is a StageError."""
    if source.kind == "files":
        got = collect_files(source)
    else:
        reader = {"sql": read_sql, "http": read_http, "stream": read_stream}[source.kind]
        got = Collected(reader(source))
    if got.frame.empty:
        detail = (f" ({got.lines['rejected']} line(s) rejected, first: "
                  f"{first_rejection(got.rejected)})" if got.lines["rejected"] else "")
        raise StageError(f"source returned no rows: {describe(source)}{detail}")
    return got


def write_snapshot(source, path: str | Path) -> Collected:
    """Read the source named in params into the raw snapshot at `path` (Parquet). A SQLite
    source is streamed (`stream_sqlite`); any other is read whole and made storable
    (`snapshot_frame`). Returns what was rejected; the rows are in the file, not the result."""
    if source.kind == "sql" and stream_sqlite(source, path):
        if not snapshot_summary(path)[0]:
            Path(path).unlink()
            raise StageError(f"source returned no rows: {describe(source)}")
        return Collected(pd.DataFrame())
    from lifecycle.io import write_parquet

    got = read_source(source)
    frame = snapshot_frame(got.frame)
    write_parquet(frame, path)
    events = frame.attrs.get("rejected_events")
    return Collected(pd.DataFrame(), got.rejected, got.lines, events)


def write_training_snapshot(p, source, path: str | Path) -> tuple[Collected, dict | None]:
    """`write_snapshot` of what `collect.train_on` says: the source (original), the registry's
    labelled production answers (lifecycle/feedback/production.py), or both; and what was read
    from the registry (None for the original alone). With production rows the snapshot is no
    longer the source's lines alone: their counts move to the registry record."""
    if p.train_on == "original":
        return write_snapshot(source, path), None
    from lifecycle.contract import load_contract
    from lifecycle.feedback.production import combine, production_frame
    from lifecycle.io import write_parquet

    rows, info = production_frame(p.production, load_contract("contract.yaml"))
    got = read_source(source) if p.train_on == "both" else Collected(rows.iloc[:0])
    frame = snapshot_frame(combine(got.frame if p.train_on == "both" else None, rows))
    if frame.empty:
        raise StageError(f"no labelled production answers in {p.production.export} "
                         f"(collect.production)")
    write_parquet(frame, path)
    if got.lines:
        info["original_lines"] = {k: int(v) for k, v in got.lines.items()}
    return Collected(pd.DataFrame(), got.rejected, Counter(),
                     frame.attrs.get("rejected_events")), info


def first_rejection(rejected: pd.DataFrame) -> str:
    row = rejected.iloc[0]
    return f"{row['file']} line {row['line']}: {row['reason']}"


def check_rejected(got: Collected, max_share: float) -> None:
    """Stop when more than `max_share` of the data lines were rejected."""
    lines = got.lines["data_lines"]
    if lines and got.lines["rejected"] / lines > max_share:
        raise StageError(f"{got.lines['rejected']}/{lines} data lines rejected "
                         f"({got.lines['rejected'] / lines:.4f} > collect.max_rejected_share "
                         f"{max_share}); first: {first_rejection(got.rejected)}")


def describe(source: SqlSource | FilesSource | HttpSource) -> dict:
    """The source as it goes into the manifest: passwords redacted."""
    if source.kind == "sql":
        return {"kind": "sql", "url": _redact(source.url), "query": source.query}
    if source.kind == "files":
        return {"kind": "files", "path": source.path}
    if source.kind == "stream":
        return {"kind": "stream", "url": _redact(source.url), "stream": source.stream,
                "field": source.field, "after": source.after, "until": source.until}
    return {"kind": "http", "url": _redact(source.url)}


def read_sql(source: SqlSource) -> pd.DataFrame:
    import sqlalchemy as sa

    url = _expand_env(source.url)
    sqlite_file = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    if sqlite_file and not Path(sqlite_file).is_file():
        raise StageError(f"SQLite database not found: {sqlite_file}")
    try:
        engine = sa.create_engine(url)
        with engine.connect() as con:
            return pd.read_sql_query(sa.text(source.query), con)
    except sa.exc.SQLAlchemyError as exc:
        raise StageError(f"SQL source failed ({_redact(url)}): {_first_line(exc)}") from exc
    finally:
        if "engine" in locals():
            engine.dispose()


SNAPSHOT_ROW_GROUP = 1 << 17   # rows per Parquet row group of a streamed snapshot
SQLITE_BATCH_ROWS = 1 << 16    # rows per Arrow batch from SQLite (types inferred on the first)
# How the SQLite driver writes a REAL it had to turn into text (a column mixing numbers and
# text): six digits, not the value. Such a column goes through `read_sql`, which keeps them all.
_REAL_AS_TEXT = r"^[-+]?[0-9]\.[0-9]{6}e[-+][0-9]{2,3}$"


class _NotStreamable(Exception):
    """The source's values do not keep one type per column: read it the general way."""


def stream_sqlite(source: SqlSource, path: str | Path,
                  batch_rows: int = SQLITE_BATCH_ROWS) -> bool:
    """A SQLite source read as Arrow record batches (ADBC) and streamed into the Parquet
    snapshot at `path`: no Python object per value, memory bounded by a row group.

    Returns False, writing nothing, when this does not apply: another database, or a column
    whose values are not of one type (SQLite stores 'abc' in an INTEGER column). `read_sql`
    then reads the source, and `snapshot_frame` turns such a column into text."""
    url = _expand_env(source.url)
    if not url.startswith("sqlite:///") or find_spec("adbc_driver_sqlite") is None:
        return False   # (a clone whose venv predates the driver reads the general way)
    database = url.removeprefix("sqlite:///")
    if not Path(database).is_file():
        raise StageError(f"SQLite database not found: {database}")
    import adbc_driver_sqlite.dbapi as adbc
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def check(batch: pa.RecordBatch) -> pa.RecordBatch:
        for column, kind in zip(batch.columns, batch.schema.types, strict=True):
            if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
                raise _NotStreamable
            if pa.types.is_string(kind) and pc.any(
                    pc.match_substring_regex(column, _REAL_AS_TEXT)).as_py():
                raise _NotStreamable
        return batch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with adbc.connect(database) as con, con.cursor() as cursor:
            cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
            cursor.execute(source.query)
            reader = cursor.fetch_record_batch()
            with pq.ParquetWriter(partial, reader.schema, compression="zstd") as writer:
                pending: list = []
                for batch in reader:
                    pending.append(check(batch))
                    if sum(b.num_rows for b in pending) >= SNAPSHOT_ROW_GROUP:
                        writer.write_table(pa.Table.from_batches(pending),
                                           row_group_size=SNAPSHOT_ROW_GROUP)
                        pending = []
                if pending:
                    writer.write_table(pa.Table.from_batches(pending),
                                       row_group_size=SNAPSHOT_ROW_GROUP)
    except _NotStreamable:
        partial.unlink(missing_ok=True)
        return False
    except (adbc.Error, OSError) as exc:   # errors met while streaming arrive as OSError
        partial.unlink(missing_ok=True)
        if "type mismatch" in str(exc).lower():   # a later batch changed a column's type
            return False
        raise StageError(f"SQL source failed ({_redact(url)}): {_first_line(exc)}") from exc
    partial.replace(path)
    return True


def snapshot_summary(path: str | Path) -> tuple[int, dict[str, str]]:
    """Rows and column types (Arrow's names) of a Parquet snapshot, from its footer."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path)
    return meta.metadata.num_rows, {f.name: str(f.type) for f in meta.schema_arrow}


def read_files(source: FilesSource) -> pd.DataFrame:
    """The rows of a file or glob (CSV and JSON Lines values as text), rejected lines aside."""
    return collect_files(source).frame


def collect_files(source: FilesSource) -> Collected:
    """Read every file of the glob; each must have the first file's columns (any order)."""
    paths = sorted(glob.glob(source.path))
    if not paths:
        raise StageError(f"no file matches {source.path}")
    frames, rejected, lines = [], [], Counter()
    for path in map(Path, paths):
        got = _read_file(path, source)
        if frames:
            _same_columns(frames[0], paths[0], got.frame, path)
            got.frame = got.frame[list(frames[0].columns)]
        frames.append(got.frame)
        rejected += got.rejected
        lines += got.lines
    lines["files"] = len(paths)
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return Collected(frame, rejected_frame(rejected), lines)


def _same_columns(first: pd.DataFrame, first_path: str, frame: pd.DataFrame, path: Path) -> None:
    missing = [c for c in first.columns if c not in frame.columns]
    extra = [c for c in frame.columns if c not in first.columns]
    if missing or extra:
        what = "; ".join(part for part in (
            missing and f"column(s) missing: {clip_names(missing)}",
            extra and f"unexpected column(s): {clip_names(extra)}") if part)
        raise StageError(f"{path} does not have the columns of {first_path}: {what} "
                         "(every file of collect.source.path must have the same columns)")


def _read_file(path: Path, source: FilesSource) -> textfiles.TextRead:
    fmt = source.format
    if fmt == "auto":
        fmt = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(
            path.suffix.lower(), "")
        if not fmt:
            raise StageError(f"cannot tell the format of {path}: use .csv, .parquet or .jsonl, "
                             "or set collect.source.format")
    if fmt == "csv":
        return textfiles.read_csv(path, source.encoding, source.delimiter)
    if fmt == "jsonl":
        return textfiles.read_jsonl(path, source.encoding)
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any parser failure is the same user problem
        raise StageError(f"cannot read {path} as parquet: {_first_line(exc)}") from exc
    return textfiles.TextRead(frame, [], Counter(rows=len(frame), data_lines=len(frame)))


def read_http(source: HttpSource) -> pd.DataFrame:
    """Fetch every page of a JSON API: `page` (numbered pages until an empty one) or `next`
    (follow the URL the body names)."""
    import requests

    session = requests.Session()
    url, records, page = source.url, [], 1
    for _ in range(source.max_pages):
        query = ({source.page_param: page, source.page_size_param: source.page_size}
                 if source.pagination == "page" else None)
        try:
            response = session.get(url, params=query, timeout=source.timeout_seconds)
            response.raise_for_status()
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise StageError(f"HTTP source failed at {_redact(url)}: {_first_line(exc)}") from exc
        if (source.records_key or source.pagination == "next") and not isinstance(body, dict):
            raise StageError(f"HTTP source: expected a JSON object from {_redact(url)}, "
                             f"got {type(body).__name__}")
        batch = body.get(source.records_key) if source.records_key else body
        if not isinstance(batch, list):
            raise StageError(f"HTTP source: expected a list of records at "
                             f"'{source.records_key or '(body)'}' in {_redact(url)}")
        records.extend(batch)
        if source.pagination == "none" or (source.pagination == "page" and not batch):
            break
        if source.pagination == "next":
            url = body.get(source.next_key)
            if not url:
                break
        page += 1
    else:
        raise StageError(f"HTTP source: more than max_pages={source.max_pages} pages")
    return pd.DataFrame.from_records(records)


# --- a Redis stream ---------------------------------------------------------------------------
def pin(source, previous_manifest: str | Path | None = None):
    """The source with nothing left to the moment: for a stream, the exact range of event ids
    to read (`after: last` -> after the range `previous_manifest` recorded for this stream, or
    from its start; `until: +` -> its newest event now). Other kinds are returned as they are.

    The pinned range goes into the manifest; setting it in params reads the same events again
    (byte-identical snapshot and manifest, as long as the stream still holds them)."""
    if source.kind != "stream":
        return source
    after, until = source.after, source.until
    if after == "last":
        after = "0-0"
        previous = Path(previous_manifest) if previous_manifest else None
        if previous and previous.is_file():
            import json

            recorded = json.loads(previous.read_text()).get("source", {})
            if recorded.get("kind") == "stream" and recorded.get("stream") == source.stream:
                after = recorded["until"]
    if until == "+":
        newest = _stream_client(source).xrevrange(source.stream, count=1)
        until = newest[0][0].decode() if newest else after
    return source.model_copy(update={"after": _full_id(after), "until": _full_id(until)})


def read_stream(source: StreamSource) -> pd.DataFrame:
    """The records of the events in (after, until] of a pinned stream source, in event order.

    An event whose `field` is missing, larger than max_event_bytes, not JSON or not a JSON
    object is no record: it is left out of the frame and listed with its reason in
    `frame.attrs["rejected_events"]` (the manifest keeps them)."""
    import orjson

    if source.after == "last" or source.until == "+":
        source = pin(source)
    client = _stream_client(source)
    field, limit = source.field.encode(), source.max_event_bytes
    records, rejected, start, seen = [], [], f"({source.after}", 0
    while True:
        events = client.xrange(source.stream, min=start, max=source.until, count=10_000)
        if not events:
            break
        seen += len(events)
        if seen > source.max_events:
            raise StageError(f"stream {source.stream}: more than collect.source.max_events="
                             f"{source.max_events} events after {source.after}; set "
                             "collect.source.until to collect the range in parts")
        for event_id, fields in events:
            data, reason = fields.get(field), None
            if data is None:
                reason = f"missing_field:{source.field}"
            elif len(data) > limit:
                reason = f"oversize: {len(data)} bytes > {limit}"
            else:
                try:
                    record = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    reason = f"not_json: {exc}"
                else:
                    if isinstance(record, dict):
                        records.append(record)
                    else:
                        reason = f"not_an_object: a JSON {type(record).__name__}"
            if reason:
                rejected.append({"event_id": event_id.decode(), "reason": reason,
                                 "data": data[:1000].decode("utf-8", "replace") if data else None})
        start = f"({events[-1][0].decode()}"
    client.close()
    if not seen:
        raise StageError(f"stream {source.stream}: no events in ({source.after}, "
                         f"{source.until}] (collect.source.after / until)")
    frame = pd.DataFrame.from_records(records)
    frame.attrs["rejected_events"] = rejected
    return frame


def _stream_client(source: StreamSource):
    from lifecycle.extras import require

    require("events", "a stream source")
    import redis

    try:
        client = redis.Redis.from_url(_expand_env(source.url), socket_timeout=30)
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise StageError(f"stream source failed ({_redact(source.url)}): "
                         f"{_first_line(exc)}") from exc
    return client


def _full_id(event_id: str) -> str:
    """"5" -> "5-0": one spelling per id, so that a manifest names a range one way."""
    return event_id if "-" in event_id else f"{event_id}-0"


def _expand_env(text: str) -> str:
    """Fill in ${VAR} / $VAR from the environment (secrets stay out of params.yaml); an unset
    one is an error rather than a literal '${VAR}' sent to the server."""
    unset = [a or b for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", text)
             if (a or b) not in os.environ]
    if unset:
        raise StageError(f"environment variable(s) not set: {', '.join(unset)} "
                         "(named in collect.source.url)")
    return os.path.expandvars(text)


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _first_line(exc: Exception) -> str:
    return clip((str(exc).strip().splitlines() or [type(exc).__name__])[0], 200)


def snapshot_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Make a source frame storable as Parquet without judging it: a column of mixed types
    (SQLite stores 'abc' in an INTEGER column), of nested values, or of numbers Parquet cannot
    hold (a JSON integer beyond 64 bits) becomes text; `validate` flags the bad cells."""
    import pyarrow as pa

    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if values.dtype == object:
            kinds = {type(v) for v in values.dropna()}
            storable = len(kinds) <= 1 and not (kinds and kinds <= {dict, list})
            if storable and kinds:
                try:
                    pa.array(values, from_pandas=True)
                except (pa.ArrowException, OverflowError, ValueError, TypeError):
                    storable = False
            if not storable:
                out[column] = values.map(lambda v: v if v is None or v != v else str(v))
                out[column] = out[column].astype("string")
    return out


def manifest(source, got: Collected, snapshot: str | Path, snapshot_sha256: str) -> dict:
    """What was collected: source, rows, what was rejected by reason (text files: data lines
    read = rows + rejected; a stream: the events that held no record), the snapshot's columns
    with their (Arrow) types, and its content hash."""
    rows, columns = snapshot_summary(snapshot)
    lines = ({k: int(got.lines[k]) for k in ("files", "data_lines", "rows", "rejected", "blank")}
             if "data_lines" in got.lines else {})
    if "data_lines" in lines and lines["data_lines"] != rows + len(got.rejected):
        raise AssertionError(f"line accounting broken: {lines} vs {rows} rows")
    events = got.events or []
    reasons = Counter(r.split(":")[0] for r in [*got.rejected["reason"],
                                                 *(e["reason"] for e in events)])
    out = {
        "source": describe(source),
        "rows": rows,
        "rows_rejected": len(got.rejected) + len(events),
        "rejected_reasons": dict(sorted(reasons.items())),
        **({"lines": lines} if lines else {}),
        "columns": columns,
        "sha256": snapshot_sha256,
    }
    if got.events is not None:
        out["rejected_events"] = got.events
    return out
