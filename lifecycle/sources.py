"""Where raw data comes from: SQL (via SQLAlchemy), files (CSV, Parquet, JSON Lines), HTTP JSON.

Each reader returns a DataFrame exactly as the source holds it; judging it is `validate`'s job.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import pandas as pd

from lifecycle.errors import StageError
from lifecycle.params import FilesSource, HttpSource, SqlSource


def read_source(source: SqlSource | FilesSource | HttpSource) -> pd.DataFrame:
    """Read the whole source named in params; an empty or unreadable one is a StageError."""
    reader = {"sql": read_sql, "files": read_files, "http": read_http}[source.kind]
    frame = reader(source)
    if frame.empty:
        raise StageError(f"source returned no rows: {describe(source)}")
    return frame


def describe(source: SqlSource | FilesSource | HttpSource) -> dict:
    """The source as it goes into the manifest: passwords redacted."""
    if source.kind == "sql":
        return {"kind": "sql", "url": _redact(source.url), "query": source.query}
    if source.kind == "files":
        return {"kind": "files", "path": source.path}
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


def read_files(source: FilesSource) -> pd.DataFrame:
    paths = sorted(glob.glob(source.path))
    if not paths:
        raise StageError(f"no file matches {source.path}")
    frames = [_read_file(Path(p), source.format) for p in paths]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _read_file(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "auto":
        fmt = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(
            path.suffix.lower(), "")
        if not fmt:
            raise StageError(f"cannot tell the format of {path}: use .csv, .parquet or .jsonl, "
                             "or set collect.source.format")
    try:
        if fmt == "csv":
            return pd.read_csv(path)
        if fmt == "parquet":
            return pd.read_parquet(path)
        return pd.read_json(path, lines=True, dtype=False)
    except Exception as exc:  # noqa: BLE001 - any parser failure is the same user problem
        raise StageError(f"cannot read {path} as {fmt}: {_first_line(exc)}") from exc


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
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def snapshot_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Make a source frame storable as Parquet without judging it: a column of mixed types
    (SQLite stores 'abc' in an INTEGER column) becomes text; `validate` flags the bad cells."""
    out = frame.copy()
    for column in out.columns:
        values = out[column]
        if values.dtype == object:
            kinds = {type(v) for v in values.dropna()}
            if len(kinds) > 1 or (kinds and kinds <= {dict, list}):
                out[column] = values.map(lambda v: v if v is None or v != v else str(v))
                out[column] = out[column].astype("string")
    return out


def manifest(source, frame: pd.DataFrame, snapshot_sha256: str) -> dict:
    """What was collected: source, rows, columns with types, and the snapshot's content hash."""
    return {
        "source": describe(source),
        "rows": len(frame),
        "columns": {name: str(dtype) for name, dtype in frame.dtypes.items()},
        "sha256": snapshot_sha256,
    }
