"""The real-time API, served by a real uvicorn process on 127.0.0.1 over the bundle that
`dvc repro` built: valid and invalid requests, feedback, metadata, a schema fuzz, a bounded
load with every answer in the registry, and a tampered bundle refused at start."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import orjson
import pandas as pd
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from lifecycle.serving.loadgen import run_load
from tests.helpers_serving import (
    Server,
    records_from,
    registry_ids,
    registry_rows,
    signature_of,
)


@pytest.fixture(scope="module")
def bundle(reproduced: Path) -> Path:
    return reproduced / "models" / "bundle"


@pytest.fixture(scope="module")
def rows(reproduced: Path, bundle: Path) -> list[dict]:
    return records_from(reproduced / "data/processed/validation.parquet", signature_of(bundle))


@pytest.fixture(scope="module")
def api(bundle: Path, tmp_path_factory) -> Server:
    where = tmp_path_factory.mktemp("api")
    with Server("--bundle", str(bundle), cwd=where,
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


def test_other_spellings_and_blank_optional_values_are_made_coherent(api: Server, rows):
    record = {**rows[0], "contract": " month-to-month ", "total_charges": ""}
    record["tenure"] = str(record["tenure"])
    response = httpx.post(f"{api.url}/predict", json=record)
    assert response.status_code == 200, response.text
    stored = registry_rows(api.registry).set_index("request_id")
    logged = orjson.loads(stored.loc[response.json()["request_id"], "inputs"])
    assert logged["contract"] == "Month-to-month" and logged["total_charges"] is None


@pytest.mark.parametrize("change, field, kind", [
    ({"tenure": -3}, "tenure", "greater_than_equal"),
    ({"tenure": "twelve"}, "tenure", "int_parsing"),
    ({"monthly_charges": None}, "monthly_charges", "float_type"),
    ({"unexpected": 1}, "unexpected", "extra_forbidden"),
])
def test_bad_fields_get_a_422_naming_each_field(api: Server, rows, change, field, kind):
    response = httpx.post(f"{api.url}/predict", json={**rows[0], **change})
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [e["loc"] for e in errors] == [["body", field]] and errors[0]["type"] == kind


def test_missing_fields_contract_rules_and_bad_bodies_are_4xx(api: Server, rows):
    missing = {k: v for k, v in rows[0].items() if k not in ("tenure", "contract")}
    errors = httpx.post(f"{api.url}/predict", json=missing).json()["detail"]
    assert {tuple(e["loc"]) for e in errors} == {("body", "tenure"), ("body", "contract")}

    # a cross-field rule of the contract (total charges far beyond tenure x monthly charges)
    broken = {**rows[0], "tenure": 1, "monthly_charges": 20.0, "total_charges": 5000.0}
    response = httpx.post(f"{api.url}/predict", json=[rows[1], broken])
    assert response.status_code == 422
    assert response.json()["detail"] == [{"loc": ["body", 1], "type": "contract",
                                          "msg": "rule:total_charges_match_tenure"}]

    for body in (b"{not json", b"[]", b"42", b'"text"'):
        assert httpx.post(f"{api.url}/predict", content=body).status_code == 422
    too_many = httpx.post(f"{api.url}/predict", json=[rows[0]] * 1001)
    assert too_many.status_code == 422
    too_large = httpx.post(f"{api.url}/predict", content=b"[" + b" " * (2 << 20) + b"]")
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
    assert set(record["properties"]) == {f["name"] for f in signature_of(bundle)["fields"]}
    assert record["properties"]["tenure"]["maximum"] == 120


def test_admin_endpoints_need_the_token(api: Server):
    assert httpx.post(f"{api.url}/admin/switch").status_code == 401
    wrong = httpx.post(f"{api.url}/admin/switch", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    # a single deployment has no slots to switch: a clear 409, not a server error
    assert httpx.post(f"{api.url}/admin/switch", headers=api.admin()).status_code == 409


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
