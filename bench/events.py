"""Benchmark event-driven inference against the HTTP API, side by side in one run, same rows,
same bundle, every answer committed to a SQLite inference registry (WAL) before it is sent.

Events: a Redis server (Debian redis-server, started here on a free port), one worker
(`python -m lifecycle.events consume`), a producer process adding request events with
pipelined XADD.
  - throughput: a backlog of --backlog events, added before the worker starts, drained;
    events/s = events / (last answer added - first answer added);
  - latency at a steady rate (--rates, events/s, for --seconds each): end-to-end, event added
    -> answer added, both as Redis stamps them (event ids are the server's milliseconds),
    so the figure is to the millisecond and counts no client.
HTTP: `python -m lifecycle.serving serve`, one record per request at concurrency 32
(lifecycle.serving.loadgen, its own process), as bench/serving.py measures it.

The machine's load average is printed with the figures: it is shared, and the numbers move
with it.

Usage: python bench/events.py [--bundle models/bundle] [--rows data/processed/validation.parquet]
       [--backlog 200000] [--rates 25000,50000] [--seconds 10] [--batch 5000] [--workers 1]
       [--requests 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
       "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1"}
sys.path.insert(0, str(ROOT))
from tests.helpers_process import (  # noqa: E402 - the tests' own
    free_port,
    http_ok,
    stop_process,
    wait_ready,
)


def start_redis(work: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if not binary:
        raise SystemExit("redis-server not found: apt-get install redis-server "
                         "(tools/system-packages.sh)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                             str(work), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    wait_ready(proc, redis.Redis.from_url(url).ping, "redis-server", timeout=10,
               not_yet=(redis.ConnectionError,), every=0.05)
    return proc, url


def start_workers(n: int, url: str, bundle: Path, registry: Path, prefix: str, batch: int,
                  log: Path) -> list[subprocess.Popen]:
    """`n` workers of one consumer group, sharing the stream and the registry."""
    return [start_worker(url, bundle, registry, prefix, batch,
                         log.with_name(f"{log.stem}-{i}.log"), f"worker-{i}")
            for i in range(n)]


def start_worker(url: str, bundle: Path, registry: Path, prefix: str, batch: int,
                 log: Path, name: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(BIN / "python"), "-m", "lifecycle.events", "consume", "--bundle", str(bundle),
         "--consumer", name,
         "--redis", url, "--registry", f"sqlite:///{registry}", "--batch", str(batch),
         "--requests", f"{prefix}:requests", "--answers", f"{prefix}:answers",
         "--dead-letter", f"{prefix}:dead-letter", "--feedback", f"{prefix}:feedback",
         "--log-every", "5"], env=ENV, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    wait_ready(proc, lambda: "consume: redis" in log.read_text(), "events worker", log,
               timeout=120)
    return proc


def wait_answers(client, stream: str, n: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while client.xlen(stream) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {client.xlen(stream)}/{n} answers after {timeout} s")
        time.sleep(0.05)


def answers(client, stream: str) -> list[tuple[int, int]]:
    """(request added ms, answer added ms) for every answer, from the event ids."""
    out, start = [], "-"
    while True:
        chunk = client.xrange(stream, min=start, count=50_000)
        if not chunk:
            return out
        for answer_id, fields in chunk:
            request = json.loads(fields[b"data"])["request_id"]
            out.append((int(request.split("-")[0]), int(answer_id.split(b"-")[0])))
        start = b"(" + chunk[-1][0]


PRODUCER = """
import sys, time, redis
url, stream, payloads = sys.argv[1:4]
rate, seconds = float(sys.argv[4]), float(sys.argv[5])
bodies = open(payloads, "rb").read().splitlines()
head = b"*5\\r\\n$4\\r\\nXADD\\r\\n$%d\\r\\n%s\\r\\n$1\\r\\n*\\r\\n$4\\r\\ndata\\r\\n" % (
    len(stream), stream.encode())
packed = [head + b"$%d\\r\\n%s\\r\\n" % (len(b), b) for b in bodies]  # XADD stream * data body
connection = redis.Redis.from_url(url).connection_pool.get_connection()
n, total = 0, int(rate * seconds)
start = time.perf_counter()
while n < total:
    due = min(total, int((time.perf_counter() - start) * rate) + 1)
    if due > n:
        connection.send_packed_command([b"".join(packed[i % len(packed)] for i in range(n, due))])
        for _ in range(due - n):
            connection.read_response()
        n = due
    time.sleep(0.001)
print(time.perf_counter() - start - seconds)
"""


def produce(url: str, stream: str, payloads: Path, rate: float, seconds: float) -> float:
    """Add `rate` events/s for `seconds` from a process of its own; returns how late it
    finished (seconds): well above 0, the producer could not keep the rate."""
    out = subprocess.run([str(BIN / "python"), "-c", PRODUCER, url, stream, str(payloads),
                          str(rate), str(seconds)], env=ENV, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the producer failed:\n{out.stderr}")
    return float(out.stdout.strip())


def backlog(client, stream: str, bodies: list[bytes], n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, {b"data": bodies[i % len(bodies)]})
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


def summary(pairs: list[tuple[int, int]]) -> dict:
    ms = np.array([a - r for r, a in pairs], dtype=float)
    first, last = min(a for _, a in pairs), max(a for _, a in pairs)
    return {"events": len(pairs), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
            "events_per_s": len(pairs) / max((last - first) / 1000, 1e-3)}


def http_api(bundle: Path, work: Path, bodies_file: Path, requests: int) -> dict:
    port = free_port()
    server = subprocess.Popen([str(BIN / "python"), "-m", "lifecycle.serving", "serve",
                               "--bundle", str(bundle), "--port", str(port), "--registry",
                               f"sqlite:///{work / 'http-registry.sqlite'}"], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(server, http_ok(f"http://127.0.0.1:{port}/health"), "the HTTP API",
                   timeout=120)
        out = subprocess.run([str(BIN / "python"), "-m", "lifecycle.serving.loadgen", "--url",
                              f"http://127.0.0.1:{port}/predict", "--bodies", str(bodies_file),
                              "--requests", str(requests), "--concurrency", "32", "--warmup",
                              "200"], env=ENV, capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
    finally:
        stop_process(server, 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=str(ROOT / "models" / "bundle"))
    parser.add_argument("--rows", default=str(ROOT / "data/processed/validation.parquet"))
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--rates", default="25000,50000", help="steady rates, events/s")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batch", type=int, default=5000, help="the worker's micro-batch")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (one group)")
    parser.add_argument("--requests", type=int, default=20_000, help="HTTP requests at c=32")
    args = parser.parse_args()

    import pandas as pd
    import redis

    from lifecycle.events.producer import payloads_of

    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").exists():
        raise SystemExit(f"no bundle at {bundle}: run the DAG first (make run)")
    names = [f["name"] for f in json.loads((bundle / "signature.json").read_text())["fields"]]
    frame = pd.read_parquet(args.rows, columns=names)
    bodies = list(payloads_of(frame.astype(object).where(frame.notna(), None)
                              .to_dict("records")))
    work = Path(tempfile.mkdtemp(prefix="bench-events-"))
    (work / "bodies.jsonl").write_bytes(b"\n".join(bodies) + b"\n")
    load_before = os.getloadavg()
    results: dict = {"cores": os.cpu_count(), "batch": args.batch, "workers": args.workers}
    server, url = start_redis(work)
    client = redis.Redis.from_url(url)
    try:
        # throughput: drain a backlog
        backlog(client, "max:requests", bodies, args.backlog)
        workers = start_workers(args.workers, url, bundle, work / "max.sqlite", "max",
                                args.batch, work / "max.log")
        wait_answers(client, "max:answers", args.backlog)
        for worker in workers:
            stop_process(worker, 30)
        results["backlog"] = summary(answers(client, "max:answers"))
        print(f"backlog: {results['backlog']}", file=sys.stderr, flush=True)
        client.flushdb()
        # latency at steady rates
        for rate in [float(r) for r in args.rates.split(",")]:
            prefix = f"rate{int(rate)}"
            workers = start_workers(args.workers, url, bundle, work / f"{prefix}.sqlite",
                                    prefix, args.batch, work / f"{prefix}.log")
            late = produce(url, f"{prefix}:requests", work / "bodies.jsonl", rate, args.seconds)
            wait_answers(client, f"{prefix}:answers", int(rate * args.seconds))
            for worker in workers:
                stop_process(worker, 30)
            pairs = answers(client, f"{prefix}:answers")
            results[f"steady {int(rate)}/s"] = {**summary(pairs), "producer_late_s": late}
            print(f"steady {rate:.0f}/s: {results[f'steady {int(rate)}/s']}", file=sys.stderr,
                  flush=True)
            client.flushdb()
    finally:
        client.close()
        stop_process(server, 30)
    http = http_api(bundle, work, work / "bodies.jsonl", args.requests)
    results["http c=32"] = {k: v for k, v in http.items() if k != "answered"}
    results["load_average"] = {"before": load_before, "after": os.getloadavg()}
    report(results, args)
    shutil.rmtree(work, ignore_errors=True)


def report(results: dict, args) -> None:
    b, h = results["backlog"], results["http c=32"]
    lines = [f"Events vs HTTP ({results['cores']} cores; {args.workers} worker(s), "
             f"micro-batch {args.batch}; "
             "SQLite registry, WAL, every answer committed before it is published)", "",
             "| transport | events/s | p50 ms | p99 ms |", "|---|---|---|---|",
             f"| events: backlog of {b['events']:,} drained | {b['events_per_s']:,.0f} | "
             f"{b['p50_ms']:.0f} | {b['p99_ms']:.0f} |"]
    for name, r in results.items():
        if name.startswith("steady"):
            lines.append(f"| events: {name} for {args.seconds:.0f} s | {r['events_per_s']:,.0f} "
                         f"| {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")
    lines.append(f"| HTTP API, 1 record per request, c=32 | {h['throughput_rps']:,.0f} | "
                 f"{h['p50_ms']:.1f} | {h['p99_ms']:.1f} |")
    la = results["load_average"]
    lines += ["", "events latency: event added -> answer added (Redis stamps, 1 ms resolution)",
              "goal: >= 50,000 events/s; p99 <= 50 ms at 25,000 events/s",
              f"load average (1/5/15 min) before {la['before'][0]:.1f}/{la['before'][1]:.1f}/"
              f"{la['before'][2]:.1f}, after {la['after'][0]:.1f}/{la['after'][1]:.1f}/"
              f"{la['after'][2]:.1f}"]
    print("\n".join(lines))
    out = ROOT / "bench" / "results" / "events.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
