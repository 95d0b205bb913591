"""A bounded HTTP load generator (asyncio + aiohttp) for tests and bench/serving.py.

Sends `requests` POSTs, `concurrency` at a time, cycling over the given JSON bodies, and
reports latency percentiles, throughput, status counts and the request ids that were
answered. Run it from its own process when measuring (`python -m lifecycle.serving.loadgen`)
so that the client does not share a CPU budget with the server's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np


async def run_load(url: str, bodies: list[bytes], requests: int, concurrency: int,
                   timeout: float = 30.0, stop: Callable[[], bool] | None = None,
                   on_answer: Callable[[dict], None] | None = None,
                   warmup: int = 0) -> dict:
    """POST bodies to `url`; a refused or failed request counts as an error, not an answer.

    `stop()` ends the load early when it turns true; `on_answer(json)` sees every 200.
    """
    import aiohttp

    latencies: list[float] = []
    statuses: Counter = Counter()
    errors: Counter = Counter()
    answered: list = []
    issued = 0
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        for i in range(warmup):
            async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
                await r.read()

        async def worker() -> None:
            nonlocal issued
            while issued < requests and not (stop and stop()):
                body = bodies[issued % len(bodies)]
                issued += 1
                start = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        payload = await response.read()
                        status = response.status
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    errors[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - start)
                statuses[status] += 1
                if status == 200:
                    answer = json.loads(payload)
                    answered.append(answer)
                    if on_answer:
                        on_answer(answer)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return summarize(latencies, elapsed, statuses, errors, answered, concurrency)


def summarize(latencies, elapsed, statuses, errors, answered, concurrency) -> dict:
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "concurrency": concurrency,
        "requests": len(latencies) + sum(errors.values()),
        "seconds": elapsed,
        "throughput_rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "answered": answered,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", required=True, help="a file with one JSON body per line")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--output", help="write the full result (answers included) here")
    args = parser.parse_args(argv)
    bodies = [line.encode() for line in Path(args.bodies).read_text().splitlines() if line]
    try:
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run
    result = run_loop(run_load(args.url, bodies, args.requests, args.concurrency,
                               warmup=args.warmup))
    if args.output:
        Path(args.output).write_text(json.dumps(result))
    shown = {k: v for k, v in result.items() if k != "answered"}
    print(json.dumps(shown), file=sys.stdout)


if __name__ == "__main__":
    main()
