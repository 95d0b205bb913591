"""The real-time API (FastAPI on uvicorn): /predict, /feedback, /health, /metadata, /metrics,
/admin/*.

Every endpoint is an ordinary FastAPI route, so middleware a user adds (`app.add_middleware`:
auth, CORS, tracing, metrics) wraps /predict like any other. /predict itself is thin: it reads
the JSON body (415 for another media type, 413 beyond MAX_BODY_BYTES), checks its shape against
the bundle's signature (`schema`), and hands the records to the serving core
(`core.PredictionService`: contract check, routing, ONNX scoring, the registry commit), which
the other transports share. Every answer is committed to the inference registry before it is
sent.

Prometheus metrics (`metrics`, GET /metrics) come from ASGI middleware around the whole app;
/predict only notes in its request state why it refused a request, or the answers it gave.

Speed (bench/serving.py measures it): the body is parsed with orjson and validated by
pydantic-core directly, the answer serialised with orjson; concurrent requests share one ONNX
run and one registry commit inside the core.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from pathlib import Path
from typing import Literal

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic import model_validator as after_check

from lifecycle.errors import StageError
from lifecycle.serving.core import MAX_REASONS, PredictionService, Variant, load_variants
from lifecycle.serving.deploy import Deployment
from lifecycle.serving.inputs import loads
from lifecycle.serving.metrics import MetricsMiddleware, ServingMetrics
from lifecycle.serving.registry import Registry, RegistryError
from lifecycle.serving.schema import MAX_RECORDS, RecordParser, RequestInvalid, record_model
from lifecycle.serving.scoring import Scorer

log = logging.getLogger("lifecycle.serving")

MAX_BODY_BYTES = 1 << 20  # 1 MiB: about 1,000 records of this signature
ADMIN_TOKEN_ENV = "SERVING_ADMIN_TOKEN"
JSON = "application/json"

__all__ = ["MAX_BODY_BYTES", "Variant", "create_app", "load_variants"]


def _json(payload, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status,
                    media_type=JSON)


def is_json(content_type: str | None) -> bool:
    """application/json (any parameters) or a +json type: what /predict and /feedback read.
    Anything else (a cross-site form or text/plain POST) is refused with 415."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON or (media.startswith("application/") and media.endswith("+json"))


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
    to: str | None = Field(default=None, min_length=1, max_length=100,
                           description="the slot to make live (default: the idle one)")


class Share(BaseModel):
    model_config = ConfigDict(extra="forbid")
    share: float = Field(ge=0, le=1, description="the canary challenger's share of customers")


class Load(BaseModel):
    """POST /admin/load: a bundle for an idle slot, by directory or by registered version."""

    model_config = ConfigDict(extra="forbid")
    slot: str = Field(min_length=1, max_length=100, description="the idle slot to load into")
    bundle: str | None = Field(default=None, min_length=1, max_length=1000,
                               description="a bundle directory under the server's bundle root")
    version: str | None = Field(default=None, pattern=r"^v\d{1,6}\.\d{1,6}\.\d{1,6}$",
                                description="a registered (GTO) version of the model")
    stage: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,100}$",
                              description="a GTO stage of the model, e.g. prod")

    @after_check(mode="after")
    def _exactly_one(self) -> Load:
        if sum(v is not None for v in (self.bundle, self.version, self.stage)) != 1:
            raise ValueError("give exactly one of bundle, version, stage")
        return self


def one_line(exc: ValidationError) -> str:
    """A body's first problem as one line naming the field: "slot: Field required"."""
    e = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    where = ".".join(str(part) for part in e["loc"]) or "body"
    return f"{where}: {e['msg'].removeprefix('Value error, ')}"


def under_root(given: str, root: Path) -> Path:
    """The bundle directory `given` names (relative: to `root`), resolved; a StageError naming
    the field when it lies outside `root` (symlinks and .. followed) or is no directory."""
    try:
        path = (root / given).resolve()
        inside, is_dir = path.is_relative_to(root), path.is_dir()
    except (ValueError, OSError, RuntimeError) as exc:  # a NUL byte, a symlink loop, too long
        raise StageError(f"bundle: {given!r} is not a usable path ({exc})") from exc
    if not inside:
        raise StageError(f"bundle: {given!r} is outside the server's bundle root {root}")
    if not is_dir:
        raise StageError(f"bundle: no bundle directory at {given!r} under {root}")
    return path


class PlainRoute(APIRoute):
    """A route whose endpoint takes the Request and returns a Response itself: in the OpenAPI
    schema and wrapped by every middleware like any route, minus FastAPI's per-request
    dependency solving (the endpoint reads and checks its own body)."""

    def get_route_handler(self):
        return self.endpoint


def require_json(request: Request) -> None:
    """A route dependency: 415 unless the body is declared JSON (checked before the body)."""
    if not is_json(request.headers.get("content-type")):
        raise HTTPException(415, f"send the body as {JSON}")


def create_app(deployment: Deployment, variants: dict[str, Variant], registry: Registry,
               admin_token: str | None = None, metrics: bool = True,
               repo: str | Path | None = None, bundle_root: str | Path | None = None
               ) -> FastAPI:
    """The API over loaded variants and a started registry (the caller owns both). The serving
    core it answers with is `app.state.service`; `metrics=False` leaves out GET /metrics.
    POST /admin/load fetches versions and stages from `repo` and loads bundle directories
    only from under `bundle_root` (None: by version or stage only)."""
    service = PredictionService(deployment, variants, registry)
    router = service.router
    live = service.live
    contract = live.contract
    Record = record_model(live.signature, contract.id, carried=contract.columns,  # noqa: N806
                          masked=frozenset(contract.personal_data))
    parser = RecordParser()
    Feedback = feedback_model(live.outcome_values())  # noqa: N806 - a class
    app = FastAPI(title=f"{deployment.model}: {deployment.name}",
                  summary="Real-time predictions; every answer is recorded.",
                  version=live.version, max_body_size=MAX_BODY_BYTES)
    app.state.service = service
    app.state.router, app.state.registry = router, registry
    root = Path(bundle_root).resolve() if bundle_root is not None else None

    record_schema = {"$ref": "#/components/schemas/Record"}
    answer_schema = {"$ref": "#/components/schemas/Prediction"}

    def error(status: int, detail) -> Response:
        return Response(orjson.dumps({"detail": detail}), status, media_type=JSON)

    async def predict(request: Request) -> Response:
        received = time.perf_counter()
        state = request.state  # read by the metrics middleware: why refused, or the answers
        if not is_json(request.headers.get("content-type")):
            state.reject_reason = "not_json"
            return error(415, f"send the records as {JSON}")
        body = await request.body()
        try:
            try:
                document = orjson.loads(body)
            except orjson.JSONDecodeError:  # NaN, 1e400, a lone surrogate: read as batch does
                document = loads(body.decode())  # UTF-8 only, as orjson
            records, many = parser.parse(document)
        except (ValueError, RecursionError) as exc:  # not JSON for either reader (too deep)
            state.reject_reason = "invalid_json"
            return error(422, [{"loc": ["body"], "type": "json_invalid",
                                "msg": f"invalid JSON: {exc}"}])
        except RequestInvalid as exc:
            state.reject_reason = "invalid_shape"
            return error(422, exc.errors)
        reasons = request.query_params.get("reasons", "0")
        if not (reasons.isascii() and reasons.isdigit() and int(reasons) <= MAX_REASONS):
            state.reject_reason = "invalid_reasons"
            return error(422, [{"loc": ["query", "reasons"], "type": "invalid_reasons",
                                "msg": f"reasons: a whole number from 0 to {MAX_REASONS}"}])
        try:
            result = await service.submit(records, received=received, reasons=int(reasons))
        except RegistryError as exc:
            state.reject_reason = "not_recorded"
            return error(503, f"the answer could not be recorded: {exc}")
        if result.errors:
            state.reject_reason = result.errors[0]["type"]  # wrong_type, rule, ...
            return error(422, [{"loc": ["body", *([e["index"]] if many else []),
                                        *([e["field"]] if e["field"] else [])],
                                "type": e["type"], "msg": e["msg"]} for e in result.errors])
        state.answers = result.answers
        return Response(orjson.dumps(result.answers if many else result.answers[0]),
                        media_type=JSON)

    app.router.add_api_route(
        "/predict", predict, methods=["POST"], route_class_override=PlainRoute,
        summary="Score one record or a list of records",
        openapi_extra={"parameters": [{
            "name": "reasons", "in": "query", "required": False,
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_REASONS, "default": 0},
            "description": "with each answer its top N reason codes (recorded with it)"}],
            "requestBody": {"required": True, "content": {JSON: {"schema": {
            "anyOf": [record_schema, {"type": "array", "items": record_schema, "minItems": 1,
                                      "maxItems": MAX_RECORDS}]}}}}},
        responses={200: {"description": "one answer per record (a list for a list)",
                         "content": {JSON: {"schema": {"anyOf": [
                             answer_schema, {"type": "array", "items": answer_schema}]}}}},
                   413: {"description": "body too large"},
                   415: {"description": "the body is not JSON (Content-Type)"},
                   422: {"description": "invalid records: one message per problem"},
                   503: {"description": "the registry could not record the answer"}})

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
             dependencies=[Depends(require_json)],
             responses={415: {"description": "the body is not JSON (Content-Type)"},
                        404: {"description": "no prediction with this request id"},
                        409: {"description": "feedback for this request id already recorded"},
                        422: {"description": "invalid outcome"}})(give_feedback)

    @app.get("/health", summary="Liveness and readiness")
    async def health() -> Response:
        ready = registry.healthy
        return _json({"live": True, "ready": ready, "status": "ok" if ready else "not ready",
                      "variants": {n: v.scorer.version
                                   for n, v in service.variants.items()}},
                     200 if ready else 503)

    @app.get("/metadata", summary="Signature, model card, versions, deployment in force")
    async def metadata() -> Response:
        return _json({
            "deployment": router.state(),
            "variants": {n: {"model_version": v.scorer.version, "engine": v.scorer.engine,
                             "source": v.source, "lineage": v.scorer.lineage}
                         for n, v in service.variants.items()},
            "signature": live.signature,
            "inference": live.public_inference(),
            "model_card": live.model_card_summary(),
            "limits": {"max_records": MAX_RECORDS, "max_body_bytes": MAX_BODY_BYTES},
        })

    def admin(body: type[BaseModel] | None = None, required: bool = True):
        """The one dependency of every /admin route: the token first (nobody without it gets
        a body parsed: 403 when admin is disabled, 401 for a missing or wrong token), then the
        route's body, if it takes one: declared JSON (415), valid (422, one line naming the
        field); an empty body is None when not `required`."""
        adapter = TypeAdapter(body) if body is not None else None

        async def check(request: Request) -> BaseModel | None:
            if not admin_token:
                raise HTTPException(403, f"admin endpoints are disabled: start the server "
                                         f"with {ADMIN_TOKEN_ENV} set")
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {admin_token}".encode()):
                raise HTTPException(401, "missing or wrong admin token (Authorization: "
                                         "Bearer ...)")
            if adapter is None:
                return None
            raw = await request.body()
            if not required and not raw.strip():
                return None
            if not is_json(request.headers.get("content-type")):
                raise HTTPException(415, f"send the body as {JSON}")
            try:
                return adapter.validate_json(raw)
            except ValidationError as exc:
                raise HTTPException(422, one_line(exc)) from None

        return Depends(check)

    def change(step, *args) -> dict:
        """A deployment change; one the deployment's state refuses is a 409 with its line."""
        try:
            return step(*args)
        except StageError as exc:
            raise HTTPException(409, str(exc)) from None

    admin_responses = {401: {"description": "missing or wrong token"},
                       403: {"description": "admin disabled (no token configured)"},
                       409: {"description": "not possible in this deployment's state"}}
    body_responses = {**admin_responses, 415: {"description": "the body is not JSON"},
                      422: {"description": "invalid body"}}

    def body_schema(model: type[BaseModel], required: bool) -> dict:
        return {"requestBody": {"required": required, "content": {JSON: {
            "schema": model.model_json_schema()}}}}

    # the dependencies of the routes that take a body (token, then body)
    switch_body, share_body, load_body = admin(Switch, required=False), admin(Share), admin(Load)

    @app.post("/admin/switch", summary="Blue/green: make a slot live", tags=["admin"],
              responses=body_responses, openapi_extra=body_schema(Switch, False))
    async def switch(wanted: Switch | None = switch_body) -> Response:
        state = change(router.switch, wanted.to if wanted else None)
        log.warning("blue/green: %s is live (was %s)", state["live"], state.get("previous"))
        return _json(state)

    @app.post("/admin/rollback", summary="Blue/green: make the previous slot live again",
              tags=["admin"], responses=admin_responses, dependencies=[admin()])
    async def rollback() -> Response:
        state = change(router.rollback)
        log.warning("blue/green: rolled back, %s is live", state["live"])
        return _json(state)

    @app.post("/admin/share", summary="Canary: the challenger's share of customers",
              tags=["admin"], responses=body_responses, openapi_extra=body_schema(Share, True))
    async def share(wanted: Share = share_body) -> Response:
        state = change(router.ramp, wanted.share)
        log.warning("canary: challenger %s now answers %.0f%% of customers", state["challenger"],
                    wanted.share * 100)
        return _json(state)

    loading = asyncio.Lock()  # one load at a time: two would race for the idle slot

    @app.post("/admin/load", summary="Load a bundle into an idle slot of the running server",
              tags=["admin"],
              responses={**body_responses, 422: {"description": "invalid body, or a bundle "
                                                 "that cannot be served (tampered, outside the "
                                                 "root, unknown)"}},
              openapi_extra=body_schema(Load, True))
    async def load(spec: Load = load_body) -> Response:
        # the bundle is fetched and verified off the event loop; requests go on meanwhile,
        # and the slot changes in one step on the loop (`PredictionService.replace`)
        if spec.slot not in service.variants or spec.slot == router.live:
            return _json({"detail": f"slot: {spec.slot!r} is not an idle slot "
                                    f"(slots {list(service.variants)}, live {router.live})"},
                         409)
        if loading.locked():
            return _json({"detail": "another load is in progress: try again after it"}, 409)
        async with loading:
            from starlette.concurrency import run_in_threadpool

            from lifecycle.serving.deploy import VariantSpec, fetch_bundle
            from lifecycle.serving.scoring import load_scorer

            try:
                if spec.bundle is not None:
                    if root is None:
                        return _json({"detail": "bundle: loading by path is disabled: start "
                                                "the server with --bundle-root"}, 403)
                    path, source = under_root(spec.bundle, root), spec.bundle
                else:
                    if repo is None:
                        return _json({"detail": "version/stage: this server has no repo to "
                                                "resolve versions in"}, 403)
                    wanted = VariantSpec(version=spec.version, stage=spec.stage)
                    field = "version" if spec.version else "stage"
                    try:
                        path = await run_in_threadpool(fetch_bundle, wanted,
                                                       deployment.model, repo)
                    except StageError as exc:
                        raise StageError(f"{field}: {exc}") from exc
                    except Exception as exc:  # noqa: BLE001 - git/DVC/GTO failures: one line
                        log.exception("admin load: %s could not be fetched", wanted)
                        raise StageError(f"{field}: cannot fetch it: {type(exc).__name__}: "
                                         f"{exc}") from exc
                    source = (f"{deployment.model}@{spec.version}" if spec.version
                              else f"{deployment.model}#{spec.stage}")
                try:
                    scorer = await run_in_threadpool(load_scorer, path, deployment.engine)
                except StageError as exc:  # BundleError: a file differs from its manifest
                    raise StageError(f"bundle: {source} refused: {exc}") from exc
                except Exception as exc:  # noqa: BLE001 - any unreadable bundle: one line
                    log.exception("admin load: %s could not be loaded", path)
                    raise StageError(f"bundle: {source} could not be loaded: "
                                     f"{type(exc).__name__}: {exc}") from exc
            except StageError as exc:
                return _json({"detail": str(exc).splitlines()[0][:500]}, 422)
            try:
                old = service.replace(spec.slot, Variant(spec.slot, scorer, source))
            except StageError as exc:  # switched meanwhile, or another signature
                return _json({"detail": str(exc)}, 409)
        log.warning("admin load: slot %s now holds %s (%s), was %s", spec.slot,
                    scorer.version, source, old.scorer.version)
        return _json({"slot": spec.slot, "model_version": scorer.version, "source": source,
                      "previous_version": old.scorer.version, "deployment": router.state()})

    @app.get("/admin/outcomes", summary="Outcomes per variant, from feedback (A/B)",
             tags=["admin"], responses=admin_responses, dependencies=[admin()])
    async def outcomes() -> Response:
        from starlette.concurrency import run_in_threadpool

        from lifecycle.serving.registry import outcomes_by_variant

        return _json(await run_in_threadpool(outcomes_by_variant, registry.url))

    _document(app, Record, live)
    if metrics:  # outermost of the app's own middleware: it times and counts every route
        app.add_middleware(MetricsMiddleware, metrics=ServingMetrics(lambda: service.variants),
                           routes=[r.path for r in app.routes])
    return app


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
                "model_version": {"type": "string"}, "variant": {"type": "string"},
                "reasons": {"type": "object", "description": "with ?reasons=N: the N inputs "
                            "that moved this answer most (method, units, top: feature, value, "
                            "contribution)"}}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def admin_token_from_env() -> str | None:
    return os.environ.get(ADMIN_TOKEN_ENV) or None
