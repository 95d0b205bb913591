"""Command line: `python -m lifecycle.events {consume,produce}` (README "Events").

  consume   the worker: request events -> checked, scored, recorded, answered (make consume)
  produce   send the rows of a CSV/Parquet/JSON Lines file as request events (make produce)

The server URL is redis://[:password@]host:port/db; write the password as ${VAR} so that it is
read from the environment (and never printed): REDIS_URL='redis://:${REDIS_PASSWORD}@host:6379/0'.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from lifecycle.errors import StageError
from lifecycle.extras import MissingExtra, require

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def main(argv: list[str] | None = None) -> None:
    try:  # the worker scores with the serving code and talks to Redis: both extras
        require("events", "python -m lifecycle.events")
        require("serve", "python -m lifecycle.events")
    except MissingExtra as exc:
        print(f"events: error: {exc}", file=sys.stderr)
        sys.exit(1)
    from lifecycle.events.worker import MAX_EVENT_BYTES, Streams, default_consumer
    from lifecycle.serving.registry import DEFAULT_URL

    parser = argparse.ArgumentParser(prog="python -m lifecycle.events", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS)
    names = Streams()

    consume = sub.add_parser("consume", help="the event worker")
    consume.add_argument("--bundle", default="models/bundle")
    consume.add_argument("--redis", default=redis_url, help="redis://[:${VAR}@]host:port/db")
    consume.add_argument("--registry", default=os.environ.get("REGISTRY_URL", DEFAULT_URL))
    consume.add_argument("--durability", choices=["normal", "full"], default="full",
                         help="SQLite: full (default) fsyncs each micro-batch's commit, so an "
                         "answer published is recorded even after a power loss; normal "
                         "survives a crash of the worker only")
    consume.add_argument("--requests", default=names.requests, help="input stream")
    consume.add_argument("--answers", default=names.answers, help="output stream")
    consume.add_argument("--dead-letter", default=names.dead_letter)
    consume.add_argument("--feedback", default=names.feedback, help="outcome events")
    consume.add_argument("--group", default="lifecycle", help="consumer group")
    consume.add_argument("--consumer", default=default_consumer(), help="this worker's name")
    consume.add_argument("--batch", type=int, default=5000, help="events per micro-batch (at most)")
    consume.add_argument("--block-ms", type=int, default=50,
                         help="how long a read waits for the first event")
    consume.add_argument("--claim-idle-ms", type=int, default=30_000,
                         help="take over another worker's events pending this long")
    consume.add_argument("--max-event-bytes", type=int, default=MAX_EVENT_BYTES)
    consume.add_argument("--max-len", type=int, default=1_000_000,
                         help="cap (approximate) of the answers and dead-letter streams")
    consume.add_argument("--log-every", type=float, default=10.0, help="seconds between "
                         "progress lines (and lag gauges)")
    consume.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on "
                         "127.0.0.1:PORT/metrics")

    produce = sub.add_parser("produce", help="send a file's rows as request events")
    produce.add_argument("--input", required=True, help=".csv, .parquet or .jsonl")
    produce.add_argument("--redis", default=redis_url)
    produce.add_argument("--stream", default=names.requests)
    produce.add_argument("--columns-of", default="models/bundle",
                         help="send only the signature's fields of this bundle ('' for all)")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    try:
        if args.command == "consume":
            return _consume(args)
        return _produce(args)
    except (StageError, ValueError, OSError) as exc:
        print(f"{args.command}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - a broker or database down: one line
        if not _expected(exc):
            raise
        print(f"{args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)


def _expected(exc: Exception) -> bool:
    import redis
    import sqlalchemy as sa

    from lifecycle.packaging.store import BundleError

    return isinstance(exc, redis.RedisError | sa.exc.SQLAlchemyError | BundleError)


def _consume(args) -> None:
    from lifecycle.events.broker import RedisBroker, expand_env, redact
    from lifecycle.events.worker import Streams, Worker
    from lifecycle.serving.registry import Registry
    from lifecycle.serving.scoring import load_scorer

    streams = Streams(args.requests, args.answers, args.dead_letter, args.feedback)
    scorer = load_scorer(args.bundle)
    broker = RedisBroker(expand_env(args.redis), [streams.requests, streams.feedback],
                         args.group, args.consumer, max_len=args.max_len)
    registry = Registry(args.registry, args.durability).start()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    print(f"consume: {redact(args.redis)} {streams.requests} -> {streams.answers} "
          f"(group {args.group}, consumer {args.consumer}), model {scorer.version}, "
          f"registry {redact(args.registry)}", file=sys.stderr, flush=True)
    metrics = None
    if args.metrics_port:
        from lifecycle.events.metrics import WorkerMetrics

        metrics = WorkerMetrics(args.metrics_port)
    worker = Worker(broker, scorer, registry, streams, batch=args.batch,
                    block_ms=args.block_ms, claim_idle_ms=args.claim_idle_ms,
                    max_event_bytes=args.max_event_bytes, log_every=args.log_every,
                    metrics=metrics)
    try:
        worker.run(stop=lambda: bool(stopping))
    finally:
        worker.close()
        registry.close()
        if metrics:
            metrics.close()
        broker.close()


def _produce(args) -> None:
    import time

    from lifecycle.events.broker import connect, expand_env
    from lifecycle.events.producer import produce_file

    start = time.perf_counter()
    client = connect(expand_env(args.redis))
    sent = produce_file(client, args.stream, args.input, args.columns_of or None)
    seconds = time.perf_counter() - start
    print(f"produce: {sent} events -> {args.stream} ({sent / max(seconds, 1e-9):,.0f} "
          f"events/s)", file=sys.stderr)


if __name__ == "__main__":
    main()
