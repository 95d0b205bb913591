"""Prometheus metrics of an events worker, served on their own port (`--metrics-port`): a
worker is no HTTP server, so it exposes them the way batch jobs and consumers usually do
(prometheus_client's exporter thread).

  lifecycle_events_total{outcome}          answered | dead_letter | outcome (feedback recorded)
  lifecycle_events_batches_total{path}     columns | records
  lifecycle_events_claimed_total           events taken over from a consumer that stopped
  lifecycle_events_batch_seconds           read -> acknowledged, per micro-batch
  lifecycle_events_lag{stream}             events not yet delivered to the group
  lifecycle_events_pending{stream}         delivered, not yet acknowledged
"""

from __future__ import annotations


class WorkerMetrics:
    def __init__(self, port: int, host: str = "127.0.0.1"):
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            start_http_server,
        )

        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter("lifecycle_events", "events handled, by outcome", ["outcome"],
                              registry=self.registry)
        self.batches = Counter("lifecycle_events_batches", "micro-batches, by path", ["path"],
                               registry=self.registry)
        self.claimed = Counter("lifecycle_events_claimed",
                               "events taken over from a consumer that stopped",
                               registry=self.registry)
        self.seconds = Histogram("lifecycle_events_batch_seconds",
                                 "a micro-batch from read to acknowledged",
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5),
                                 registry=self.registry)
        self.lag = Gauge("lifecycle_events_lag", "events not yet delivered to the group",
                         ["stream"], registry=self.registry)
        self.pending = Gauge("lifecycle_events_pending", "events delivered, not acknowledged",
                             ["stream"], registry=self.registry)
        self.server, self.thread = start_http_server(port, host, registry=self.registry)

    def batch(self, answered: int, dead: int, outcomes: int, fast: bool,
              seconds: float) -> None:
        self.events.labels("answered").inc(answered)
        self.events.labels("dead_letter").inc(dead)
        self.events.labels("outcome").inc(outcomes)
        self.batches.labels("columns" if fast else "records").inc()
        self.seconds.observe(seconds)

    def backlog(self, lag: dict[str, dict]) -> None:
        for stream, values in lag.items():
            if values.get("lag") is not None:
                self.lag.labels(stream).set(values["lag"])
            self.pending.labels(stream).set(values["pending"])

    def close(self) -> None:
        self.server.shutdown()
