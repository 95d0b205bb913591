"""The real-time API (FastAPI on uvicorn): /predict, /feedback, /health, /metadata, /admin/*.

The request schema is the bundle's signature (see `schema`); the answer for each record is its
prediction, the probability (classification), the model version, the variant and a request
id. Every answer is committed to the inference registry before it is sent.

The hot path is kept lean on purpose (bench/serving.py measures it): `PredictLane` takes
POST /predict past the framework's per-request layers; the body is parsed with orjson and
validated by pydantic-core directly; the bundle checks and scores plain records (no pandas);
concurrent requests share one ONNX run (`scoring.Batcher`) and one registry commit; the
answer is serialised with orjson.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, create_model

from lifecycle.contract import mask
from lifecycle.errors import StageError
from lifecycle.serving.deploy import Deployment, Router, fetch_bundle
from lifecycle.serving.registry import Registry, RegistryError
from lifecycle.serving.schema import MAX_RECORDS, RecordParser, RequestInvalid, record_model
from lifecycle.serving.scoring import Batcher, Scorer, load_scorer

log = logging.getLogger("lifecycle.serving")

MAX_BODY_BYTES = 1 << 20  # 1 MiB: about 1,000 records of this signature
ADMIN_TOKEN_ENV = "SERVING_ADMIN_TOKEN"
JSON = "application/json"


@dataclass
class Variant:
    name: str
    scorer: Scorer
    source: str  # where the bundle came from: a path, a version or a stage


def load_variants(deployment: Deployment, repo: str | Path = ".") -> dict[str, Variant]:
    """Resolve and load every variant's bundle (manifest checked); a bad one is a StageError."""
    variants = {}
    for name, spec in deployment.variants.items():
        path = fetch_bundle(spec, deployment.model, repo)
        source = spec.bundle or (f"{deployment.model}@{spec.version}" if spec.version
                                 else f"{deployment.model}#{spec.stage}")
        variants[name] = Variant(name, load_scorer(path, deployment.engine), source)
    return variants


def _id_source():
    """Request ids: a random 64-bit prefix per server start and a counter. Unique across
    restarts like a UUID, at a fraction of uuid4's cost (no system call per request)."""
    prefix = os.urandom(8).hex()
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter):016x}"


new_id = _id_source()


def _json(payload, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status,
                    media_type=JSON)


def feedback_model(labels: list[str] | None) -> type[BaseModel]:
    """The /feedback body: a request id and the true outcome (a label, or a number)."""
    outcome = float if labels is None else Literal[tuple(labels)]
    return create_model(
        "Feedback", __config__=ConfigDict(extra="forbid"),
        request_id=(str, Field(min_length=1, max_length=64,
                               description="the request_id of a /predict answer")),
        outcome=(outcome, Field(description="the true outcome of that record (the target)")))


class Switch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str | None = Field(default=None, description="the slot to make live (default: the idle)")


def create_app(deployment: Deployment, variants: dict[str, Variant], registry: Registry,
               admin_token: str | None = None) -> FastAPI:
    """The API over loaded variants and a started registry (the caller owns both)."""
    router = Router(deployment)
    live = variants[router.live].scorer
    contract = live.contract
    id_column = contract.id
    personal = set(contract.personal_data)
    Record = record_model(live.signature, id_column)  # noqa: N806 - a class
    parser = RecordParser(Record)
    Feedback = feedback_model(live.outcome_values())  # noqa: N806 - a class
    app = FastAPI(title=f"{deployment.model}: {deployment.name}",
                  summary="Real-time predictions; every answer is recorded.",
                  version=live.version, max_body_size=MAX_BODY_BYTES)
    app.state.router, app.state.registry, app.state.variants = router, registry, variants

    def masked(record: dict) -> str:
        if personal:
            record = {k: (mask([v])[0] if k in personal else v) for k, v in record.items()}
        return orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS).decode()

    record_schema = {"$ref": "#/components/schemas/Record"}
    answer_schema = {"$ref": "#/components/schemas/Prediction"}

    batchers = {name: Batcher(v.scorer) for name, v in variants.items()}

    def error(status: int, detail) -> tuple[int, bytes]:
        return status, orjson.dumps({"detail": detail})

    async def answer(body: bytes) -> tuple[int, bytes]:
        """POST /predict: (status, JSON body). Shared by the FastAPI route (which documents
        it) and `PredictLane` (which serves it without the framework's per-request layers)."""
        received = time.perf_counter()
        try:
            records, many = parser.parse(orjson.loads(body))
        except orjson.JSONDecodeError as exc:
            return error(422, [{"loc": ["body"], "type": "json_invalid",
                                "msg": f"invalid JSON: {exc}"}])
        except RequestInvalid as exc:
            return error(422, exc.errors)
        n = len(records)
        request_ids = [new_id() for _ in range(n)]
        served: dict[str, list[int]] = {}
        shadowed: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            name, shadows = router.route(str(record.get(id_column) or request_ids[i]))
            served.setdefault(name, []).append(i)
            for shadow in shadows:
                shadowed.setdefault(shadow, []).append(i)
        answers: list = [None] * n
        checked: list = [None] * n
        engines: dict[str, str] = {}
        errors = []
        for name, index in served.items():
            ok, reasons, results, engines[name] = await batchers[name].run(
                [records[i] for i in index])
            if reasons:
                errors += [{"loc": ["body", index[j]] if many else ["body"], "type": "contract",
                            "msg": reason} for j, reason in reasons.items()]
                continue
            version = variants[name].scorer.version
            for i, record, result in zip(index, ok, results, strict=True):
                checked[i] = record
                answers[i] = {"request_id": request_ids[i], **result,
                              "model_version": version, "variant": name}
        if errors:
            return error(422, errors)
        latency_ms = (time.perf_counter() - received) * 1000
        now = time.time()
        inputs = [masked(r) for r in checked]
        routing = [mask([r[id_column]])[0] if r.get(id_column) else None for r in checked]

        def row(i: int, result: dict, role: str, name: str, ms: float) -> dict:
            return {"request_id": request_ids[i], "role": role, "created_at": now,
                    "deployment": deployment.name, "strategy": deployment.strategy,
                    "variant": name, "model_version": variants[name].scorer.version,
                    "engine": engines[name],
                    "routing_key": routing[i], "inputs": inputs[i],
                    "prediction": str(result["prediction"]),
                    "probability": result.get("probability"), "latency_ms": ms}

        rows = [row(i, answers[i], "served", answers[i]["variant"], latency_ms)
                for i in range(n)]
        for name, index in shadowed.items():
            try:
                _, reasons, results, engines[name] = await batchers[name].run(
                    [records[i] for i in index])
            except Exception:  # noqa: BLE001 - a failing shadow must never fail the answer
                log.exception("shadow variant %s failed; its rows are not recorded", name)
                continue
            kept = [i for j, i in enumerate(index) if j not in reasons]
            ms = (time.perf_counter() - received) * 1000
            rows += [row(i, result, "shadow", name, ms)
                     for i, result in zip(kept, results, strict=True)]
        try:
            await registry.record(rows)
        except RegistryError as exc:
            return error(503, f"the answer could not be recorded: {exc}")
        return 200, orjson.dumps(answers if many else answers[0])

    app.state.answer = answer

    @app.post(
        "/predict", summary="Score one record or a list of records",
        openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": {
            "anyOf": [record_schema, {"type": "array", "items": record_schema, "minItems": 1,
                                      "maxItems": MAX_RECORDS}]}}}}},
        responses={200: {"description": "one answer per record (a list for a list)",
                         "content": {JSON: {"schema": {"anyOf": [
                             answer_schema, {"type": "array", "items": answer_schema}]}}}},
                   413: {"description": "body too large"},
                   422: {"description": "invalid records: one message per bad field"},
                   503: {"description": "the registry could not record the answer"}})
    async def predict(request: Request) -> Response:
        status, payload = await answer(await request.body())
        return Response(payload, status, media_type=JSON)

    async def give_feedback(note) -> Response:
        from starlette.concurrency import run_in_threadpool

        if await run_in_threadpool(registry.find, note.request_id) is None:
            return _json({"detail": f"no prediction with request_id {note.request_id}"}, 404)
        try:
            await registry.record(feedback_rows=[{"request_id": note.request_id,
                                                  "received_at": time.time(),
                                                  "outcome": str(note.outcome)}])
        except RegistryError:
            return _json({"detail": f"feedback for {note.request_id} was already recorded"},
                         409)
        return _json({"request_id": note.request_id, "recorded": True})

    # the body model is built at run time: give FastAPI the class, not a name to look up
    give_feedback.__annotations__ = {"note": Feedback, "return": Response}
    app.post("/feedback", summary="The true outcome of an earlier prediction",
             responses={404: {"description": "no prediction with this request id"},
                        409: {"description": "feedback for this request id already recorded"},
                        422: {"description": "invalid outcome"}})(give_feedback)

    @app.get("/health", summary="Liveness and readiness")
    async def health() -> Response:
        ready = registry.healthy
        return _json({"live": True, "ready": ready, "status": "ok" if ready else "not ready",
                      "variants": {n: v.scorer.version for n, v in variants.items()}},
                     200 if ready else 503)

    @app.get("/metadata", summary="Signature, model card, versions, deployment in force")
    async def metadata() -> Response:
        return _json({
            "deployment": router.state(),
            "variants": {n: {"model_version": v.scorer.version, "engine": v.scorer.engine,
                             "source": v.source, "lineage": v.scorer.lineage}
                         for n, v in variants.items()},
            "signature": live.signature,
            "inference": live.public_inference(),
            "model_card": live.model_card_summary(),
            "limits": {"max_records": MAX_RECORDS, "max_body_bytes": MAX_BODY_BYTES},
        })

    def authorised(request: Request) -> Response | None:
        if not admin_token:
            return _json({"detail": f"admin endpoints are disabled: start the server with "
                                    f"{ADMIN_TOKEN_ENV} set"}, 403)
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {admin_token}".encode()):
            return _json({"detail": "missing or wrong admin token (Authorization: Bearer ...)"},
                         401)
        return None

    admin_responses = {401: {"description": "missing or wrong token"},
                       403: {"description": "admin disabled (no token configured)"},
                       409: {"description": "not possible in this deployment's state"}}

    @app.post("/admin/switch", summary="Blue/green: make a slot live", tags=["admin"],
              responses=admin_responses)
    async def switch(request: Request, body: Switch | None = None) -> Response:
        if (refused := authorised(request)) is not None:
            return refused
        try:
            state = router.switch(body.to if body else None)
        except StageError as exc:
            return _json({"detail": str(exc)}, 409)
        log.warning("blue/green: %s is live (was %s)", state["live"], state.get("previous"))
        return _json(state)

    @app.post("/admin/rollback", summary="Blue/green: make the previous slot live again",
              tags=["admin"], responses=admin_responses)
    async def rollback(request: Request) -> Response:
        if (refused := authorised(request)) is not None:
            return refused
        try:
            state = router.rollback()
        except StageError as exc:
            return _json({"detail": str(exc)}, 409)
        log.warning("blue/green: rolled back, %s is live", state["live"])
        return _json(state)

    @app.get("/admin/outcomes", summary="Outcomes per variant, from feedback (A/B)",
             tags=["admin"], responses=admin_responses)
    async def outcomes(request: Request) -> Response:
        if (refused := authorised(request)) is not None:
            return refused
        from starlette.concurrency import run_in_threadpool

        from lifecycle.serving.registry import outcomes_by_variant

        return _json(await run_in_threadpool(outcomes_by_variant, registry.url))

    _document(app, Record, live)
    return app


class PredictLane:
    """POST /predict straight to its handler, past the framework's per-request layers
    (middleware stack, routing, dependency solving: about half of a request's CPU time);
    every other path goes to the FastAPI app. Same body limit, same answers."""

    def __init__(self, app: FastAPI, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit
        self.answer = app.state.answer

    async def __call__(self, scope, receive, send) -> None:
        if not (scope["type"] == "http" and scope["path"] == "/predict"
                and scope["method"] == "POST"):
            return await self.app(scope, receive, send)
        body, size = [], 0
        for key, value in scope["headers"]:
            if key == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                return await self._send(send, 413, self._too_large())
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._send(send, 413, self._too_large())
            body.append(chunk)
            if not message.get("more_body"):
                break
        try:
            status, payload = await self.answer(b"".join(body))
        except Exception:  # noqa: BLE001 - log it, answer 500 rather than drop the connection
            log.exception("POST /predict failed")
            status, payload = 500, orjson.dumps({"detail": "internal error (logged)"})
        await self._send(send, status, payload)
        return None

    def _too_large(self) -> bytes:
        return orjson.dumps({"detail": f"request body larger than {self.limit} bytes"})

    @staticmethod
    async def _send(send, status: int, payload: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def _document(app: FastAPI, record: type[BaseModel], scorer: Scorer) -> None:
    """Put the signature's Record and the answer's shape into the OpenAPI components."""
    original = app.openapi

    def openapi():
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Record"] = record.model_json_schema(
            ref_template="#/components/schemas/{model}")
        prediction = {"type": "number"} if scorer.task == "regression" else {
            "type": "string", "enum": [str(c) for c in scorer.labels]}
        components["Prediction"] = {
            "type": "object", "required": ["request_id", "prediction", "model_version",
                                           "variant", "probability"],
            "properties": {
                "request_id": {"type": "string", "description": "quote it in /feedback"},
                "prediction": prediction,
                "probability": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1},
                                          {"type": "null"}],
                                "description": "of the positive class (binary)"},
                "model_version": {"type": "string"}, "variant": {"type": "string"}}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def admin_token_from_env() -> str | None:
    return os.environ.get(ADMIN_TOKEN_ENV) or None
