"""The inference registry: every prediction and every feedback, durably, in SQL.

The default store is an embedded SQLite file in WAL mode; any SQLAlchemy URL (PostgreSQL:
`postgresql+psycopg://...`) selects another. A request is answered only after its rows are
committed, so an answered prediction survives `kill -9` of the server. One writer thread does
group commit: it takes every row waiting in its queue, writes them in one transaction, then
releases all their requests at once; concurrent requests share one commit instead of queuing
for one each.

Durability on SQLite: `normal` (synchronous=NORMAL) survives a crash of the server process,
which is what `kill -9` tests; `full` (synchronous=FULL) also survives power loss, at one
fsync per commit (about 1.5 ms on this machine's disk).

Command line: `python -m lifecycle.serving export --registry URL --output FILE.parquet`
(predictions joined with their feedback, for monitoring and retraining; `make registry-export`)
and `python -m lifecycle.serving outcomes --registry URL` (outcomes per variant, for A/B).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

log = logging.getLogger("lifecycle.serving")

DEFAULT_URL = "sqlite:///data/registry/inference.sqlite"

metadata = sa.MetaData()

predictions = sa.Table(
    "predictions", metadata,
    sa.Column("request_id", sa.String(36), primary_key=True),
    # served: the answer the client got; shadow: a challenger's answer that was only logged
    sa.Column("role", sa.String(8), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),  # seconds since the epoch, UTC
    sa.Column("deployment", sa.String(100), nullable=False),
    sa.Column("strategy", sa.String(16), nullable=False),
    sa.Column("variant", sa.String(100), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("engine", sa.String(16), nullable=False),
    sa.Column("routing_key", sa.String(64)),  # the masked customer id that chose the variant
    sa.Column("inputs", sa.Text, nullable=False),  # JSON, personal data masked
    sa.Column("prediction", sa.Text),
    sa.Column("probability", sa.Float),  # of the positive class (binary classification)
    sa.Column("latency_ms", sa.Float, nullable=False),  # receipt to answer ready, before commit
    # reason codes, when the request asked for them (JSON: Bundle.reasons); added after the
    # first registries were made: `ensure_schema` adds it to an older table
    sa.Column("reasons", sa.Text),
)

COLUMNS = tuple(c.name for c in predictions.columns)  # the order of a prediction row tuple

feedback = sa.Table(
    "feedback", metadata,
    sa.Column("request_id", sa.String(36), primary_key=True),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
)

_STOP = object()


class RegistryError(Exception):
    """The registry could not store what it was given."""


@dataclass
class _Pending:
    """Rows waiting for a commit, and how to tell their writer it happened."""

    predictions: list[dict] = field(default_factory=list)
    feedback: list[dict] = field(default_factory=list)
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future | Future | None = None


def ensure_schema(engine: sa.Engine) -> None:
    """Create the tables, or bring an older registry's up to date: columns added since are
    nullable, added with ALTER TABLE ... ADD COLUMN (no rewrite of the rows, on SQLite and
    PostgreSQL alike); nothing is ever dropped or changed."""
    metadata.create_all(engine)
    with engine.begin() as connection:
        inspector = sa.inspect(connection)
        for table in (predictions, feedback):
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have:
                    if not column.nullable:
                        raise RegistryError(f"{table.name}.{column.name}: the registry "
                                            "lacks a required column")
                    kind = column.type.compile(dialect=engine.dialect)
                    log.warning("registry: adding the column %s.%s", table.name, column.name)
                    connection.exec_driver_sql(
                        f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")


def make_engine(url: str, durability: str = "normal") -> sa.Engine:
    """An engine for `url`; SQLite files get WAL, a busy timeout and the chosen durability."""
    url = os.path.expandvars(url)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        synchronous = {"normal": "NORMAL", "full": "FULL"}[durability]

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA busy_timeout=10000")
            # Checkpoints run in the registry's own thread, not inside a request's commit.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.close()

    return engine


class Registry:
    """The store plus its group-commit writer thread. Use as a context manager or call
    `start()` / `close()`."""

    def __init__(self, url: str = DEFAULT_URL, durability: str = "normal",
                 max_batch: int = 2048):
        self.url = url
        self.engine = make_engine(url, durability)
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._closing = threading.Event()
        self.commits = 0
        self.rows_written = 0
        # INSERTs compiled once for this database: the writer hands rows straight to the
        # driver (SQLAlchemy's per-call statement handling would double a commit's cost)
        self._statements = {t.name: _compiled_insert(t, self.engine.dialect)
                            for t in (predictions, feedback)}
        # the same, skipping a row whose key is already there (`write(skip_repeats=True)`)
        self._repeat_safe = {t.name: _compiled_insert(t, self.engine.dialect, skip=True)
                             for t in (predictions, feedback)}

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> Registry:
        ensure_schema(self.engine)
        self._thread = threading.Thread(target=self._write_loop, name="registry-writer",
                                        daemon=True)
        self._thread.start()
        if self.engine.dialect.name == "sqlite":
            self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                                  name="registry-checkpoint", daemon=True)
            self._checkpointer.start()
        return self

    def close(self) -> None:
        """Write what is queued, stop the writer, release connections."""
        if self._thread and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._closing.set()
        if self._checkpointer:
            self._checkpointer.join()
        self.engine.dispose()

    def _checkpoint_loop(self, every: float = 1.0) -> None:
        """Move the WAL into the database file about once a second, beside the writer (a
        PASSIVE checkpoint never blocks it), so that no request's commit pays for one."""
        written = -1
        while not self._closing.wait(every):
            if self.rows_written != written:
                written = self.rows_written
                self._checkpoint("PASSIVE")
        self._checkpoint("TRUNCATE")

    def _checkpoint(self, mode: str) -> None:
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")
        except sa.exc.SQLAlchemyError as exc:  # a busy database: the next turn will do
            log.warning("registry: WAL checkpoint skipped (%s)", _first_line(exc))

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- writing ----------------------------------------------------------------------------
    async def record(self, prediction_rows: list[dict] = (),
                     feedback_rows: list[dict] = ()) -> None:
        """Queue rows and return once they are committed (raises RegistryError if not)."""
        loop = asyncio.get_running_loop()
        pending = _Pending(list(prediction_rows), list(feedback_rows), loop, loop.create_future())
        self._queue.put(pending)
        await pending.future

    def record_sync(self, prediction_rows: Iterable[dict] = (),
                    feedback_rows: Iterable[dict] = ()) -> None:
        """The blocking twin of `record`, for code outside an event loop."""
        pending = _Pending(list(prediction_rows), list(feedback_rows), None, Future())
        self._queue.put(pending)
        pending.future.result()

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is _STOP for item in batch):
                stop = True
                batch = [item for item in batch if item is not _STOP]
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Pending]) -> None:
        """One transaction for the whole batch; if it fails, retry each request alone so
        that one bad request (a repeated feedback) does not fail its neighbours. A pooled
        connection per batch: a database that dropped it is reconnected on the next one."""
        try:
            with self.engine.connect() as connection:
                self._insert(connection, batch)
            outcomes = [None] * len(batch)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the waiting requests hear it
            log.warning("registry: a commit of %d requests failed (%s); retrying one by one",
                        len(batch), _first_line(exc))
            outcomes = []
            for item in batch:
                try:
                    with self.engine.connect() as connection:
                        self._insert(connection, [item])
                    outcomes.append(None)
                except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                    outcomes.append(RegistryError(_first_line(exc)))
        self._release(batch, outcomes)

    def _insert(self, connection: sa.Connection, batch: list[_Pending]) -> None:
        rows = [r for item in batch for r in item.predictions]
        notes = [r for item in batch for r in item.feedback]
        with connection.begin():
            self._insert_rows(connection, predictions, rows)
            self._insert_rows(connection, feedback, notes)
        self.commits += 1
        self.rows_written += len(rows) + len(notes)

    def _insert_rows(self, connection: sa.Connection, table: sa.Table, rows: list,
                     skip_repeats: bool = False) -> None:
        """One executemany; rows are dicts (a nullable column may be left out), or tuples
        in the table's column order."""
        if not rows:
            return
        sql, order = (self._repeat_safe if skip_repeats else self._statements)[table.name]
        if order is None:  # a driver with named parameters (psycopg): dicts
            names = [c.name for c in table.columns]
            rows = [{k: r.get(k) for k in names} if isinstance(r, dict)
                    else dict(zip(names, r, strict=True)) for r in rows]
        elif isinstance(rows[0], dict):
            rows = [tuple(r.get(k) for k in order) for r in rows]
        elif tuple(order) != tuple(c.name for c in table.columns):
            where = [table.columns.keys().index(k) for k in order]
            rows = [tuple(r[i] for i in where) for r in rows]
        connection.exec_driver_sql(sql, rows)

    def write(self, prediction_rows: list = (), feedback_rows: list[dict] = (), *,
              skip_repeats: bool = False) -> list[str | None]:
        """Commit rows now, in the caller's thread, in one transaction (a worker that orders
        its own commits: the events worker). Predictions are dicts or tuples in `COLUMNS`
        order. `skip_repeats`: a prediction whose (request id, role) is already recorded is
        skipped, not an error, so an event delivered twice is recorded once.

        Feedback is checked as /feedback checks it; returns, per feedback row, why it was
        refused (None: recorded): `unknown_request_id` (no such prediction), or
        `feedback_already_recorded` (another outcome is; the same outcome again is a repeat).
        """
        if skip_repeats and self._repeat_safe[predictions.name] is None:
            raise RegistryError(f"skipping repeated rows needs SQLite or PostgreSQL, not "
                                f"{self.engine.dialect.name}")
        prediction_rows, feedback_rows = list(prediction_rows), list(feedback_rows)
        refused: list[str | None] = [None] * len(feedback_rows)
        with self.engine.begin() as connection:
            self._insert_rows(connection, predictions, prediction_rows, skip_repeats)
            keep = []
            if feedback_rows:
                ids = list({r["request_id"] for r in feedback_rows})
                known = {r[0] for r in connection.execute(
                    sa.select(predictions.c.request_id)
                    .where(predictions.c.request_id.in_(ids)))}
                recorded = dict(connection.execute(
                    sa.select(feedback.c.request_id, feedback.c.outcome)
                    .where(feedback.c.request_id.in_(ids))).all())
                for i, row in enumerate(feedback_rows):
                    rid = row["request_id"]
                    if rid not in known:
                        refused[i] = "unknown_request_id"
                    elif recorded.get(rid, row["outcome"]) != row["outcome"]:
                        refused[i] = "feedback_already_recorded"
                    elif rid not in recorded:
                        recorded[rid] = row["outcome"]
                        keep.append(row)
                self._insert_rows(connection, feedback, keep)
        self.commits += 1
        self.rows_written += len(prediction_rows) + len(keep)
        return refused

    @staticmethod
    def _release(batch: list[_Pending], outcomes: list[Exception | None]) -> None:
        """Wake every waiting request; one thread-safe call per event loop, not per request."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.loop is None:
                if outcome is None:
                    item.future.set_result(None)
                else:
                    item.future.set_exception(outcome)
            else:
                by_loop.setdefault(item.loop, []).append((item.future, outcome))
        for loop, waiting in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, waiting)
            except RuntimeError:  # the loop closed while we wrote: nobody is waiting any more
                pass

    # --- reading ----------------------------------------------------------------------------
    def find(self, request_id: str) -> dict | None:
        """The served prediction with this request id, or None."""
        query = sa.select(predictions).where(predictions.c.request_id == request_id,
                                             predictions.c.role == "served")
        with self.engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return {str(k): v for k, v in row.items()} if row else None

    def count(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            n_pred = connection.execute(sa.select(sa.func.count()).select_from(predictions))
            n_pred = n_pred.scalar_one()
            n_fb = connection.execute(sa.select(sa.func.count()).select_from(feedback))
            return {"predictions": n_pred, "feedback": n_fb.scalar_one()}


def _compiled_insert(table: sa.Table, dialect, skip: bool = False
                     ) -> tuple[str, list[str] | None]:
    """(driver SQL, parameter order for positional drivers such as sqlite3, else None);
    `skip`: ON CONFLICT DO NOTHING (SQLite, PostgreSQL), None where the database has none."""
    statement = table.insert()
    if skip:
        if dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            return None
        statement = insert(table).on_conflict_do_nothing()
    compiled = statement.compile(dialect=dialect, column_keys=[c.name for c in table.columns])
    order = list(compiled.positiontup) if dialect.positional else None
    return str(compiled), order


def _settle(waiting: list[tuple[asyncio.Future, Exception | None]]) -> None:
    for future, outcome in waiting:
        if future.done():  # the request was cancelled (client went away)
            continue
        if outcome is None:
            future.set_result(None)
        else:
            future.set_exception(outcome)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --- export and outcomes -------------------------------------------------------------------
def joined_query() -> sa.Select:
    """Predictions with their feedback (outcome null where none came yet)."""
    return (sa.select(predictions, feedback.c.outcome, feedback.c.received_at)
            .select_from(predictions.outerjoin(
                feedback, predictions.c.request_id == feedback.c.request_id))
            .order_by(predictions.c.created_at, predictions.c.request_id, predictions.c.role))


def export_parquet(url: str, output: str | Path, chunk_rows: int = 50_000) -> int:
    """Write predictions joined with feedback to Parquet, in chunks (bounded memory).

    Inputs are kept as their JSON text (`inputs`) and also spread into `input.<field>`
    columns; times become UTC timestamps. Returns the number of rows written.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    ensure_schema(engine)
    writer, schema, total = None, None, 0
    try:
        with engine.connect() as connection:
            for chunk in pd.read_sql_query(joined_query(), connection, chunksize=chunk_rows):
                table = pa.Table.from_pandas(_flatten(chunk), preserve_index=False)
                if writer is None:
                    schema = pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type)
                                        else f for f in table.schema])
                    writer = pq.ParquetWriter(output, schema, compression="zstd")
                writer.write_table(table.select(schema.names).cast(schema))
                total += len(chunk)
        if writer is None:  # an empty registry still gives a readable file with the columns
            names = [c.name for c in joined_query().selected_columns]
            empty = _flatten(pd.DataFrame(columns=names))
            pq.write_table(pa.Table.from_pandas(empty, preserve_index=False), output)
    finally:
        if writer is not None:
            writer.close()
        engine.dispose()
    return total


def _flatten(chunk):
    import json

    import pandas as pd

    out = chunk.copy()
    for column in ("created_at", "received_at"):
        out[column] = pd.to_datetime(out[column].astype("float64"), unit="s", utc=True)
    inputs = pd.DataFrame.from_records([json.loads(text) for text in out["inputs"]],
                                       index=out.index)
    for name in inputs.columns:
        values = inputs[name]
        numeric = pd.to_numeric(values, errors="coerce")
        same = numeric.notna() == values.notna()
        out[f"input.{name}"] = numeric.astype("float64") if same.all() and len(values) else (
            values.astype("string"))
    return out


def outcomes_by_variant(url: str) -> list[dict]:
    """Per deployment and served variant: predictions, feedback received, and on the rows
    with feedback the accuracy and the observed vs predicted positive rate."""
    p, f = predictions.c, feedback.c
    hit = sa.case((f.outcome.is_(None), None), (f.outcome == p.prediction, 1.0), else_=0.0)
    query = (sa.select(p.deployment, p.variant, p.model_version,
                       sa.func.count().label("predictions"),
                       sa.func.count(f.outcome).label("with_feedback"),
                       sa.func.avg(hit).label("accuracy"),
                       sa.func.avg(p.probability).label("mean_probability"))
             .select_from(predictions.outerjoin(feedback, p.request_id == f.request_id))
             .where(p.role == "served")
             .group_by(p.deployment, p.variant, p.model_version)
             .order_by(p.deployment, p.variant))
    engine = make_engine(url)
    ensure_schema(engine)
    try:
        with engine.connect() as connection:
            return [{str(k): v for k, v in r.items()}
                    for r in connection.execute(query).mappings()]
    finally:
        engine.dispose()
