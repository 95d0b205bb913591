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
    serving_score{variant, model_version}              histogram of each answer's score
    serving_reference_score{variant, model_version,    the validation score quantiles of the
                            quantile}                  bundle each variant serves now
    serving_model_info{variant, model_version, engine} 1 per loaded variant

The last two are read from the loaded variants at each scrape: a bundle loaded into a slot
(POST /admin/load) replaces its slot's series at once, so the reference always belongs to the
version that answers, and `model_version` on the score histogram keeps the answers of the old
and the new bundle apart (the alert rules join the two on variant and model_version).

Routes outside the app's own (a scanner's 404s) are counted as route="other", so the label
sets stay bounded. The alert rules over these are deploy/prometheus/rules.yml.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)
from prometheus_client.core import GaugeMetricFamily

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
    """The metrics of one API; `variants()` gives the variants loaded now ({name: Variant or
    Scorer}), read again at every scrape."""

    def __init__(self, variants: Callable[[], Mapping[str, object]]):
        disable_created_metrics()  # no *_created series: half the scrape, nothing lost
        self.registry = CollectorRegistry(auto_describe=True)
        for collector in (process_collector.ProcessCollector,
                          platform_collector.PlatformCollector, gc_collector.GCCollector):
            collector(registry=self.registry)
        self.variants = variants
        scorers = _scorers(variants())
        self.requests = Counter("serving_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.duration = Histogram("serving_request_duration_seconds",
                                  "time from receipt of a request to its answer", ["route"],
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self.rejects = Counter("serving_rejects", "/predict requests refused, by reason",
                               ["reason"], registry=self.registry)
        self.score = Histogram("serving_score", "score of each answered record: probability "
                               "(classification) or prediction (regression)",
                               ["variant", "model_version"],
                               buckets=_score_buckets(scorers.values()), registry=self.registry)
        self.registry.register(LoadedVariants(variants))
        # a slot keeps its task: a bundle predicting other outcomes is never loaded into it
        self._score_field = {name: "prediction" if scorer.task == "regression"
                             else "probability" for name, scorer in scorers.items()}
        self._score_of: dict[tuple[str, str], object] = {}
        self._score_children()
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
                if answer is None or (variant := answer.get("variant")) not in \
                        self._score_field:
                    continue
                value = answer.get(self._score_field[variant])
                if isinstance(value, int | float):
                    key = (variant, str(answer.get("model_version")))
                    child = self._score_of.get(key)
                    if child is None:
                        child = self._score_of[key] = self.score.labels(*key)
                    child.observe(value)

    def _score_children(self):
        """Each loaded variant's score series, present at 0 before its first answer: rate()
        then sees the first answers of a new bundle too (a series born at 10 shows no rate)."""
        for name, scorer in _scorers(self.variants()).items():
            key = (name, str(scorer.version))
            if name in self._score_field and key not in self._score_of:
                self._score_of[key] = self.score.labels(*key)

    def exposition(self) -> tuple[bytes, str]:
        """The text format Prometheus scrapes, and its content type."""
        self._score_children()  # a reloaded bundle's series appears at its first scrape
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class LoadedVariants:
    """A collector of serving_reference_score and serving_model_info over the variants loaded
    at scrape time (so a reload or a switch never leaves the start-up bundle's numbers)."""

    def __init__(self, variants: Callable[[], Mapping[str, object]]):
        self.variants = variants
        self._quantiles: dict[str, dict[str, float]] = {}  # by bundle version: read once

    def collect(self):
        reference = GaugeMetricFamily(
            "serving_reference_score", "the validation score quantiles (reference_stats.json) "
            "of the bundle each variant serves", labels=["variant", "model_version", "quantile"])
        info = GaugeMetricFamily("serving_model_info", "1 for each loaded variant's model "
                                 "version", labels=["variant", "model_version", "engine"])
        for name, scorer in _scorers(self.variants()).items():
            info.add_metric([name, scorer.version, scorer.engine], 1)
            if scorer.version not in self._quantiles:
                self._quantiles[scorer.version] = _reference_quantiles(scorer)
            for q, value in self._quantiles[scorer.version].items():
                reference.add_metric([name, scorer.version, q], value)
        return [reference, info]


def _scorers(variants: Mapping[str, object]) -> dict[str, object]:
    return {name: getattr(v, "scorer", v) for name, v in variants.items()}


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
