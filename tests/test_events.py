"""Events on a real Redis server (Debian redis-server, started here, password-protected):
the event worker under kill -9, idempotent recording, outcomes joined by request id, bad
events dead-lettered with their reasons; and `collect` from a stream, reproducibly."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pandas as pd
import pytest

from tests.conftest import ROOT
from tests.helpers_events import PASSWORD_VAR, RedisServer
from tests.helpers_process import free_port, wait_ready
from tests.helpers_serving import registry_ids, registry_rows, signature_of
from tests.helpers_stages import run_stage_process, run_stages, stage_dir

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer()
    yield server
    server.stop()


def bad_events(rows: list[dict], signature: dict) -> dict[str, dict]:
    """One event of every kind the worker must refuse: {reason prefix: event fields}."""
    fields = signature["fields"]
    number = next(f["name"] for f in fields if f["type"] in ("int", "float"))
    required = next(f["name"] for f in fields if not f["nullable"])
    row = dict(rows[0])
    return {
        "not_json": {"data": b"{this is not json"},
        "not_an_object": {"data": b"[1, 2, 3]"},
        f"wrong_type:{number}": {"data": orjson.dumps({**row, number: "twelve"})},
        f"missing_required:{required}": {
            "data": orjson.dumps({k: v for k, v in row.items() if k != required})},
        "undeclared:favourite_colour": {"data": orjson.dumps({**row,
                                                                 "favourite_colour": "red"})},
        "oversize": {"data": orjson.dumps({**row, "pad": "x" * 20_000})},
        "missing_field:data": {"payload": b"{}"},
    }


def consume(redis_server: RedisServer, bundle: Path, registry: str, consumer: str, log: Path,
            *extra: str) -> subprocess.Popen:
    """`python -m lifecycle.events consume` as its own process (what `make consume` runs)."""
    env = {**os.environ, **redis_server.env, "PYTHONPATH": str(ROOT),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(BIN / "python"), "-m", "lifecycle.events", "consume", "--bundle", str(bundle),
           "--redis", redis_server.url, "--registry", registry, "--consumer", consumer,
           "--log-every", "1", *extra]
    with open(log, "w") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def stream_data(client, stream: str) -> dict[str, dict]:
    return {i.decode(): orjson.loads(f[b"data"]) for i, f in client.xrange(stream)}


def test_kill_9_under_load_then_a_second_worker_finishes_every_event_recorded_once(
        redis_server, bundle, rows, tmp_path):
    from lifecycle.events.producer import add, payloads_of

    client = redis_server.client
    registry = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    good = [rows[i % len(rows)] for i in range(30_000)]
    bad = bad_events(rows, signature_of(bundle))
    good_ids = add(client, "lifecycle:requests", payloads_of(good[:15_000]))
    bad_ids = {reason: client.xadd("lifecycle:requests", fields).decode()
               for reason, fields in bad.items()}
    good_ids += add(client, "lifecycle:requests", payloads_of(good[15_000:]))

    first = consume(redis_server, bundle, registry, "first", tmp_path / "first.log",
                    "--batch", "500", "--claim-idle-ms", "2000")
    wait_ready(first, lambda: client.xlen("lifecycle:answers") >= 3000, "the first answers",
               tmp_path / "first.log", timeout=180, every=0.02)
    while True:  # freeze it; kill it while it holds events (read, not yet acknowledged)
        first.send_signal(signal.SIGSTOP)
        left = client.xpending_range("lifecycle:requests", "lifecycle", "-", "+", 100_000,
                                     consumername="first")
        if left:
            break
        first.send_signal(signal.SIGCONT)
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait()

    metrics_port = free_port()
    second = consume(redis_server, bundle, registry, "second", tmp_path / "second.log",
                     "--batch", "500", "--claim-idle-ms", "2000",
                     "--metrics-port", str(metrics_port))

    def finished() -> bool:
        groups = {g["name"].decode(): g for g in client.xinfo_groups("lifecycle:requests")}
        return groups["lifecycle"]["pending"] == 0 and groups["lifecycle"]["lag"] == 0

    try:
        wait_ready(second, finished, "every event acknowledged", tmp_path / "second.log",
                   timeout=180, every=0.02)
        time.sleep(1.5)  # one more progress line: the lag gauges are set with it
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    finally:
        second.terminate()
        second.wait(30)
    log = (tmp_path / "second.log").read_text()
    assert second.returncode == 0, log

    # every good event recorded exactly once, under its event id
    assert registry_ids(registry) == set(good_ids)
    with sqlite3.connect(tmp_path / "registry.sqlite") as db:
        assert db.execute("SELECT count(*) FROM predictions").fetchone()[0] == len(good_ids)
    # ... and answered on the output stream, with the prediction the registry holds
    answers = stream_data(client, "lifecycle:answers")
    answered = {a["request_id"]: a for a in answers.values()}
    assert set(answered) == set(good_ids)
    stored = registry_rows(registry).set_index("request_id")
    for rid in good_ids[::997]:
        assert answered[rid]["prediction"] == stored.at[rid, "prediction"]
        assert answered[rid]["probability"] == pytest.approx(stored.at[rid, "probability"])
    # the second worker took over what the first left pending
    assert {e["message_id"].decode() for e in left} <= set(answered) | set(bad_ids.values())
    # every bad event is in the dead-letter stream with its reason, none was recorded
    dead = {d["event_id"]: d for d in stream_data(client, "lifecycle:dead-letter").values()}
    assert set(dead) == set(bad_ids.values())
    for reason, event_id in bad_ids.items():
        assert dead[event_id]["reason"].startswith(reason), (reason, dead[event_id])
        assert dead[event_id]["stream"] == "lifecycle:requests"
    assert "lag 0 pending 0" in log
    # every event the first worker held was taken over (a cumulative count, whenever read)
    claimed = re.search(r"^lifecycle_events_claimed_total (\S+)$", metrics, re.M)
    assert claimed and float(claimed.group(1)) >= len(left)
    # and Prometheus sees the same: answers counted, the group's lag and pending at 0
    answered_by_second = int(re.findall(r"\((\d+) answered", log)[-1])
    assert f'lifecycle_events_total{{outcome="answered"}} {answered_by_second}.0' in metrics
    assert 'lifecycle_events_lag{stream="lifecycle:requests"} 0.0' in metrics
    assert 'lifecycle_events_pending{stream="lifecycle:requests"} 0.0' in metrics
    client.delete("lifecycle:requests", "lifecycle:answers", "lifecycle:dead-letter",
                  "lifecycle:feedback")


def test_redelivered_events_are_recorded_once_and_outcomes_join_by_request_id(
        redis_server, bundle, rows, tmp_path):
    from lifecycle.events.broker import RedisBroker
    from lifecycle.events.producer import add, payloads_of
    from lifecycle.events.worker import Streams, Worker
    from lifecycle.serving.registry import Registry, export_parquet
    from lifecycle.serving.scoring import load_scorer

    client, streams = redis_server.client, Streams()
    registry = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    ids = add(client, streams.requests, payloads_of(rows[:50]))
    scorer, recorder = load_scorer(bundle), Registry(registry).start()

    def drain(group: str) -> Worker:
        broker = RedisBroker(redis_server.direct_url, [streams.requests, streams.feedback],
                             group, f"{group}-worker")
        worker = Worker(broker, scorer, recorder, streams, batch=20, block_ms=10)
        while worker.step():
            pass
        broker.close()
        return worker

    assert drain("lifecycle").progress.answered == 50
    # a second group is handed every event again: the registry still holds each once
    assert drain("replay").progress.answered == 50
    assert registry_ids(registry) == set(ids)
    assert len(registry_rows(registry)) == 50
    assert client.xlen(streams.answers) == 100

    labels = scorer.outcome_values()
    notes = [{"request_id": rid, "outcome": labels[i % 2]} for i, rid in enumerate(ids[:10])]
    add(client, streams.feedback, [orjson.dumps(n) for n in notes])
    add(client, streams.feedback, [orjson.dumps(notes[0])])            # redelivered: fine
    wrong = [{"request_id": "0-1", "outcome": labels[0]},               # no such prediction
             {"request_id": ids[1], "outcome": labels[0]},              # a second, other outcome
             {"request_id": ids[2], "outcome": "perhaps"},              # not a label
             {"request_id": ids[3]}]                                    # no outcome
    wrong_ids = add(client, streams.feedback, [orjson.dumps(n) for n in wrong])
    drain("lifecycle")
    recorder.close()

    exported = pd.read_parquet(export_parquet(registry, tmp_path / "export.parquet")
                               and tmp_path / "export.parquet").set_index("request_id")
    for note in notes:
        assert exported.at[note["request_id"], "outcome"] == note["outcome"]
    assert exported["outcome"].notna().sum() == 10
    dead = {d["event_id"]: d["reason"] for d in stream_data(client, streams.dead_letter).values()}
    assert [dead[i].split(" ")[0] for i in wrong_ids] == [
        "unknown_request_id", "feedback_already_recorded", "unknown_category:outcome",
        "missing_field:outcome"]
    client.delete(streams.requests, streams.answers, streams.dead_letter, streams.feedback)


def test_column_path_gives_the_record_paths_verdicts_and_answers(redis_server, bundle, rows,
                                                                  tmp_path):
    """A micro-batch checked and scored as columns answers, rejects and records exactly as
    the record path (the API's) does on the same events."""
    from lifecycle.events.broker import RedisBroker
    from lifecycle.events.producer import add, payloads_of
    from lifecycle.events.worker import Streams
    from lifecycle.events.worker import Worker as EventWorker
    from lifecycle.serving.registry import Registry
    from lifecycle.serving.scoring import load_scorer

    fields = signature_of(bundle)["fields"]
    bounded = next(f for f in fields if f["type"] in ("int", "float") and f.get("min") is not None)
    required = next(f["name"] for f in fields if not f["nullable"] and f["type"] != "string")
    category = next(f for f in fields if f["type"] == "category" and f.get("allowed"))
    events = [dict(r) for r in rows[:300]]
    events[5][bounded["name"]] = bounded["min"] - 1                     # out of range
    events[6][required] = None                                          # missing required
    events[7][category["name"]] = f"  {category['allowed'][0].upper()} "  # untidy spelling
    events[250][bounded["name"]] = 1e39     # too big to read as columns: that batch goes by record
    client, scorer = redis_server.client, load_scorer(bundle)
    streams = Streams("parity:requests", "parity:answers", "parity:dead", "parity:feedback")
    add(client, streams.requests, payloads_of(events))
    outcome = {}
    for fast in (True, False):
        registry = f"sqlite:///{tmp_path / f'{fast}.sqlite'}"
        recorder = Registry(registry).start()
        broker = RedisBroker(redis_server.direct_url, [streams.requests, streams.feedback],
                             f"fast-{fast}", "w")
        worker = EventWorker(broker, scorer, recorder, streams, batch=100, block_ms=10,
                             fast=fast)
        while worker.step():
            pass
        recorder.close()
        broker.close()
        assert worker.progress.fast_batches == (2 if fast else 0)
        stored = registry_rows(registry).set_index("request_id").sort_index()
        stored["inputs"] = stored["inputs"].map(orjson.loads)
        outcome[fast] = stored.drop(columns=["created_at", "latency_ms", "engine"])
    pd.testing.assert_frame_equal(outcome[True], outcome[False])
    assert len(outcome[True]) == 297
    answers = [a for a in stream_data(client, streams.answers).values()]
    by_path = {}
    for a in answers:
        by_path.setdefault(a["request_id"], []).append((a["prediction"], a["probability"]))
    assert all(len(v) == 2 and v[0] == v[1] for v in by_path.values())
    dead = stream_data(client, streams.dead_letter)
    reasons = sorted(d["reason"] for d in dead.values())
    assert reasons == sorted([f"out_of_range:{bounded['name']}"] * 2
                             + [f"missing_required:{required}"] * 2
                             + [f"wrong_type:{bounded['name']}"] * 2)
    client.delete(*vars(streams).values())


# --- collect from a stream -----------------------------------------------------------------
def read_customers(db: Path) -> pd.DataFrame:
    with sqlite3.connect(db) as con:
        frame = pd.read_sql_query("SELECT * FROM customers ORDER BY customer_id", con)
    con.close()
    return frame


def test_collect_from_a_stream_is_reproducible_and_incremental(redis_server, demo_sqlite,
                                                               tmp_path):
    from lifecycle.events.producer import add, payloads_of

    client = redis_server.client
    customers = read_customers(demo_sqlite)
    records = customers.astype(object).where(customers.notna(), None).to_dict("records")
    first_ids = add(client, "crm:customers", payloads_of(records[:300]))
    bad = {"not_json": client.xadd("crm:customers", {"data": b"{oops"}).decode(),
           "not_an_object": client.xadd("crm:customers", {"data": b'"text"'}).decode(),
           "missing_field:data": client.xadd("crm:customers", {"other": b"{}"}).decode()}
    source = {"kind": "stream", "url": redis_server.url, "stream": "crm:customers"}

    where = stage_dir(tmp_path / "first", {"collect.source": source})
    proc = run_stage_process(where, "collect", env=redis_server.env)
    assert proc.returncode == 0, proc.stderr
    assert "3 events held no record" in proc.stderr
    manifest_text = (where / "data/raw/manifest.json").read_text()
    manifest = json.loads(manifest_text)
    assert redis_server.password not in manifest_text   # the URL names ${VAR}, redacted anyway
    assert manifest["source"]["after"] == "0-0"
    assert manifest["source"]["until"] == bad["missing_field:data"]
    assert manifest["rows"] == 300
    assert {e["event_id"]: e["reason"].split(":")[0] for e in manifest["rejected_events"]} == {
        i: r.split(":")[0] for r, i in bad.items()}
    snapshot_bytes = (where / "data/raw/snapshot.parquet").read_bytes()
    snapshot = pd.read_parquet(where / "data/raw/snapshot.parquet")
    pd.testing.assert_frame_equal(snapshot, customers.head(300), check_dtype=False)

    # more events arrive; the next run in the same folder takes only those
    later_ids = add(client, "crm:customers", payloads_of(records[300:]))
    proc = run_stage_process(where, "collect", env=redis_server.env)
    assert proc.returncode == 0, proc.stderr
    second = json.loads((where / "data/raw/manifest.json").read_text())
    assert (second["source"]["after"], second["source"]["until"]) == (
        manifest["source"]["until"], later_ids[-1])
    assert second["rows"] == 200 and "rejected_events" in second
    pd.testing.assert_frame_equal(pd.read_parquet(where / "data/raw/snapshot.parquet"),
                                  customers.iloc[300:].reset_index(drop=True),
                                  check_dtype=False)

    # the recorded first range, collected again elsewhere, gives the same bytes
    again = stage_dir(tmp_path / "again", {"collect.source": {
        **source, "after": manifest["source"]["after"], "until": manifest["source"]["until"]}})
    os.environ[PASSWORD_VAR] = redis_server.password
    try:
        run_stages(again, "collect", "validate")
    finally:
        del os.environ[PASSWORD_VAR]
    assert (again / "data/raw/snapshot.parquet").read_bytes() == snapshot_bytes
    assert (again / "data/raw/manifest.json").read_text() == manifest_text
    # and validate holds the stream's records to the contract like any source's rows
    assert len(pd.read_parquet(again / "data/interim/validated.parquet")) > 250
    assert len(first_ids) == 300
    client.delete("crm:customers")
