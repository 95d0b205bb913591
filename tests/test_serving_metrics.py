"""GET /metrics of a real API (uvicorn on 127.0.0.1, the demo bundle), read with
prometheus-client's own parser: requests by route and status, rejects by reason, latency and
score histograms, the model version, the reference quantiles."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers_serving import Server, records_from, registry_ids, signature_of


@pytest.fixture(scope="module")
def rows(reproduced: Path, bundle: Path) -> list[dict]:
    return records_from(reproduced / "data/processed/validation.parquet", signature_of(bundle),
                        n=20)


@pytest.fixture
def api(bundle: Path, tmp_path) -> Server:
    with Server("--bundle", str(bundle), cwd=tmp_path,
                registry=f"sqlite:///{tmp_path / 'registry.sqlite'}") as server:
        yield server


def scrape(api: Server) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} from one GET /metrics."""
    answer = httpx.get(f"{api.url}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    """The sum over the samples of `name` whose labels include `labels` (0 if none)."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and labels.items() <= dict(ls).items())


def test_requests_rejects_scores_and_the_model_version_are_counted(api, rows, bundle):
    before = scrape(api)
    for reason in ("not_json", "invalid_json", "invalid_shape", "too_large", "not_recorded",
                   "error"):
        assert (("serving_rejects_total", (("reason", reason),)) in before)  # present at 0
    assert value(before, "serving_rejects_total") == 0

    answers = [httpx.post(f"{api.url}/predict", json=r).json() for r in rows[:3]]
    answers += httpx.post(f"{api.url}/predict", json=rows[3:8]).json()
    broken = {**rows[0], "tenure": 1, "monthly_charges": 20.0, "total_charges": 5000.0}
    refused = {
        "invalid_json": httpx.post(f"{api.url}/predict", content=b"{not json",
                                   headers={"content-type": "application/json"}),
        "invalid_shape": httpx.post(f"{api.url}/predict", json=[1, 2]),
        "wrong_type": httpx.post(f"{api.url}/predict", json={**rows[0], "tenure": "long"}),
        "rule": httpx.post(f"{api.url}/predict", json=[rows[1], broken]),
        "too_large": httpx.post(f"{api.url}/predict", content=b"[" + b" " * (2 << 20) + b"]",
                                headers={"content-type": "application/json"}),
        "not_json": httpx.post(f"{api.url}/predict", content=b"tenure=1",
                               headers={"content-type": "application/x-www-form-urlencoded"}),
    }
    assert {r: a.status_code for r, a in refused.items()} == {
        "invalid_json": 422, "invalid_shape": 422, "wrong_type": 422, "rule": 422,
        "too_large": 413, "not_json": 415}
    assert httpx.get(f"{api.url}/health").status_code == 200
    assert httpx.get(f"{api.url}/wp-login.php").status_code == 404
    samples = scrape(api)

    assert value(samples, "serving_requests_total", route="/predict", status="200") == 4
    assert value(samples, "serving_requests_total", route="/predict", status="422") == 4
    assert value(samples, "serving_requests_total", route="/predict", status="413") == 1
    assert value(samples, "serving_requests_total", route="/predict", status="415") == 1
    health = value(samples, "serving_requests_total", route="/health", method="GET")
    assert health == value(before, "serving_requests_total", route="/health") + 1  # +readiness
    assert value(samples, "serving_requests_total", route="other", status="404") == 1
    for reason in refused:
        assert value(samples, "serving_rejects_total", reason=reason) == 1, reason
    assert value(samples, "serving_request_duration_seconds_count", route="/predict") == 10
    assert value(samples, "serving_request_duration_seconds_bucket", route="/predict",
                 le="+Inf") == 10

    # one score per answered record, the same probabilities the answers carried
    version = orjson.loads((bundle / "manifest.json").read_bytes())["version"]
    assert len(answers) == 8 == len(registry_ids(api.registry))
    assert value(samples, "serving_score_count", variant="main", model_version=version) == 8
    assert value(samples, "serving_score_sum", variant="main") == pytest.approx(
        sum(a["probability"] for a in answers))
    below_half = sum(a["probability"] <= 0.5 for a in answers)
    assert value(samples, "serving_score_bucket", variant="main", le="0.5") == below_half

    assert value(samples, "serving_model_info", variant="main", model_version=version,
                 engine="onnx") == 1
    edges = json.loads((bundle / "reference_stats.json").read_text())["prediction"]["edges"]
    assert value(samples, "serving_reference_score", variant="main",
                 quantile="0.5") == pytest.approx(edges[4])
    assert value(samples, "process_cpu_seconds_total") > 0


def test_scrapes_are_counted_apart_and_answers_are_unchanged(api, rows):
    plain = httpx.post(f"{api.url}/predict", json=rows[0])
    assert plain.status_code == 200 and set(plain.json()) == {
        "request_id", "prediction", "probability", "model_version", "variant"}
    for _ in range(3):
        scrape(api)
    samples = scrape(api)
    assert value(samples, "serving_requests_total", route="/metrics") == 3  # the ones before
    assert value(samples, "serving_requests_total", route="/predict") == 1


def another_bundle(bundle: Path, dest: Path) -> tuple[Path, list[float]]:
    """A self-consistent copy of `bundle` whose reference score edges are all 0.1 higher (its
    manifest rewritten), standing in for a retrained version; and its edges."""
    from lifecycle.packaging.store import write_bundle

    manifest = orjson.loads((bundle / "manifest.json").read_bytes())
    files = {p.name: p.read_bytes() for p in bundle.iterdir() if p.name != "manifest.json"}
    stats = json.loads(files["reference_stats.json"])
    stats["prediction"]["edges"] = [e + 0.1 for e in stats["prediction"]["edges"]]
    files["reference_stats.json"] = json.dumps(stats).encode()
    write_bundle(dest, files, manifest["lineage"])
    return dest, stats["prediction"]["edges"]


def test_the_reference_follows_the_bundle_each_slot_serves_after_a_reload_and_a_switch(
        bundle: Path, rows, tmp_path: Path):
    """POST /admin/load puts another version in a slot: from the next scrape its slot's
    reference quantiles and model info are the new bundle's, and the score histogram keeps
    each version's answers apart; both while both slots answer (a canary) and after a
    blue/green switch. The start-up bundle's numbers are gone from the reloaded slot."""
    import yaml

    from lifecycle.packaging.runtime import load_bundle

    new, new_edges = another_bundle(bundle, tmp_path / "bundles" / "v2")
    old_edges = json.loads((bundle / "reference_stats.json").read_text())["prediction"]["edges"]
    v1, v2 = load_bundle(bundle).version, load_bundle(new).version
    assert v1 != v2
    for strategy, slots in (("canary", ("champion", "challenger")),
                            ("blue_green", ("blue", "green"))):
        where = tmp_path / strategy
        where.mkdir()
        deployment = {"name": "reload", "strategy": strategy,
                      "variants": {s: {"bundle": str(bundle)} for s in slots},
                      **({"share": 0.5, "champion": slots[0]} if strategy == "canary"
                         else {"active": slots[0]})}
        (where / "deploy.yaml").write_text(yaml.safe_dump(deployment))
        with Server("--deployment", str(where / "deploy.yaml"), "--bundle-root",
                    str(tmp_path / "bundles"), cwd=where,
                    registry=f"sqlite:///{where / 'registry.sqlite'}") as api:
            live, idle = slots
            before = scrape(api)
            assert value(before, "serving_reference_score", variant=idle, model_version=v1,
                         quantile="0.5") == pytest.approx(old_edges[4])
            loaded = httpx.post(f"{api.url}/admin/load", json={"slot": idle, "bundle": "v2"},
                                headers=api.admin())
            assert loaded.status_code == 200, loaded.text
            if strategy == "blue_green":
                switched = httpx.post(f"{api.url}/admin/switch", headers=api.admin())
                assert switched.json()["live"] == idle
            answers = httpx.post(f"{api.url}/predict", json=rows).json()
            samples = scrape(api)

            # each slot's reference and info: the bundle it holds now, nothing else
            for slot, version, edges in ((live, v1, old_edges), (idle, v2, new_edges)):
                for i, q in enumerate(("0.1", "0.5", "0.9")):
                    assert value(samples, "serving_reference_score", variant=slot,
                                 model_version=version, quantile=q) == pytest.approx(
                                     edges[4 * i])
                assert value(samples, "serving_model_info", variant=slot) == 1
                assert value(samples, "serving_model_info", variant=slot,
                             model_version=version) == 1
            assert not any(n == "serving_reference_score" and dict(ls)["variant"] == idle
                           and dict(ls)["model_version"] == v1 for n, ls in samples)
            # every answer counted under the variant and version that gave it
            given = {}
            for a in answers:
                given.setdefault((a["variant"], a["model_version"]), []).append(a["probability"])
            assert (idle, v2) in given and (strategy == "blue_green") == ((live, v1) not in given)
            for (slot, version), scores in given.items():
                assert value(samples, "serving_score_count", variant=slot,
                             model_version=version) == len(scores)
                assert value(samples, "serving_score_sum", variant=slot,
                             model_version=version) == pytest.approx(sum(scores))
