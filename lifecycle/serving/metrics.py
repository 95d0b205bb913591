"""Prometheus metrics of the API (`GET /metrics`), with `prometheus-client`.

`MetricsMiddleware` is plain ASGI around the whole app (so it times /predict from the first
byte in to the last byte out, errors included); handlers only say what happened to a request
in its scope state: `reject_reason` for a refused /predict, `answers` for the answered records.
Everything lives in a registry of its own (two apps in one process do not collide).

    serving_requests_total{route, method, status}      every HTTP request answered
    serving_request_duration_seconds{route}            histogram: receipt to last byte
    serving_rejects_total{reason}                      /predict refused: not_json (415),
                                                       invalid_json, invalid_shape (422),
                                                       too_large (413), not_recorded (503:
                                                       the registry), error (500), or the
                                                       input check's kind of its first problem
                                                       (422: wrong_type, missing,
                                                       out_of_range, rule, ...)
    serving_score{variant}                             histogram of each answer's score
    serving_reference_score{variant, quantile}         the bundle's validation score quantiles
    serving_model_info{variant, model_version, engine} 1 per loaded variant

Routes outside the app's own (a scanner's 404s) are counted as route="other", so the label
sets stay bounded. The alert rules over these are deploy/prometheus/rules.yml.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)

# seconds: fine around the latency targets (p50 1.5 ms, p99 3 ms), coarse up to a stall
LATENCY_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 ... 0.95
REJECT_REASONS = ("not_json", "invalid_json", "invalid_shape", "too_large", "not_recorded",
                  "error")  # and the input check's kinds, named by the handler
REASON = re.compile(r"[a-z_]{1,32}")  # a kind from our own code, never request text
METHODS = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}
PREDICT = "/predict"


class ServingMetrics:
    """The metrics of one API over its loaded variants ({name: Scorer})."""

    def __init__(self, variants: Mapping[str, object]):
        disable_created_metrics()  # no *_created series: half the scrape, nothing lost
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (process_collector.ProcessCollector,
                          platform_collector.PlatformCollector, gc_collector.GCCollector):
            collector(registry=self.registry)
        scorers = {name: getattr(v, "scorer", v) for name, v in variants.items()}
        self.requests = Counter("serving_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.duration = Histogram("serving_request_duration_seconds",
                                  "time from receipt of a request to its answer", ["route"],
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rejects = Counter("serving_rejects", "/predict requests refused, by reason",
                               ["reason"], registry=self.registry)
        self.score = Histogram("serving_score", "score of each answered record: probability "
                               "(classification) or prediction (regression)", ["variant"],
                               buckets=_score_buckets(scorers.values()), registry=self.registry)
        reference = Gauge("serving_reference_score", "the bundle's validation score quantiles "
                          "(reference_stats.json)", ["variant", "quantile"],
                          registry=self.registry)
        info = Gauge("serving_model_info", "1 for each loaded variant's model version",
                     ["variant", "model_version", "engine"], registry=self.registry)
        self._score_field = {}
        self._score_of = {}
        for name, scorer in scorers.items():
            info.labels(name, scorer.version, scorer.engine).set(1)
            for q, value in _reference_quantiles(scorer).items():
                reference.labels(name, q).set(value)
            self._score_of[name] = self.score.labels(name)
            self._score_field[name] = "prediction" if scorer.task == "regression" \
                else "probability"
        for reason in REJECT_REASONS:  # present at 0 from the start: rate() sees the first
            self.rejects.labels(reason)
        self.requests.labels(PREDICT, "POST", "200")  # and no traffic is a 0, not no series
        self._children: dict[tuple, tuple] = {}

    def observe(self, route: str, method: str, status: int, seconds: float,
                state: Mapping | None) -> None:
        """One answered request; `state` is its scope state (reject reason, answers)."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(route, method, str(status)),
                                              self.duration.labels(route))
        children[0].inc()
        children[1].observe(seconds)
        if route != PREDICT or method != "POST":
            return
        if status >= 400:
            self.rejects.labels(_reason(status, state)).inc()
        elif state and (answers := state.get("answers")):
            for answer in answers:
                if answer is not None and answer.get("variant") in self._score_of:
                    value = answer.get(self._score_field[answer["variant"]])
                    if isinstance(value, int | float):
                        self._score_of[answer["variant"]].observe(value)

    def exposition(self) -> tuple[bytes, str]:
        """The text format Prometheus scrapes, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _reason(status: int, state: Mapping | None) -> str:
    given = state.get("reject_reason") if state else None
    if isinstance(given, str) and REASON.fullmatch(given):
        return given
    return {413: "too_large", 415: "not_json", 503: "not_recorded"}.get(
        status, "invalid" if 400 <= status < 500 else "error")


def _score_buckets(scorers: Iterable) -> tuple[float, ...]:
    """Probabilities: a 0.05 grid. Regression: the union of the variants' reference quantile
    edges (so each bucket holds about 1/bins of the validation predictions)."""
    scorers = list(scorers)
    if all(s.task != "regression" for s in scorers):
        return PROBABILITY_BUCKETS
    edges = {e for s in scorers if s.task == "regression"
             for e in _prediction_profile(s).get("edges", [])}
    return tuple(sorted(edges)) or Histogram.DEFAULT_BUCKETS


def _reference_quantiles(scorer) -> dict[str, float]:
    """{"0.1": ..., "0.5": ..., "0.9": ...} from the bundle's decile (or other) edges; none
    when ties merged edges (then the quantile each edge stands for is not known)."""
    profile = _prediction_profile(scorer)
    edges, bins = profile.get("edges", []), profile.get("bins")
    if not bins or len(edges) != bins - 1:
        return {}
    return {f"{i / bins:g}": float(edge) for i, edge in enumerate(edges, start=1)}


def _prediction_profile(scorer) -> dict:
    try:
        stats = scorer.bundle.reference_stats
    except (AttributeError, KeyError):
        return {}
    return {**stats.get("prediction", {}), "bins": stats.get("bins")}


class MetricsMiddleware:
    """ASGI middleware: counts and times every HTTP request, answers GET /metrics itself."""

    def __init__(self, app, metrics: ServingMetrics, routes: Iterable[str]):
        self.app, self.metrics = app, metrics
        self.routes = frozenset(routes) | {"/metrics"}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        received = time.perf_counter()
        path, method = scope["path"], scope["method"]
        if path == "/metrics" and method == "GET":
            status = await self._scrape(send)
            self.metrics.observe(path, method, status, time.perf_counter() - received, None)
            return None
        status = 500  # unless the app starts a response: an exception escaped

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        state = scope.setdefault("state", {})
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(path if path in self.routes else "other",
                                 method if method in METHODS else "other", status,
                                 time.perf_counter() - received, state)
        return None

    async def _scrape(self, send) -> int:
        body, content_type = self.metrics.exposition()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return 200
