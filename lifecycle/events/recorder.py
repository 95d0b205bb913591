"""Idempotent writes to the inference registry for event-driven inference.

The rows and tables are the registry's (`lifecycle.serving.registry`); what differs is that a
row whose key is already there is skipped instead of failing: an event delivered twice
(at-least-once delivery, a worker that died after its commit) is recorded once. The key of a
prediction is its request id, which for an event is the event's id.
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

from lifecycle.serving.registry import feedback, make_engine, metadata, predictions

log = logging.getLogger("lifecycle.events")

COLUMNS = tuple(c.name for c in predictions.columns)  # the order of a prediction row tuple


class Recorder:
    """Writes prediction and feedback rows in one transaction per micro-batch, skipping rows
    already recorded. SQLite (WAL) and PostgreSQL."""

    def __init__(self, url: str, durability: str = "normal"):
        self.url = url
        self.engine = make_engine(url, durability)
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            raise ValueError(f"events need a registry on SQLite or PostgreSQL, not {dialect}")
        metadata.create_all(self.engine)
        self._statements = {t.name: _compiled(insert(t).on_conflict_do_nothing(), t,
                                              self.engine.dialect)
                            for t in (predictions, feedback)}
        self._closing = threading.Event()
        self._checkpointer = None
        if dialect == "sqlite":  # make_engine leaves checkpoints to the registry's owner
            self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                                  name="registry-checkpoint", daemon=True)
            self._checkpointer.start()

    def write(self, prediction_rows: list[tuple], feedback_rows: list[dict]) -> list[str]:
        """Commit the rows (skipping repeats): predictions as tuples in `COLUMNS` order,
        feedback as dicts. Returns the reasons feedback rows were refused, in order (None:
        recorded): no prediction with that request id, or another outcome already recorded
        for it."""
        refused: list[str | None] = [None] * len(feedback_rows)
        with self.engine.begin() as connection:
            if prediction_rows:
                sql, order = self._statements[predictions.name]
                if order is None:
                    prediction_rows = [dict(zip(COLUMNS, r, strict=True))
                                       for r in prediction_rows]
                elif tuple(order) != COLUMNS:
                    where = [COLUMNS.index(k) for k in order]
                    prediction_rows = [tuple(r[i] for i in where) for r in prediction_rows]
                connection.exec_driver_sql(sql, prediction_rows)
            if feedback_rows:
                ids = list({r["request_id"] for r in feedback_rows})
                known = {r[0] for r in connection.execute(
                    sa.select(predictions.c.request_id)
                    .where(predictions.c.request_id.in_(ids)))}
                recorded = dict(connection.execute(
                    sa.select(feedback.c.request_id, feedback.c.outcome)
                    .where(feedback.c.request_id.in_(ids))).all())
                keep = []
                for i, row in enumerate(feedback_rows):
                    rid = row["request_id"]
                    if rid not in known:
                        refused[i] = "unknown_request_id"
                    elif recorded.get(rid, row["outcome"]) != row["outcome"]:
                        refused[i] = "feedback_already_recorded"
                    else:  # new, or the same outcome again (a redelivered event)
                        recorded[rid] = row["outcome"]
                        keep.append(row)
                self._insert(connection, feedback, keep)
        return refused

    def _insert(self, connection: sa.Connection, table: sa.Table, rows: list[dict]) -> None:
        if rows:
            sql, order = self._statements[table.name]
            connection.exec_driver_sql(sql, [tuple(r[k] for k in order) for r in rows]
                                       if order else rows)

    def _checkpoint_loop(self, every: float = 1.0) -> None:
        """Move the WAL into the database file about once a second, beside the worker (a
        PASSIVE checkpoint never blocks a writer)."""
        while not self._closing.wait(every):
            self._checkpoint("PASSIVE")
        self._checkpoint("TRUNCATE")

    def _checkpoint(self, mode: str) -> None:
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")
        except sa.exc.SQLAlchemyError as exc:  # a busy database: the next turn will do
            log.warning("registry: WAL checkpoint skipped (%s)", exc)

    def close(self) -> None:
        self._closing.set()
        if self._checkpointer:
            self._checkpointer.join()
        self.engine.dispose()


def _compiled(statement, table: sa.Table, dialect) -> tuple[str, list[str] | None]:
    """(driver SQL, parameter order for positional drivers such as sqlite3, else None)."""
    compiled = statement.compile(dialect=dialect, column_keys=[c.name for c in table.columns])
    return str(compiled), (list(compiled.positiontup) if dialect.positional else None)
