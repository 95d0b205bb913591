"""Command line: `python -m lifecycle.serving {serve,predict,export,outcomes}`.

  serve     the HTTP API on 127.0.0.1 (make serve PORT=8000 DEPLOY=deploy/single.yaml)
  predict   score a CSV/Parquet/JSON Lines file (make predict INPUT=... OUTPUT=...)
  export    the inference registry to Parquet (make registry-export)
  outcomes  outcomes per variant from feedback (A/B)
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time

from lifecycle.errors import StageError
from lifecycle.serving.registry import DEFAULT_URL


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lifecycle.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    registry_url = os.environ.get("REGISTRY_URL", DEFAULT_URL)

    serve = sub.add_parser("serve", help="the real-time HTTP API")
    where = serve.add_mutually_exclusive_group()
    where.add_argument("--deployment", help="a deployment file (deploy/*.yaml)")
    where.add_argument("--bundle", default="models/bundle", help="serve one bundle directory")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    serve.add_argument("--registry", default=registry_url, help="SQLAlchemy URL")
    serve.add_argument("--durability", choices=["normal", "full"], default="normal",
                       help="SQLite: normal survives a server crash, full also power loss")
    serve.add_argument("--repo", default=".", help="the git+DVC repo that versions come from")
    serve.add_argument("--bundle-root",
                       help="POST /admin/load may load bundle directories from under this "
                            "folder only (default: none, by version or stage only)")
    serve.add_argument("--request-timeout", type=float, default=10.0,
                       help="seconds a client has to send one whole request (408 after)")
    serve.add_argument("--no-metrics", action="store_true",
                       help="leave out GET /metrics (Prometheus) and its instrumentation")
    serve.add_argument("--max-head-bytes", type=int, default=32 * 1024,
                       help="request line + headers at most this many bytes (431 beyond)")

    predict = sub.add_parser("predict", help="score a file with a bundle")
    predict.add_argument("--bundle", default="models/bundle")
    predict.add_argument("--input", required=True, help=".csv, .parquet or .jsonl")
    predict.add_argument("--output", required=True, help=".csv, .parquet or .jsonl")
    predict.add_argument("--rejects", help="default: <output>.rejects.<ext>")
    predict.add_argument("--chunk-rows", type=int, default=50_000)
    predict.add_argument("--engine", choices=["onnx", "sklearn"], default="onnx")

    export = sub.add_parser("export", help="the inference registry to Parquet")
    export.add_argument("--registry", default=registry_url)
    export.add_argument("--output", default="data/registry/predictions.parquet")

    outcomes = sub.add_parser("outcomes", help="outcomes per variant, from feedback")
    outcomes.add_argument("--registry", default=registry_url)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"{args.command}: %(message)s")
    start = time.perf_counter()
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "predict":
            from lifecycle.serving.batch import run

            summary = run(args.bundle, args.input, args.output, args.rejects, args.chunk_rows,
                          args.engine)
        elif args.command == "export":
            from lifecycle.serving.registry import export_parquet

            rows = export_parquet(args.registry, args.output)
            summary = f"{rows} prediction rows -> {args.output}"
        else:
            import json

            from lifecycle.serving.registry import outcomes_by_variant

            print(json.dumps(outcomes_by_variant(args.registry), indent=2))
            return None
    except Exception as exc:  # noqa: BLE001 - user-facing: one line, non-zero exit
        if not _expected(exc):
            raise
        print(f"{args.command}: error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"{args.command}: {summary} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return None


def _expected(exc: Exception) -> bool:
    """Errors the user must fix (bad file, tampered bundle, bad deployment, DB down)."""
    import sqlalchemy as sa

    from lifecycle.packaging.store import BundleError

    return isinstance(exc, StageError | BundleError | sa.exc.SQLAlchemyError)


def _serve(args) -> None:
    from lifecycle.extras import require

    require("serve", "the real-time API")
    from lifecycle.serving.app import admin_token_from_env, create_app, load_variants
    from lifecycle.serving.deploy import load_deployment, single
    from lifecycle.serving.registry import Registry
    from lifecycle.serving.server import serve

    deployment = load_deployment(args.deployment) if args.deployment else single(args.bundle)
    variants = load_variants(deployment, args.repo)
    registry = Registry(args.registry, args.durability).start()
    try:
        app = create_app(deployment, variants, registry, admin_token_from_env(),
                         metrics=not args.no_metrics, repo=args.repo,
                         bundle_root=args.bundle_root)
        shown = ", ".join(f"{n}={v.scorer.version} ({v.scorer.engine})"
                          for n, v in variants.items())
        print(f"serve: http://{args.host}:{args.port} deployment {deployment.name} "
              f"({deployment.strategy}): {shown}; registry {_redact(args.registry)}",
              file=sys.stderr, flush=True)
        # Objects alive now (modules, bundles, the app) never become garbage: keep the
        # collector from walking them again and again under load (p99 pauses).
        gc.collect()
        gc.freeze()
        serve(app, args.host, args.port, request_timeout=args.request_timeout,
              max_head_bytes=args.max_head_bytes)
    finally:
        registry.close()


def _redact(url: str) -> str:
    import re

    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


if __name__ == "__main__":
    main()
