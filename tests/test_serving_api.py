"""The real-time API, served by a real uvicorn process on 127.0.0.1 over the bundle that
`dvc repro` built: valid and invalid requests, feedback, metadata, a schema fuzz, a bounded
load with every answer in the registry, and a tampered bundle refused at start."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sys
from pathlib import Path

import httpx
import orjson
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from lifecycle.serving.loadgen import run_load
from tests.conftest import run
from tests.helpers_serving import (
    ADMIN_TOKEN,
    Server,
    registry_ids,
    registry_rows,
    signature_of,
)

JSON = {"Content-Type": "application/json"}
REQUEST_TIMEOUT = 2  # seconds the test server gives a client to send a whole request
RAW = "raw:"  # a hostile value written into the JSON text as it is (NaN, 1e400)


@pytest.fixture(scope="module")
def api(bundle: Path, tmp_path_factory) -> Server:
    where = tmp_path_factory.mktemp("api")
    with Server("--bundle", str(bundle), "--request-timeout", str(REQUEST_TIMEOUT), cwd=where,
                registry=f"sqlite:///{where / 'registry.sqlite'}") as server:
        yield server


def test_one_record_and_a_list_are_answered_and_recorded(api: Server, rows, bundle):
    one = httpx.post(f"{api.url}/predict", json=rows[0])
    assert one.status_code == 200, one.text
    answer = one.json()
    assert answer["prediction"] in ("Yes", "No")
    assert 0 <= answer["probability"] <= 1
    version = orjson.loads((bundle / "manifest.json").read_bytes())["version"]
    assert answer["model_version"] == version and answer["variant"] == "main"

    many = httpx.post(f"{api.url}/predict", json=rows[1:6])
    assert many.status_code == 200, many.text
    answers = many.json()
    assert len(answers) == 5 and len({a["request_id"] for a in answers}) == 5

    stored = registry_rows(api.registry).set_index("request_id")
    for a in [answer, *answers]:
        row = stored.loc[a["request_id"]]
        assert row["prediction"] == a["prediction"]
        assert row["probability"] == pytest.approx(a["probability"])
        assert row["model_version"] == version and row["latency_ms"] > 0
    # the customer id is personal data: masked in the registry, joinable but not readable
    logged = orjson.loads(stored.loc[answer["request_id"], "inputs"])
    assert logged["customer_id"].startswith("masked:")
    assert rows[0]["customer_id"] not in stored.loc[answer["request_id"], "inputs"]
    assert stored.loc[answer["request_id"], "routing_key"] == logged["customer_id"]


def test_api_answers_like_batch_scoring_of_the_same_rows(api: Server, rows, bundle):
    from lifecycle.packaging.runtime import load_bundle

    sample = rows[:50]
    answers = httpx.post(f"{api.url}/predict", json=sample).json()
    checked = load_bundle(bundle)
    ok, rejected = checked.check_rows(pd.DataFrame(sample))
    assert rejected.empty
    expected = checked.predict(ok)
    assert [a["prediction"] for a in answers] == expected["prediction"].tolist()
    assert [a["probability"] for a in answers] == pytest.approx(
        expected["probability"].tolist(), abs=1e-6)


def test_real_time_and_batch_accept_and_refuse_the_same_records_for_the_same_reasons(
        api: Server, reproduced: Path, tmp_path: Path):
    """Rows as the source has them (personal data, metadata, the target, the event time) and
    hostile variants go through the API one by one and through `predict` as a file: the same
    records are scored, with the same answers, and the same are refused, for the same reasons."""
    raw = pd.read_parquet(reproduced / "data/raw/snapshot.parquet").head(6)
    source = orjson.loads(raw.to_json(orient="records", date_format="iso"))
    base = source[0]
    records = [*source, {**base, "tenure": True}, {**base, "tenure": str(base["tenure"])},
               {**base, "contract": "Month-to-month" * 1000},
               {**base, "payment_method": "Mailed check\x1b[2J"},
               {**base, "online_backup": {"$ne": None}}, {**base, "monthly_charges": 1e308},
               {**base, "tenure": 10**30}, {**base, "email": "x" * 5000},
               {**base, "signup_date": ["2020-01-01"]}]
    # numbers the model cannot use, as JSON numbers, as text and as literals JSON has not got
    # (Python's json writes NaN and Infinity; RAW marks text put into the line as it is)
    hostile = [("total_charges", 1e39), ("total_charges", -1e39), ("total_charges", "Infinity"),
               ("total_charges", "NaN"), ("total_charges", "-inf"), ("monthly_charges", "NaN"),
               ("total_charges", RAW + "1e400"), ("total_charges", RAW + "NaN"),
               ("total_charges", RAW + "Infinity"), ("monthly_charges", RAW + "-Infinity"),
               ("tenure", RAW + "NaN"), ("tenure", 9223372036854775808), ("tenure", 10**400),
               ("tenure", "NaN"), ("tenure", 1e20), ("total_charges", True),
               ("total_charges", 10**40), ("contract", "x" * 10_000),
               ("payment_method", "Electronic check\x00"), ("email", RAW + "NaN"),
               ("contract", "Two year\u0085")]
    records += [{**base, name: value} for name, value in hostile]
    lines = [json.dumps(r) for r in records]
    for i, (_, value) in enumerate(hostile, len(records) - len(hostile)):
        if isinstance(value, str) and value.startswith(RAW):
            lines[i] = lines[i].replace(json.dumps(value), value[len(RAW):])
    api_verdicts = []
    for line in lines:
        response = httpx.post(f"{api.url}/predict", content=line, headers=JSON)
        assert response.status_code in (200, 422), response.text
        api_verdicts.append(response.json()["prediction"] if response.status_code == 200 else
                            sorted(e["msg"] for e in response.json()["detail"]))
    batch_in = tmp_path / "in.jsonl"
    batch_in.write_text("".join(line + "\n" for line in lines))
    run([sys.executable, "-m", "lifecycle.serving", "predict", "--bundle",
         str(reproduced / "models/bundle"), "--input", str(batch_in), "--output",
         str(tmp_path / "out.jsonl")], reproduced)
    scored = pd.read_json(tmp_path / "out.jsonl", lines=True).set_index("row")
    rejects = pd.DataFrame([json.loads(line) for line in  # any integer, as written
                            (tmp_path / "out.rejects.jsonl").read_text().splitlines()])
    rejects = rejects.set_index("row")
    batch_verdicts = [scored.loc[i, "prediction"] if i in scored.index else
                      sorted(rejects.loc[i, "reason"].split("; ")) for i in range(len(records))]
    assert api_verdicts == batch_verdicts
    assert isinstance(api_verdicts[0], str)  # as the source has it: scored
    assert isinstance(api_verdicts[7], str)  # a number sent as text is read as one
    assert api_verdicts[6] == ["wrong_type:tenure"]  # a boolean is not
    for (name, _), verdict in zip(hostile, api_verdicts[-len(hostile):], strict=True):
        assert isinstance(verdict, list) and any(r.endswith(f":{name}") for r in verdict), \
            (name, verdict)  # each refused, naming its field
    # personal data and metadata are carried, never features, and stored masked
    answer = httpx.post(f"{api.url}/predict", json=base).json()
    logged = orjson.loads(registry_rows(api.registry).set_index("request_id")
                          .loc[answer["request_id"], "inputs"])
    assert logged["email"].startswith("masked:") and logged["signup_date"].startswith("masked:")
    assert base["email"] not in str(logged)


def test_other_spellings_and_blank_optional_values_are_made_coherent(api: Server, rows):
    record = {**rows[0], "contract": " month-to-month ", "total_charges": ""}
    record["tenure"] = str(record["tenure"])
    response = httpx.post(f"{api.url}/predict", json=record)
    assert response.status_code == 200, response.text
    stored = registry_rows(api.registry).set_index("request_id")
    logged = orjson.loads(stored.loc[response.json()["request_id"], "inputs"])
    assert logged["contract"] == "Month-to-month" and logged["total_charges"] is None


@pytest.mark.parametrize("change, field, kind", [
    ({"tenure": -3}, "tenure", "out_of_range"),
    ({"tenure": "twelve"}, "tenure", "wrong_type"),
    ({"tenure": True}, "tenure", "wrong_type"),  # a boolean is not a number
    ({"monthly_charges": None}, "monthly_charges", "missing_required"),
    ({"unexpected": 1}, "unexpected", "undeclared"),
    ({"contract": "Two year" * 2000}, "contract", "too_long"),
    ({"payment_method": "Mailed\x00check"}, "payment_method", "control_characters"),
    ({"online_backup": {"$ne": 1}}, "online_backup", "wrong_type"),
    ({"email": "a" * 5000}, "email", "too_long"),  # carried columns are bounded too
])
def test_bad_fields_get_a_422_naming_each_field(api: Server, rows, change, field, kind):
    response = httpx.post(f"{api.url}/predict", json={**rows[0], **change})
    assert response.status_code == 422
    errors = [e for e in response.json()["detail"] if e["type"] != "rule"]
    assert [e["loc"] for e in errors] == [["body", field]] and errors[0]["type"] == kind


def test_missing_fields_contract_rules_and_bad_bodies_are_4xx(api: Server, rows):
    missing = {k: v for k, v in rows[0].items() if k not in ("tenure", "contract")}
    errors = httpx.post(f"{api.url}/predict", json=missing).json()["detail"]
    assert {tuple(e["loc"]) for e in errors} == {("body", "tenure"), ("body", "contract")}

    # a cross-field rule of the contract (total charges far beyond tenure x monthly charges)
    broken = {**rows[0], "tenure": 1, "monthly_charges": 20.0, "total_charges": 5000.0}
    response = httpx.post(f"{api.url}/predict", json=[rows[1], broken])
    assert response.status_code == 422
    assert response.json()["detail"] == [{"loc": ["body", 1], "type": "rule",
                                          "msg": "rule:total_charges_match_tenure"}]

    for body in (b"{not json", b"[]", b"42", b'"text"'):
        assert httpx.post(f"{api.url}/predict", content=body, headers=JSON).status_code == 422
    # what orjson refuses is read again as batch reads it; still no JSON: one 422, no 500
    for body in (b'{"contract": "\\ud800"}', b"[" * 100_000, b'{"tenure": NaN',
                 "{\"contract\": \"\u00e9\"}".encode("latin-1")):
        response = httpx.post(f"{api.url}/predict", content=body, headers=JSON)
        assert response.status_code == 422 and response.json()["detail"][0]["type"] \
            == "json_invalid", (body[:20], response.text)
    too_many = httpx.post(f"{api.url}/predict", json=[rows[0]] * 1001)
    assert too_many.status_code == 422
    too_large = httpx.post(f"{api.url}/predict", content=b"[" + b" " * (2 << 20) + b"]",
                           headers=JSON)
    assert too_large.status_code == 413


def test_feedback_joins_its_prediction(api: Server, rows):
    answer = httpx.post(f"{api.url}/predict", json=rows[7]).json()
    given = httpx.post(f"{api.url}/feedback",
                       json={"request_id": answer["request_id"], "outcome": "Yes"})
    assert given.status_code == 200, given.text
    again = httpx.post(f"{api.url}/feedback",
                       json={"request_id": answer["request_id"], "outcome": "No"})
    assert again.status_code == 409
    unknown = httpx.post(f"{api.url}/feedback", json={"request_id": "nope", "outcome": "Yes"})
    assert unknown.status_code == 404
    wrong = httpx.post(f"{api.url}/feedback",
                       json={"request_id": answer["request_id"], "outcome": "Maybe"})
    assert wrong.status_code == 422

    from lifecycle.serving.registry import export_parquet

    out = Path(api.cwd) / "export.parquet"
    total = export_parquet(api.registry, out)
    exported = pd.read_parquet(out)
    assert len(exported) == total == len(registry_ids(api.registry))
    row = exported.set_index("request_id").loc[answer["request_id"]]
    assert row["outcome"] == "Yes" and row["input.tenure"] == rows[7]["tenure"]
    assert str(exported["created_at"].dtype).startswith("datetime64")


def test_reason_codes_on_request_are_answered_and_recorded_in_an_older_registry(
        bundle: Path, rows, tmp_path: Path):
    """?reasons=N gives each answer its top N reason codes and records them with the
    prediction; a registry made before the reasons column existed gets it at start, its
    rows kept (reasons null)."""
    import sqlite3

    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as con:  # the predictions table as the first registries had it
        con.execute("CREATE TABLE predictions (request_id VARCHAR(36) NOT NULL, role VARCHAR(8)"
                    " NOT NULL, created_at FLOAT NOT NULL, deployment VARCHAR(100) NOT NULL, "
                    "strategy VARCHAR(16) NOT NULL, variant VARCHAR(100) NOT NULL, "
                    "model_version VARCHAR(64) NOT NULL, engine VARCHAR(16) NOT NULL, "
                    "routing_key VARCHAR(64), inputs TEXT NOT NULL, prediction TEXT, "
                    "probability FLOAT, latency_ms FLOAT NOT NULL, "
                    "PRIMARY KEY (request_id, role))")
        con.execute("INSERT INTO predictions VALUES ('old-1', 'served', 0, 'd', 'single', "
                    "'main', 'v0', 'onnx', NULL, '{}', 'No', 0.1, 1.0)")
    con.close()
    registry = f"sqlite:///{db}"
    with Server("--bundle", str(bundle), cwd=tmp_path, registry=registry) as server:
        plain = httpx.post(f"{server.url}/predict", json=rows[0]).json()
        asked = httpx.post(f"{server.url}/predict?reasons=3", json=rows[:2])
        too_many = httpx.post(f"{server.url}/predict?reasons=11", json=rows[0])
        not_a_number = httpx.post(f"{server.url}/predict?reasons=x", json=rows[0])
    assert asked.status_code == 200, asked.text
    assert too_many.status_code == not_a_number.status_code == 422
    assert "reasons" not in plain
    features = {f["name"] for f in signature_of(bundle)["fields"]}
    for answer, record in zip(asked.json(), rows[:2], strict=True):
        codes = answer["reasons"]
        assert len(codes["top"]) == 3 and codes["units"].startswith("probability")
        for code in codes["top"]:
            assert code["feature"] in features and code["value"] == record[code["feature"]]
        sizes = [abs(c["contribution"]) for c in codes["top"]]
        assert sizes == sorted(sizes, reverse=True)
    stored = registry_rows(registry).set_index("request_id")
    assert pd.isna(stored.at["old-1", "reasons"]) and stored.at["old-1", "prediction"] == "No"
    assert pd.isna(stored.at[plain["request_id"], "reasons"])
    for answer in asked.json():
        assert orjson.loads(stored.at[answer["request_id"], "reasons"]) == answer["reasons"]


def test_health_metadata_and_openapi_describe_the_bundle(api: Server, bundle):
    health = httpx.get(f"{api.url}/health").json()
    assert health["live"] and health["ready"]
    meta = httpx.get(f"{api.url}/metadata").json()
    assert meta["signature"] == signature_of(bundle)
    assert meta["deployment"]["strategy"] == "single"
    assert meta["model_card"].startswith("# Model card")
    assert meta["inference"]["threshold"] is not None
    schema = httpx.get(f"{api.url}/openapi.json").json()
    record = schema["components"]["schemas"]["Record"]
    # the signature's fields, and the contract's other columns, carried (never features)
    assert {f["name"] for f in signature_of(bundle)["fields"]} < set(record["properties"])
    assert {"email", "signup_date", "updated_at", "churn"} < set(record["properties"])
    assert record["properties"]["tenure"]["maximum"] == 120


ADMIN_ROUTES = (("POST", "/admin/switch"), ("POST", "/admin/rollback"),
                ("POST", "/admin/share"), ("POST", "/admin/load"), ("GET", "/admin/outcomes"))


def test_admin_endpoints_need_the_token(api: Server, bundle: Path, tmp_path: Path):
    """Every admin route, through the one dependency that guards them: 401 without the token or
    with a wrong one (the body never read), counted by the metrics middleware like any route;
    403 on a server started without a token."""
    for method, path in ADMIN_ROUTES:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            response = httpx.request(method, f"{api.url}{path}", headers=headers,
                                     content=b"{not json" if method == "POST" else None)
            assert response.status_code == 401, (path, response.text)
            assert response.json()["detail"].startswith("missing or wrong admin token")
    scraped = httpx.get(f"{api.url}/metrics").text
    for _, path in ADMIN_ROUTES:
        assert f'route="{path}",status="401"' in scraped.replace('method="POST",', "").replace(
            'method="GET",', ""), path
    # a single deployment has no slots to switch: a clear 409, not a server error
    assert httpx.post(f"{api.url}/admin/switch", headers=api.admin()).status_code == 409
    with Server("--bundle", str(bundle), cwd=tmp_path, admin_token=None,
                registry=f"sqlite:///{tmp_path / 'registry.sqlite'}") as closed:
        for method, path in ADMIN_ROUTES:
            response = httpx.request(method, f"{closed.url}{path}",
                                     headers={"Authorization": "Bearer x"})
            assert response.status_code == 403, (path, response.text)
            assert "admin endpoints are disabled" in response.json()["detail"]


def test_admin_refuses_a_missing_token_before_it_reads_the_body(api: Server):
    for body in (b"{not json", b'{"to": 5}', b"[" * 10_000):
        response = httpx.post(f"{api.url}/admin/switch", content=body, headers=JSON)
        assert response.status_code == 401, (body[:20], response.text)
    response = httpx.post(f"{api.url}/admin/switch", content=b"{not json",
                          headers={**JSON, "Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 422


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "text/json"])
def test_a_body_not_declared_json_is_refused_with_415(api: Server, rows, content_type):
    """A cross-site form or text/plain POST (no CORS preflight) must not score or record."""
    headers = {"Content-Type": content_type} if content_type else {}
    before = registry_ids(api.registry)
    response = httpx.post(f"{api.url}/predict", content=orjson.dumps(rows[0]), headers=headers)
    assert response.status_code == 415, response.text
    feedback = httpx.post(f"{api.url}/feedback", headers=headers,
                          content=b'{"request_id": "x", "outcome": "Yes"}')
    assert feedback.status_code == 415, feedback.text
    assert registry_ids(api.registry) == before
    fine = httpx.post(f"{api.url}/predict", content=orjson.dumps(rows[0]),
                      headers={"Content-Type": "application/json; charset=utf-8"})
    assert fine.status_code == 200, fine.text


def exchange(api: Server, *chunks: bytes, wait: float = 15) -> bytes:
    """Send raw bytes on a new connection; everything the server says until it closes it
    (AssertionError if it still holds the connection open after `wait` seconds)."""
    got = b""
    with socket.create_connection(("127.0.0.1", api.port), timeout=wait) as sock:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:  # the server closed on us mid-send: read what it said
            pass
        try:
            while data := sock.recv(65536):
                got += data
        except TimeoutError:
            raise AssertionError(f"connection still open after {wait} s (got {got[:80]!r})") \
                from None
        except ConnectionResetError:
            pass
    return got


def test_a_huge_request_head_is_refused_and_others_are_still_served(api: Server):
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Big: "
    assert exchange(api, head + b"a" * (64 << 10)).startswith(b"HTTP/1.1 431")
    # 64 MB of header is never read: the server closes long before the client is done
    sent = 0
    with socket.create_connection(("127.0.0.1", api.port), timeout=15) as sock:
        sock.sendall(head)
        with pytest.raises(OSError):
            for _ in range(1024):
                sock.sendall(b"a" * (64 << 10))
                sent += 64 << 10
    assert sent < (64 << 20)
    assert httpx.get(f"{api.url}/health").status_code == 200


def test_idle_and_half_sent_connections_are_closed(api: Server, rows):
    before = registry_ids(api.registry)
    assert exchange(api) == b""  # opened, said nothing: closed
    half_head = exchange(api, b"GET /health HTTP/1.1\r\nHost: x\r\n")
    assert half_head.startswith(b"HTTP/1.1 408"), half_head
    body = orjson.dumps(rows[0])
    half_body = exchange(api, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\n\r\n" + body[:10])
    assert half_body.startswith(b"HTTP/1.1 408"), half_body
    assert registry_ids(api.registry) == before
    # a whole request on a raw connection is answered as usual
    whole = exchange(api, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)
    assert whole.startswith(b"HTTP/1.1 200"), whole


def test_a_bounded_load_at_concurrency_32_is_answered_and_recorded(api: Server, rows):
    bodies = [orjson.dumps(r) for r in rows]
    before = registry_ids(api.registry)
    result = asyncio.run(run_load(f"{api.url}/predict", bodies, requests=2000, concurrency=32))
    assert result["statuses"] == {"200": 2000} and not result["errors"]
    answered = {a["request_id"] for a in result["answered"]}
    assert len(answered) == 2000
    assert answered <= registry_ids(api.registry) - before


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzzing_the_api_from_its_schema_finds_no_server_error(api: Server, mode: str):
    """Schemathesis draws requests from the OpenAPI schema (valid ones, then ones that break
    it) for every operation; none may get a 5xx."""
    from hypothesis import given
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    strategy = schema.as_strategy(schemathesis.GenerationMode(mode))

    @given(case=strategy)
    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case):
        case.call_and_validate(checks=[not_a_server_error])

    fuzz()


def test_a_tampered_bundle_is_refused_at_start(bundle: Path, tmp_path: Path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-1] ^= 1
    (copy / "model.onnx").write_bytes(bytes(data))
    server = Server("--bundle", str(copy), cwd=tmp_path,
                    registry=f"sqlite:///{tmp_path / 'registry.sqlite'}")
    with pytest.raises(AssertionError, match="sha256 mismatch"):
        server.start()
    assert server.proc.returncode == 1
