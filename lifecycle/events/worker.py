"""Event-driven inference: a worker in a consumer group turns request events into answers.

For each micro-batch of events (up to `batch` at a time):

1. each request event's `data` field is read as one JSON record, as one record of a /predict
   body: bounded in size, an object, no column the contract does not declare;
2. the records are checked against the bundle's contract and scored, the whole batch as
   columns (`columns.ColumnPath`: the bundle's own checks and ONNX feed, as batch scoring
   runs them) or, when a batch holds what only the record path can judge, record by record
   (`PredictionService.score_now`: the API's core); both give the same verdicts and answers;
3. the predictions, and the outcomes read from the feedback stream, are committed to the
   inference registry in one transaction, keyed by event id, so an event delivered twice is
   recorded once;
4. THEN the answers are published to the answers stream and the bad events, each with its
   reason, to the dead-letter stream;
5. THEN every event of the batch is acknowledged.

A read takes what is there, up to `batch` (it waits up to `block_ms` only when the stream is
empty), so batches grow with the load and a lone event is not held back. While a batch is
committed, published and acknowledged (by one thread, batches in order), the next one is read
and scored.

A crash anywhere leaves the batch pending; another worker (or this one, restarted) claims it
once it has been idle `claim_idle_ms`, and redoes it: the registry keeps one row per event, and
an answer may be published twice (at-least-once: a reader keys answers by request id).

Events (field `data`, JSON): a request is one record, e.g. {"tenure": 12, ...}; its answer is
{"request_id": <the request's event id>, "prediction", "probability", "model_version",
"variant"}; an outcome is {"request_id": ..., "outcome": "Yes"}; a dead letter is
{"stream", "event_id", "reason", "data": the event's data (first 1,000 characters)}.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import orjson

from lifecycle.contract import mask
from lifecycle.events.broker import Broker, Event
from lifecycle.events.columns import ColumnPath
from lifecycle.serving.core import PredictionService, Variant
from lifecycle.serving.deploy import Deployment, VariantSpec
from lifecycle.serving.registry import COLUMNS

log = logging.getLogger("lifecycle.events")

DATA = b"data"
MAX_EVENT_BYTES = 16_384   # one record of this signature is ~600 bytes
DEAD_LETTER_DATA_CHARS = 1000


@dataclass
class Streams:
    """The stream names of one deployment."""

    requests: str = "lifecycle:requests"
    answers: str = "lifecycle:answers"
    dead_letter: str = "lifecycle:dead-letter"
    feedback: str = "lifecycle:feedback"


@dataclass
class Progress:
    events: int = 0
    answered: int = 0
    dead_letters: int = 0
    feedback: int = 0
    claimed: int = 0
    batches: int = 0
    fast_batches: int = 0  # batches the column path took (the rest went record by record)
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class _Batch:
    """A micro-batch between scoring and its commit."""

    events: list[Event]
    received: float  # perf_counter when read
    rows: list[tuple] = field(default_factory=list)
    answers: list[bytes] = field(default_factory=list)
    dead: list[bytes] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    note_events: list[tuple] = field(default_factory=list)
    fast: bool = False


def default_consumer() -> str:
    """A consumer name unique to this process: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    """Reads, checks, scores, records, answers and acknowledges events (module docstring).

    `scorer` is a loaded bundle (`lifecycle.serving.scoring.Scorer`), `registry` a started
    `lifecycle.serving.registry.Registry`, `broker` any `Broker`."""

    def __init__(self, broker: Broker, scorer, registry, streams: Streams, *,
                 batch: int = 1000, block_ms: int = 50, claim_idle_ms: int = 30_000,
                 max_event_bytes: int = MAX_EVENT_BYTES, deployment: str = "events",
                 log_every: float = 10.0, fast: bool = True, overlap: bool = True,
                 metrics=None):
        self.broker, self.scorer, self.registry, self.streams = broker, scorer, registry, streams
        self.batch, self.block_ms = batch, block_ms
        self.claim_idle_ms, self.max_event_bytes = claim_idle_ms, max_event_bytes
        self.deployment, self.log_every = deployment, log_every
        self.metrics = metrics  # a metrics.WorkerMetrics, or None
        contract = scorer.contract
        # the API's serving core, over this one bundle: its checks, scoring and masking
        self.service = PredictionService(
            Deployment(name=deployment, variants={"main": VariantSpec(bundle=str(scorer.path))}),
            {"main": Variant("main", scorer, str(scorer.path))}, registry)
        self.id_column = self.service.id_column
        # personal data and metadata are carried, never features, and kept only masked
        self.personal = self.service.masked_columns
        # a record may carry any column the contract declares (the API's rule); the others
        # are refused, or dropped when the contract says `extra_columns: ignore`
        self.declared = set(contract.columns) | {f["name"] for f in _fields(scorer.signature)}
        self.drop_undeclared = contract.extra_columns == "ignore"
        labels = scorer.outcome_values()
        self.outcomes = set(labels) if labels is not None else None
        self.progress = Progress()
        self.columns = ColumnPath(scorer) if fast and scorer.engine == "onnx" else None
        self._fast = False
        # overlap: a batch is checked and scored while the one before is being committed,
        # published and acknowledged (in order, by one thread: the guarantees hold per batch)
        self._committer = ThreadPoolExecutor(1, "events-commit") if overlap else None
        self._pending: Future | None = None
        self._lock = threading.Lock()
        self._last_claim = 0.0
        self._last_log = time.monotonic()
        self._logged = Progress()

    # --- the loop -------------------------------------------------------------------------
    def run(self, stop: Callable[[], bool] = lambda: False) -> Progress:
        """Work until `stop()` is true (checked between micro-batches)."""
        try:
            while not stop():
                self.step()
        finally:
            self.flush()
        self.report()
        return self.progress

    def step(self) -> int:
        """One micro-batch: claim what a dead consumer left (every claim_idle_ms / 2), read
        new events, handle them. Returns how many events it read."""
        events: list[Event] = []
        now = time.monotonic()
        if (now - self._last_claim) * 1000 >= self.claim_idle_ms / 2:
            self._last_claim = now
            events = self.broker.claim(self.claim_idle_ms, self.batch)
            self.progress.claimed += len(events)
            if self.metrics and events:
                self.metrics.claimed.inc(len(events))
        if len(events) < self.batch:
            events += self.broker.read(self.batch - len(events), self.block_ms if not events
                                       else 0)
        if events:
            batch = self._prepare(events)
            self.flush()  # the batch before is committed, published and acknowledged
            if self._committer:
                self._pending = self._committer.submit(self._commit, batch)
            else:
                self._commit(batch)
        else:
            self.flush()
        if time.monotonic() - self._last_log >= self.log_every:
            self.report()
        return len(events)

    def flush(self) -> None:
        """Wait for the batch being committed (its error, if any, is raised here)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        """Commit what is in flight and stop the committing thread."""
        self.flush()
        if self._committer:
            self._committer.shutdown()

    def handle(self, events: list[Event]) -> None:
        """Steps 1-5 of the module docstring for these events, now."""
        self.flush()
        self._commit(self._prepare(events))

    def _prepare(self, events: list[Event]) -> _Batch:
        """Steps 1-2: read, check and score; what step 3-5 need."""
        received = time.perf_counter()
        batch = _Batch(events, received)
        dead = batch.dead
        payloads, request_ids = [], []
        for stream, event_id, data in events:
            if stream == self.streams.feedback:
                note, reason = self._outcome(data)
                if reason:
                    dead.append(self._dead(stream, event_id, reason, data))
                else:
                    batch.notes.append(note)
                    batch.note_events.append((stream, event_id, data))
            elif reason := self._unreadable(data):
                dead.append(self._dead(stream, event_id, reason, data))
            else:
                payloads.append(data)
                request_ids.append(event_id)
        batch.rows, batch.answers = self._score(payloads, request_ids, received, dead)
        batch.fast = self._fast
        return batch

    def _commit(self, batch: _Batch) -> None:
        """Steps 3-5: record, THEN publish, THEN acknowledge."""
        refused = self.registry.write(batch.rows, batch.notes, skip_repeats=True)
        for (stream, event_id, data), reason in zip(batch.note_events, refused, strict=True):
            if reason:
                batch.dead.append(self._dead(stream, event_id, reason, data))
        self.broker.publish({self.streams.answers: batch.answers,
                             self.streams.dead_letter: batch.dead})
        self.broker.ack([(stream, event_id) for stream, event_id, _ in batch.events])

        p = self.progress
        p.events += len(batch.events)
        p.answered += len(batch.answers)
        p.dead_letters += len(batch.dead)
        p.feedback += len(batch.notes) - sum(r is not None for r in refused)
        p.batches += 1
        p.fast_batches += batch.fast
        if self.metrics:
            self.metrics.batch(len(batch.answers), len(batch.dead),
                               len(batch.notes) - sum(r is not None for r in refused),
                               batch.fast, time.perf_counter() - batch.received)

    # --- the parts --------------------------------------------------------------------------
    def _score(self, payloads: list[bytes], request_ids: list[str], received: float,
               dead: list[bytes]) -> tuple[list[dict], list[bytes]]:
        """(registry rows, answer payloads) of the records that meet the contract; the
        others join `dead` with their reasons. A batch goes through the column path when it
        can (`columns.ColumnPath`), else record by record (the API's path)."""
        self._fast = False
        if not payloads:
            return [], []
        fast = self.columns.run(payloads) if self.columns else None
        if fast is None:
            return self._score_records(payloads, request_ids, received, dead)
        self._fast = True
        columns, ok, reasons, results = fast
        for i, reason in reasons.items():
            dead.append(self._dead(self.streams.requests, request_ids[i], reason, payloads[i]))
        kept = np.flatnonzero(ok)
        ids = [request_ids[i] for i in kept] if reasons else request_ids
        values = {}
        chosen = kept if reasons else slice(None)
        for f in self.columns.fields:  # plain JSON values again, as the record path holds
            null, column = columns[f.name]
            null, column = null[chosen], column[chosen]
            if f.type in ("int", "float"):
                column = (np.where(null, 0, column).astype(np.int64) if f.type == "int"
                          else column).astype(object)
                column[null] = None
            column = column.tolist()
            values[f.name] = mask(column) if f.name in self.personal else column
        names = list(values)
        inputs = [orjson.dumps(dict(zip(names, row, strict=True))).decode()
                  for row in zip(*values.values(), strict=True)]
        routing = (values[self.id_column] if self.id_column in self.personal
                   else mask(values[self.id_column])) if self.id_column in values \
            else [None] * len(ids)
        predictions = results["prediction"].tolist() if len(ids) else []
        probabilities = (results["probability"].tolist() if "probability" in results
                         else [None] * len(ids))
        return self._rows(ids, inputs, routing, predictions, probabilities, "onnx", received)

    def _score_records(self, payloads: list[bytes], request_ids: list[str], received: float,
                       dead: list[bytes]) -> tuple[list[dict], list[bytes]]:
        """The record path: each payload parsed and checked on its own, as /predict does."""
        records, ids, raw = [], [], []
        for event_id, data in zip(request_ids, payloads, strict=True):
            record, reason = self._record(data)
            if reason:
                dead.append(self._dead(self.streams.requests, event_id, reason, data))
            else:
                records.append(record)
                ids.append(event_id)
                raw.append(data)
        if not records:
            return [], []
        ok, reasons, results, engine = self.service.score_now(records)
        for i, reason in reasons.items():
            dead.append(self._dead(self.streams.requests, ids[i], reason, raw[i]))
        if reasons:
            ids = [r for i, r in enumerate(ids) if i not in reasons]
        routing = [mask([r[self.id_column]])[0] if r.get(self.id_column) is not None else None
                   for r in ok]
        return self._rows(ids, [self.service.masked(r) for r in ok], routing,
                          [r["prediction"] for r in results],
                          [r.get("probability") for r in results], engine, received)

    def _rows(self, ids, inputs, routing, predictions, probabilities, engine: str,
              received: float) -> tuple[list[tuple], list[bytes]]:
        """(registry rows in `registry.COLUMNS` order, answer payloads)."""
        latency_ms = (time.perf_counter() - received) * 1000
        now, version, deployment = time.time(), self.scorer.version, self.deployment
        values = {"request_id": ids, "role": "served", "created_at": now,
                  "deployment": deployment, "strategy": "single", "variant": "main",
                  "model_version": version, "engine": engine, "routing_key": routing,
                  "inputs": inputs, "prediction": [str(p) for p in predictions],
                  "probability": probabilities, "latency_ms": latency_ms}
        rows = list(zip(*(values[c] if isinstance(values.get(c), list) else
                          itertools.repeat(values.get(c)) for c in COLUMNS), strict=False))
        dumps = orjson.dumps
        answers = [dumps({"request_id": rid, "prediction": prediction,
                          "probability": probability, "model_version": version,
                          "variant": "main"})
                   for rid, prediction, probability in zip(ids, predictions, probabilities,
                                                           strict=True)]
        return rows, answers

    def _unreadable(self, data: bytes | None) -> str | None:
        """Why an event's data cannot be read at all (absent, too large), or None."""
        if data is None:
            return "missing_field:data (the event holds no 'data' field)"
        if len(data) > self.max_event_bytes:
            return f"oversize: {len(data)} bytes > {self.max_event_bytes}"
        return None

    @staticmethod
    def _object(data: bytes) -> tuple[dict | None, str | None]:
        """(the JSON object in `data`, None) or (None, why it is none)."""
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            return None, f"not_json: {exc}"
        if not isinstance(value, dict):
            return None, f"not_an_object: a JSON {type(value).__name__}, expected one object"
        return value, None

    def _record(self, data: bytes) -> tuple[dict | None, str | None]:
        """(the record, None) or (None, why it is no record)."""
        record, reason = self._object(data)
        if reason:
            return None, reason
        undeclared = record.keys() - self.declared
        if undeclared:
            if not self.drop_undeclared:
                return None, "; ".join(f"undeclared:{k}" for k in sorted(undeclared))
            record = {k: v for k, v in record.items() if k in self.declared}
        return record, None

    def _outcome(self, data: bytes | None) -> tuple[dict | None, str | None]:
        """(a feedback row, None) or (None, why not) for an outcome event."""
        reason = self._unreadable(data)
        note, reason = (None, reason) if reason else self._object(data)
        if reason:
            return None, reason
        extra = note.keys() - {"request_id", "outcome"}
        missing = {"request_id", "outcome"} - note.keys()
        if extra or missing:
            return None, "; ".join([f"unknown_field:{k}" for k in sorted(extra)]
                                   + [f"missing_field:{k}" for k in sorted(missing)])
        rid, outcome = note["request_id"], note["outcome"]
        if not isinstance(rid, str) or not 0 < len(rid) <= 64:
            return None, "wrong_type:request_id (a text of 1 to 64 characters)"
        if self.outcomes is None:
            if isinstance(outcome, bool) or not isinstance(outcome, int | float):
                return None, "wrong_type:outcome (a number)"
        elif str(outcome) not in self.outcomes or not isinstance(outcome, str | int):
            return None, f"unknown_category:outcome (one of {sorted(self.outcomes)})"
        return {"request_id": rid, "received_at": time.time(), "outcome": str(outcome)}, None

    def _dead(self, stream: str, event_id: str, reason: str, data: bytes | None) -> bytes:
        key = reason.split(":")[0].split(";")[0]
        with self._lock:  # the committing thread refuses outcomes too
            self.progress.reasons[key] = self.progress.reasons.get(key, 0) + 1
        text = data.decode("utf-8", "replace")[:DEAD_LETTER_DATA_CHARS] if data else None
        return orjson.dumps({"stream": stream, "event_id": event_id, "reason": reason,
                             "data": text})

    def report(self) -> None:
        """One progress line: counts, rate since the last line, and the group's lag."""
        now = time.monotonic()
        p, last = self.progress, self._logged
        rate = (p.events - last.events) / max(now - self._last_log, 1e-9)
        try:
            backlog = self.broker.lag()
            if self.metrics:
                self.metrics.backlog(backlog)
            lag = ", ".join(f"{s}: lag {v['lag']} pending {v['pending']}"
                            for s, v in backlog.items())
        except Exception as exc:  # noqa: BLE001 - progress must not stop the work
            lag = f"lag unknown ({exc})"
        log.warning("consume: %d events (%d answered, %d dead-lettered, %d outcomes, %d "
                    "claimed from others), %.0f events/s; %s", p.events, p.answered,
                    p.dead_letters, p.feedback, p.claimed, rate, lag)
        self._last_log = now
        self._logged = Progress(p.events, p.answered, p.dead_letters, p.feedback, p.claimed,
                                p.batches)


def _fields(signature: dict | list) -> list[dict]:
    from lifecycle.serving.schema import signature_fields

    return signature_fields(signature)
