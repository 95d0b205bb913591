"""The serving core: check records, route them to a variant, score them, record them, answer.

Every transport calls this one object: the HTTP API (`app`), batch scoring of files (`batch`),
an events worker. So a record gets the same verdict and the same answer whichever way it
arrives, and an answer is given only after it is committed to the inference registry. There is
no HTTP in here: tests and scripts use it directly.

    service = PredictionService(deployment, variants, registry)   # see `open_service`
    result = await service.submit(records)               # inside an event loop (API, events)
    result = service.submit_sync(records, partial=True)  # from plain code (scripts, workers)
    result.answers  # one per record: {request_id, prediction, probability, model_version,
                    #                  variant}, or None for a refused record
    result.errors   # one per problem: {index, field, type, msg}; field None for a row rule

A record is a dict of column -> JSON value (the source's columns; the contract's `extra_columns`
says what happens to undeclared ones). `submit` is all or nothing by default (any refused record
-> nothing scored, nothing recorded, like a 422); `partial=True` scores and records the good
records and refuses the others (a stream or a file). `request_ids` lets a caller bring its own
ids (an event id makes redelivery idempotent: a repeated id is refused by the registry).

Speed: records submitted in the same event-loop turn share one contract check and one ONNX run
(`scoring.Batcher`), and the registry's writer commits every waiting request in one transaction
(group commit), so concurrent callers share the fixed costs.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from lifecycle.contract import mask
from lifecycle.errors import StageError
from lifecycle.serving.deploy import Deployment, Router, fetch_bundle
from lifecycle.serving.registry import Registry
from lifecycle.serving.scoring import Batcher, Scorer, load_scorer

log = logging.getLogger("lifecycle.serving")

MAX_REQUEST_ID = 36  # characters: the registry's request_id column
MAX_REASONS = 10  # reason codes per answer: each costs one more scoring row per record


@dataclass
class Variant:
    """One loaded bundle of a deployment, under its variant name."""

    name: str
    scorer: Scorer
    source: str  # where the bundle came from: a path, a version or a stage


def load_variants(deployment: Deployment, repo: str | Path = ".") -> dict[str, Variant]:
    """Resolve and load every variant's bundle (manifest checked); a bad one is a StageError."""
    variants = {}
    for name, spec in deployment.variants.items():
        try:
            path = fetch_bundle(spec, deployment.model, repo)
        except StageError as exc:
            raise StageError(f"variant {name}: {exc}") from exc
        source = spec.bundle or (f"{deployment.model}@{spec.version}" if spec.version
                                 else f"{deployment.model}#{spec.stage}")
        variants[name] = Variant(name, load_scorer(path, deployment.engine), source)
    return variants


def _id_source():
    """Request ids: a random 64-bit prefix per process and a counter. Unique across restarts
    like a UUID, at a fraction of uuid4's cost (no system call per request)."""
    prefix = os.urandom(8).hex()
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter):016x}"


new_id = _id_source()


@dataclass
class Result:
    """What `submit` gives back: one answer per record (None where refused), the problems,
    and whether the answers were committed to the registry."""

    answers: list[dict | None]
    errors: list[dict] = field(default_factory=list)
    recorded: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


def reason_errors(index: int, reason: str) -> list[dict]:
    """A bundle check's reason ("wrong_type:tenure; rule:name") as one error per problem."""
    out = []
    for part in reason.split("; "):
        kind, _, target = part.partition(":")
        out.append({"index": index, "field": None if kind == "rule" else target or None,
                    "type": kind, "msg": part})
    return out


class PredictionService:
    """Check -> route -> score -> record -> answers, for a deployment's loaded variants.

    The caller owns the registry (started) and the variants; this object holds no resources of
    its own, only the router (blue/green state) and one micro-batcher per variant.

    `replace` swaps a slot's bundle while the server runs: `variants` and the batchers are
    replaced as new dicts (copy on write) in one event-loop step, and a request reads them once
    when it starts, so requests in flight finish on the old bundle and record its version."""

    def __init__(self, deployment: Deployment, variants: dict[str, Variant],
                 registry: Registry):
        self.deployment = deployment
        self.variants = variants
        self.registry = registry
        self.router = Router(deployment)
        self.live: Scorer = variants[self.router.live].scorer
        contract = self.live.contract
        self.id_column: str = contract.id
        # personal data and metadata are carried, never features, and kept only masked
        self.masked_columns = set(contract.personal_data) | {
            name for name, spec in contract.columns.items() if spec.role == "metadata"}
        self._batchers = {name: Batcher(v.scorer) for name, v in variants.items()}

    # --- the entry points -----------------------------------------------------------------------
    async def submit(self, records: list[dict], *, partial: bool = False,
                     request_ids: list[str] | None = None,
                     received: float | None = None, reasons: int = 0) -> Result:
        """Check, score and record `records`; returns once the answers are committed.

        Raises RegistryError when the registry cannot record them (nothing is answered then).
        `received` is the `time.perf_counter()` at receipt (latency is measured from it).
        `reasons`: with each answer its top `reasons` reason codes (`Bundle.reasons`; at most
        MAX_REASONS), recorded with the prediction."""
        received = time.perf_counter() if received is None else received
        variants, batchers = self.variants, self._batchers  # one snapshot (see `replace`)
        ids, served, shadowed = self._route(records, request_ids, reasons)
        outcomes = {name: await batchers[name].run(_pick(records, index))
                    for name, index in served.items()}
        result, rows = self._assemble(records, ids, served, outcomes, partial, received,
                                      reasons, variants)
        if rows:
            shadows = {name: await _guarded(name, batchers[name].run(
                _pick(records, index))) for name, index in shadowed.items()}
            rows += self._shadow_rows(records, ids, shadowed, shadows, result, received,
                                      variants)
            await self.registry.record(rows)
            result.recorded = True
        return result

    def submit_sync(self, records: list[dict], *, partial: bool = False,
                    request_ids: list[str] | None = None, reasons: int = 0) -> Result:
        """`submit` for code outside an event loop (blocks until the answers are committed)."""
        received = time.perf_counter()
        variants, batchers = self.variants, self._batchers
        ids, served, shadowed = self._route(records, request_ids, reasons)
        outcomes = {name: batchers[name].run_now(_pick(records, index))
                    for name, index in served.items()}
        result, rows = self._assemble(records, ids, served, outcomes, partial, received,
                                      reasons, variants)
        if rows:
            shadows = {name: _guarded_now(name, batchers[name].run_now,
                                          _pick(records, index))
                       for name, index in shadowed.items()}
            rows += self._shadow_rows(records, ids, shadowed, shadows, result, received,
                                      variants)
            self.registry.record_sync(rows)
            result.recorded = True
        return result

    def score_now(self, records: list[dict]) -> tuple[list[dict], dict[int, str], list[dict], str]:
        """Check and score records with the live variant, now, recording nothing: (coherent
        records that pass, {position: reason} of the others, their answers, the engine). For
        a transport that commits on its own schedule (the events worker)."""
        return self._batchers[self.router.live].run_now(records)

    def replace(self, name: str, variant: Variant) -> Variant:
        """Put `variant` (loaded) in slot `name` in place of the bundle there; returns the old
        one. Call it on the event loop's thread (the API does): the swap is then atomic for
        every request. A StageError when `name` is the live slot or is no slot, or when the new
        bundle does not take the same requests or give the same outcomes as the live one (the
        API's request schema was built from it)."""
        if name not in self.variants:
            raise StageError(f"slot: {name!r} is not one of {list(self.variants)}")
        if name == self.router.live:
            raise StageError(f"slot: {name!r} is live; load into the idle slot "
                             f"({self.deployment.other or 'none in a single deployment'}), "
                             "then switch")
        new, live = variant.scorer, self.live
        if new.signature != live.signature or new.contract.id != live.contract.id:
            raise StageError(f"bundle: {new.path} takes other inputs than the live bundle "
                             f"{live.version} (signature or id column differ): start a new "
                             "server for it")
        if new.outcome_values() != live.outcome_values():
            raise StageError(f"bundle: {new.path} predicts other outcomes "
                             f"({new.outcome_values()}) than the live bundle "
                             f"({live.outcome_values()}): start a new server for it")
        old = self.variants[name]
        self.variants = {**self.variants, name: variant}
        self._batchers = {**self._batchers, name: Batcher(new)}
        return old

    # --- the steps --------------------------------------------------------------------------------
    def _route(self, records: list[dict], request_ids: list[str] | None, reasons: int = 0):
        """(request ids, {variant: positions it answers}, {variant: positions it shadows})."""
        if not 0 <= reasons <= MAX_REASONS:
            raise ValueError(f"reasons: a whole number from 0 to {MAX_REASONS}")
        if request_ids is None:
            ids = [new_id() for _ in records]
        else:
            ids = [str(i) for i in request_ids]
            if len(ids) != len(records) or len(set(ids)) != len(ids) or any(
                    not 0 < len(i) <= MAX_REQUEST_ID for i in ids):
                raise ValueError(f"request_ids: one distinct id of 1..{MAX_REQUEST_ID} "
                                 "characters per record")
        served: dict[str, list[int]] = {}
        shadowed: dict[str, list[int]] = {}
        key_column = self.id_column
        for i, record in enumerate(records):
            key = record.get(key_column)
            name, shadows = self.router.route(str(key) if key else ids[i])
            served.setdefault(name, []).append(i)
            for shadow in shadows:
                shadowed.setdefault(shadow, []).append(i)
        return ids, served, shadowed

    def _assemble(self, records, ids, served, outcomes, partial: bool, received: float,
                  reasons: int = 0, variants: dict[str, Variant] | None = None):
        """(Result, registry rows of the served answers); no rows when nothing is to record."""
        variants = self.variants if variants is None else variants
        n = len(records)
        answers: list[dict | None] = [None] * n
        checked: dict[int, dict] = {}
        errors: list[dict] = []
        engines: dict[int, str] = {}
        explained: dict[int, str] = {}
        for name, index in served.items():
            ok, refused, results, engine = outcomes[name]
            for j, reason in refused.items():
                errors += reason_errors(index[j], reason)
            if errors and not partial:
                continue
            kept = [i for j, i in enumerate(index) if j not in refused]
            version = variants[name].scorer.version
            codes = (variants[name].scorer.bundle.reasons(ok, reasons) if reasons and ok
                     else [None] * len(ok))
            for i, record, result, code in zip(kept, ok, results, codes, strict=True):
                checked[i] = record
                engines[i] = engine
                answers[i] = {"request_id": ids[i], **result, "model_version": version,
                              "variant": name}
                if code is not None:
                    answers[i]["reasons"] = code
                    explained[i] = orjson.dumps(code).decode()
        errors.sort(key=lambda e: e["index"])
        if errors and not partial:
            return Result([None] * n, errors), []
        latency_ms = (time.perf_counter() - received) * 1000
        now = time.time()
        rows = [self._row(ids[i], checked[i], answers[i], "served", answers[i]["variant"],
                          answers[i]["model_version"], engines[i], now, latency_ms,
                          explained.get(i))
                for i in range(n) if answers[i] is not None]
        return Result(answers, errors), rows

    def _shadow_rows(self, records, ids, shadowed: dict[str, list[int]],
                     outcomes: dict[str, tuple | None], result: Result,
                     received: float, variants: dict[str, Variant] | None = None
                     ) -> list[dict]:
        """Registry rows of the shadow variants' answers (role `shadow`) to the records that
        were answered; a variant that failed (outcome None) has none."""
        variants = self.variants if variants is None else variants
        rows = []
        ms = (time.perf_counter() - received) * 1000
        now = time.time()
        for name, index in shadowed.items():
            if outcomes[name] is None:
                continue
            ok, refused, results, engine = outcomes[name]
            kept = [i for j, i in enumerate(index) if j not in refused]
            version = variants[name].scorer.version
            rows += [self._row(ids[i], record, answer, "shadow", name, version, engine, now, ms)
                     for i, record, answer in zip(kept, ok, results, strict=True)
                     if result.answers[i] is not None]
        return rows

    def _row(self, request_id: str, record: dict, answer: dict, role: str, name: str,
             version: str, engine: str, now: float, ms: float,
             reasons: str | None = None) -> dict:
        key = record.get(self.id_column)
        return {"request_id": request_id, "role": role, "created_at": now,
                "deployment": self.deployment.name, "strategy": self.deployment.strategy,
                "variant": name, "model_version": version,
                "engine": engine, "routing_key": mask([key])[0] if key else None,
                "inputs": self.masked(record), "prediction": str(answer["prediction"]),
                "probability": answer.get("probability"), "latency_ms": ms,
                "reasons": reasons}

    def masked(self, record: dict) -> str:
        """The record as the registry keeps it: JSON, personal and metadata fields masked."""
        hidden = self.masked_columns
        if hidden:
            record = {k: (mask([v])[0] if k in hidden and v is not None else v)
                      for k, v in record.items()}
        return orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS).decode()


def _pick(records: list[dict], index: list[int]) -> list[dict]:
    return [records[i] for i in index]


async def _guarded(name: str, pending):
    """A shadow variant's outcome, or None if it failed: it must never fail the answer."""
    try:
        return await pending
    except Exception:  # noqa: BLE001 - logged; the served answers go on
        log.exception("shadow variant %s failed; its rows are not recorded", name)
        return None


def _guarded_now(name: str, run, records: list[dict]):
    """`_guarded` for code outside an event loop."""
    try:
        return run(records)
    except Exception:  # noqa: BLE001 - logged; the served answers go on
        log.exception("shadow variant %s failed; its rows are not recorded", name)
        return None
