"""Deployment strategies on a real server: canary and A/B shares, shadow logging, blue/green
switches under load, model versions and stages from GTO tags, and the `kill -9` guarantee
that every answered prediction is in the registry."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from lifecycle.errors import StageError
from lifecycle.serving.deploy import Deployment, Router, bucket, load_deployment
from lifecycle.serving.loadgen import run_load
from tests.conftest import run
from tests.helpers_serving import Server, records_from, registry_ids, registry_rows, signature_of

CUSTOMERS = 4000


@pytest.fixture(scope="module")
def customers(reproduced: Path, bundle: Path) -> list[dict]:
    """CUSTOMERS records with distinct customer ids (real feature values, cycled)."""
    rows = records_from(reproduced / "data/processed/validation.parquet", signature_of(bundle))
    return [{**rows[i % len(rows)], "customer_id": f"cust-{i:05d}"} for i in range(CUSTOMERS)]


def serve(tmp: Path, deployment: dict, *args: str) -> Server:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "deploy.yaml").write_text(yaml.safe_dump(deployment, sort_keys=False))
    return Server("--deployment", str(tmp / "deploy.yaml"), *args, cwd=tmp,
                  registry=f"sqlite:///{tmp / 'registry.sqlite'}")


def variants_for(server: Server, records: list[dict], chunk: int = 1000) -> list[str]:
    out = []
    for i in range(0, len(records), chunk):
        response = httpx.post(f"{server.url}/predict", json=records[i:i + chunk], timeout=60)
        assert response.status_code == 200, response.text
        out += [a["variant"] for a in response.json()]
    return out


def test_deployment_files_are_checked_with_one_clear_message(tmp_path: Path):
    for path in sorted((Path(__file__).parents[1] / "deploy").glob("*.yaml")):
        load_deployment(path)  # the shipped examples are valid
    bad = {"strategy": "canary", "variants": {"a": {"bundle": "x"}, "b": {"bundle": "y"}}}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(StageError, match="canary needs share"):
        load_deployment(tmp_path / "d.yaml")
    bad = {"strategy": "ab", "variants": {"a": {"bundle": "x"}, "b": {"stage": "prod"}},
           "split": {"a": 0.7, "b": 0.7}}
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(StageError, match="sum to 1"):
        load_deployment(tmp_path / "d.yaml")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"variants": {"a": {}}}))
    with pytest.raises(StageError, match="variants.a: .*exactly one of bundle, version, stage"):
        load_deployment(tmp_path / "d.yaml")


def test_routing_is_sticky_and_splits_as_declared():
    canary = Router(Deployment.model_validate({
        "name": "c", "strategy": "canary", "share": 0.25,
        "variants": {"champion": {"bundle": "a"}, "challenger": {"bundle": "b"}}}))
    picks = [canary.route(f"id-{i}")[0] for i in range(20_000)]
    assert picks.count("challenger") / len(picks) == pytest.approx(0.25, abs=0.015)
    assert picks == [canary.route(f"id-{i}")[0] for i in range(20_000)]  # sticky
    # another deployment name draws customers independently of this one
    assert bucket("c", "id-1") != bucket("other", "id-1")


def test_canary_sends_its_share_of_customers_and_keeps_each_on_one_variant(
        bundle: Path, customers, tmp_path: Path):
    deployment = {"name": "canary-test", "strategy": "canary", "share": 0.2,
                  "variants": {"champion": {"bundle": str(bundle)},
                               "challenger": {"bundle": str(bundle)}}}
    with serve(tmp_path, deployment) as server:
        first = variants_for(server, customers)
        share = first.count("challenger") / len(first)
        assert share == pytest.approx(0.2, abs=0.03)
        assert variants_for(server, customers[:1000]) == first[:1000]  # sticky per customer
        meta = httpx.get(f"{server.url}/metadata").json()["deployment"]
        assert meta["strategy"] == "canary" and meta["share"] == 0.2


def test_ab_splits_customers_and_reports_outcomes_per_variant(bundle: Path, customers,
                                                              tmp_path: Path):
    deployment = {"name": "ab-test", "strategy": "ab", "split": {"a": 0.5, "b": 0.5},
                  "variants": {"a": {"bundle": str(bundle)}, "b": {"bundle": str(bundle)}}}
    with serve(tmp_path, deployment) as server:
        answers = []
        for i in range(0, CUSTOMERS, 1000):
            answers += httpx.post(f"{server.url}/predict", json=customers[i:i + 1000],
                                  timeout=60).json()
        share_a = sum(a["variant"] == "a" for a in answers) / len(answers)
        assert share_a == pytest.approx(0.5, abs=0.03)
        with httpx.Client(base_url=server.url) as client:
            for answer in answers[:200]:  # the true outcome arrives later for some customers
                response = client.post("/feedback", json={"request_id": answer["request_id"],
                                                          "outcome": "No"})
                assert response.status_code == 200
        outcomes = httpx.get(f"{server.url}/admin/outcomes", headers=server.admin()).json()
        by_variant = {o["variant"]: o for o in outcomes}
        assert set(by_variant) == {"a", "b"}
        assert sum(o["predictions"] for o in outcomes) == CUSTOMERS
        assert sum(o["with_feedback"] for o in outcomes) == 200
        expected_a = sum(a["variant"] == "a" and a["prediction"] == "No" for a in answers[:200])
        n_a = sum(a["variant"] == "a" for a in answers[:200])
        assert by_variant["a"]["accuracy"] == pytest.approx(expected_a / n_a)


def test_shadow_scores_every_request_but_only_the_champion_answers(bundle: Path, customers,
                                                                   tmp_path: Path):
    deployment = {"name": "shadow-test", "strategy": "shadow",
                  "variants": {"champion": {"bundle": str(bundle)},
                               "challenger": {"bundle": str(bundle)}}}
    with serve(tmp_path, deployment) as server:
        answers = httpx.post(f"{server.url}/predict", json=customers[:300], timeout=60).json()
        assert {a["variant"] for a in answers} == {"champion"}
        rows = registry_rows(server.registry)
        served = rows[rows.role == "served"].set_index("request_id")
        shadow = rows[rows.role == "shadow"].set_index("request_id")
        ids = [a["request_id"] for a in answers]
        assert set(served.index) == set(shadow.index) == set(ids)
        assert set(shadow.variant) == {"challenger"}
        # same bundle on both sides: the shadow must agree with the answer
        assert (shadow.loc[ids, "prediction"] == served.loc[ids, "prediction"]).all()


def test_the_sklearn_engine_answers_like_onnx(bundle: Path, customers, tmp_path: Path):
    from lifecycle.packaging.runtime import load_bundle

    deployment = {"name": "sklearn-test", "engine": "sklearn",
                  "variants": {"main": {"bundle": str(bundle)}}}
    with serve(tmp_path, deployment) as server:
        answers = httpx.post(f"{server.url}/predict", json=customers[:100], timeout=60).json()
        engines = set(registry_rows(server.registry)["engine"])
    checked = load_bundle(bundle)
    ok, _ = checked.check_records(customers[:100])
    onnx = checked.predict_records(ok)
    assert engines == {"sklearn"}
    assert [a["probability"] for a in answers] == pytest.approx(
        [o["probability"] for o in onnx], abs=1e-5)


@pytest.fixture(scope="module")
def registered(reproduced: Path, tmp_path_factory) -> Path:
    """A copy of the reproduced project whose bundle is registered with GTO as
    churn-model v1.0.0 and assigned to stage prod; then the working-tree bundle is deleted,
    so serving it must fetch the one at that git revision from the DVC cache."""
    repo = tmp_path_factory.mktemp("gto") / "project"
    shutil.copytree(reproduced, repo, symlinks=True)
    artifacts = yaml.safe_load((repo / "dvc.yaml").read_text())["artifacts"]
    assert artifacts["churn-model"]["path"] == "models/bundle"
    run("git add -A && git -c user.name=t -c user.email=t@t commit -qm 'model v1'", repo)
    run(["gto", "register", "churn-model", "HEAD", "--version", "v1.0.0"], repo)
    run(["gto", "assign", "churn-model", "--version", "v1.0.0", "--stage", "prod"], repo)
    shutil.rmtree(repo / "models" / "bundle")
    return repo


def test_blue_green_switches_under_load_without_a_failed_request(
        registered: Path, reproduced: Path, bundle: Path, customers, tmp_path: Path):
    green = tmp_path / "green"
    shutil.copytree(bundle, green)
    deployment = {"name": "bg-test", "strategy": "blue_green", "active": "blue",
                  "variants": {"blue": {"stage": "prod"}, "green": {"bundle": str(green)}}}
    with serve(tmp_path, deployment, "--repo", str(registered)) as server:
        meta = httpx.get(f"{server.url}/metadata").json()
        version = orjson.loads((bundle / "manifest.json").read_bytes())["version"]
        assert meta["variants"]["blue"]["source"] == "churn-model#prod"
        assert meta["variants"]["blue"]["model_version"] == version  # fetched at the tag

        async def load_with_switches():
            bodies = [orjson.dumps(c) for c in customers[:500]]
            load = asyncio.create_task(run_load(f"{server.url}/predict", bodies,
                                                requests=1200, concurrency=16))
            states = []
            async with httpx.AsyncClient(base_url=server.url, headers=server.admin()) as admin:
                for path in ("/admin/switch", "/admin/rollback", "/admin/switch"):
                    await asyncio.sleep(0.2)
                    response = await admin.post(path)
                    assert response.status_code == 200, response.text
                    states.append(response.json()["live"])
            return await load, states

        result, states = asyncio.run(load_with_switches())
        assert states == ["green", "blue", "green"]
        assert result["statuses"] == {"200": 1200} and not result["errors"]
        assert {a["variant"] for a in result["answered"]} == {"blue", "green"}
        assert httpx.get(f"{server.url}/metadata").json()["deployment"]["live"] == "green"
        # `to` must name a slot: an empty or unknown one switches nothing
        headers = {**server.admin(), "Content-Type": "application/json"}
        for body, status in ((b'{"to": ""}', 422), (b'{"to": "purple"}', 409),
                             (b'{"to": null, "x": 1}', 422)):
            response = httpx.post(f"{server.url}/admin/switch", content=body, headers=headers)
            assert response.status_code == status, (body, response.text)
        assert httpx.get(f"{server.url}/metadata").json()["deployment"]["live"] == "green"


def test_versions_and_stages_resolve_through_gto_tags(registered: Path):
    from lifecycle.serving.deploy import VariantSpec, revision_of

    head = run(["git", "rev-parse", "HEAD"], registered).stdout.strip()
    assert revision_of(VariantSpec(version="v1.0.0"), "churn-model", registered) == head
    assert revision_of(VariantSpec(stage="prod"), "churn-model", registered) == head
    with pytest.raises(StageError, match=r"no git revision 'churn-model@v9.9.9'"):
        revision_of(VariantSpec(version="v9.9.9"), "churn-model", registered)
    with pytest.raises(StageError, match="no version of churn-model is in stage 'staging'"):
        revision_of(VariantSpec(stage="staging"), "churn-model", registered)


def test_every_deploy_example_starts_or_says_what_to_do_first(reproduced: Path,
                                                             tmp_path: Path):
    """As on a fresh clone after `make run`: a bundle is built, no model version registered
    yet. Each example in deploy/ serves, or stops with one line naming what to run first."""
    started = []
    for path in sorted((Path(__file__).parents[1] / "deploy").glob("*.yaml")):
        where = tmp_path / path.stem
        server = Server("--deployment", str(path), "--repo", str(reproduced), cwd=where,
                        registry=f"sqlite:///{where / 'registry.sqlite'}")
        try:
            server.start()
            started.append(path.stem)
        except AssertionError:
            lines = server.output().strip().splitlines()
            assert server.proc.returncode == 1, lines
            assert len(lines) == 1 and "make register VERSION=" in lines[0], lines
            assert lines[0].startswith("serve: error: variant "), lines
        finally:
            server.stop()
    assert started == ["single"]


def test_a_tampered_bundle_cache_is_refused_and_fetched_again(registered: Path,
                                                               tmp_path: Path):
    """The cache of fetched bundles is private, and a cached bundle must match dvc.lock: one
    forged to agree with its own manifest is not served, the real one is fetched again."""
    import stat

    from lifecycle.packaging.runtime import load_bundle
    from lifecycle.packaging.store import write_bundle
    from lifecycle.serving.deploy import VariantSpec, fetch_bundle

    cache = tmp_path / "cache"
    spec = VariantSpec(stage="prod")
    fetched = fetch_bundle(spec, "churn-model", registered, cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    real = load_bundle(fetched).version
    manifest = orjson.loads((fetched / "manifest.json").read_bytes())
    files = {p.name: p.read_bytes() for p in fetched.iterdir() if p.name != "manifest.json"}
    files["model_card.md"] += b"\nForged: approved for production.\n"
    write_bundle(fetched, files, manifest["lineage"])
    assert load_bundle(fetched).version != real  # self-consistent: its manifest agrees

    again = fetch_bundle(spec, "churn-model", registered, cache)
    assert load_bundle(again).version == real
    assert b"Forged" not in (again / "model_card.md").read_bytes()


def test_kill_9_during_load_loses_no_answered_prediction(bundle: Path, customers,
                                                         tmp_path: Path):
    registry = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    server = Server("--bundle", str(bundle), cwd=tmp_path, registry=registry).start()
    answered: list[str] = []

    def on_answer(answer: dict) -> None:
        answered.append(answer["request_id"])
        if len(answered) == 400:
            server.kill9()  # no shutdown, no flush: the process is gone

    bodies = [orjson.dumps(c) for c in customers[:1000]]
    try:
        result = asyncio.run(run_load(f"{server.url}/predict", bodies, requests=3000,
                                      concurrency=32, on_answer=on_answer,
                                      stop=lambda: server.proc.poll() is not None))
    finally:
        server.stop()
    assert server.proc.returncode == -9
    assert len(answered) >= 400 and sum(result["errors"].values()) > 0
    assert set(answered) <= registry_ids(registry)


def test_a_running_server_loads_a_new_bundle_into_its_idle_slot_and_switches_under_load(
        registered: Path, bundle: Path, customers, tmp_path: Path):
    """No restart for a new version: under steady load, POST /admin/load puts a new bundle in
    the idle slot, /admin/switch makes it live; no request fails, and every answer is recorded
    with the version that gave it. A path outside the bundle root, a tampered bundle, the live
    slot, an unknown version: refused with one line naming the field; the live slot serves on."""
    from lifecycle.feedback import rollout
    from lifecycle.packaging.runtime import load_bundle
    from lifecycle.packaging.store import write_bundle

    root = tmp_path / "bundles"
    v1 = load_bundle(bundle).version
    for name in ("v2", "tampered"):
        shutil.copytree(bundle, root / name)
    manifest = orjson.loads((root / "v2" / "manifest.json").read_bytes())
    files = {p.name: p.read_bytes() for p in (root / "v2").iterdir() if p.name != "manifest.json"}
    files["model_card.md"] += b"\nRetrained: a new version.\n"
    write_bundle(root / "v2", files, manifest["lineage"])  # a new, self-consistent version
    v2 = load_bundle(root / "v2").version
    assert v2 != v1
    with open(root / "tampered" / "model_card.md", "ab") as card:
        card.write(b"\nForged: approved.\n")  # its manifest no longer agrees
    deployment = {"name": "reload-test", "strategy": "blue_green", "active": "blue",
                  "variants": {"blue": {"bundle": str(bundle)}, "green": {"bundle": str(bundle)}}}
    with serve(tmp_path / "srv", deployment, "--repo", str(registered),
               "--bundle-root", str(root)) as server:

        async def load_then_switch():
            bodies = [orjson.dumps(c) for c in customers[:500]]
            load = asyncio.create_task(run_load(f"{server.url}/predict", bodies,
                                                requests=1500, concurrency=16))
            async with httpx.AsyncClient(base_url=server.url, headers=server.admin(),
                                         timeout=60) as admin:
                await asyncio.sleep(0.2)
                loaded = await admin.post("/admin/load", json={"slot": "green", "bundle": "v2"})
                await asyncio.sleep(0.2)
                switched = await admin.post("/admin/switch")
            return await load, loaded, switched

        result, loaded, switched = asyncio.run(load_then_switch())
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["model_version"] == v2 and loaded.json()["previous_version"] == v1
        assert switched.json()["live"] == "green"
        assert result["statuses"] == {"200": 1500} and not result["errors"], result
        answered = result["answered"]
        assert {(a["variant"], a["model_version"]) for a in answered} == {("blue", v1),
                                                                         ("green", v2)}
        rows = registry_rows(server.registry).set_index("request_id")
        assert [rows.loc[a["request_id"], "model_version"] for a in answered] == \
            [a["model_version"] for a in answered]  # recorded with the model that answered

        def refused(body: dict, status: int, field: str, *, headers=None) -> None:
            response = httpx.post(f"{server.url}/admin/load", json=body,
                                  headers=server.admin() if headers is None else headers)
            assert response.status_code == status, (body, response.text)
            detail = response.json()["detail"]
            assert detail.startswith(f"{field}:") if field else True, detail
            assert "\n" not in detail and "Traceback" not in detail, detail

        refused({"slot": "blue", "bundle": "../../.."}, 422, "bundle")  # outside the root
        refused({"slot": "blue", "bundle": str(bundle)}, 422, "bundle")  # absolute, outside
        refused({"slot": "blue", "bundle": "tampered"}, 422, "bundle")
        refused({"slot": "blue", "bundle": "missing"}, 422, "bundle")
        refused({"slot": "blue", "bundle": "v2\x00"}, 422, "bundle")
        refused({"slot": "blue", "version": "v9.9.9"}, 422, "version")
        refused({"slot": "blue", "version": "latest"}, 422, "version")
        refused({"bundle": "v2"}, 422, "slot")
        refused({"slot": "blue", "bundle": "v2", "stage": "prod"}, 422, "body")
        refused({"slot": "blue", "bundle": "v2", "extra": 1}, 422, "extra")
        refused({"slot": "green", "bundle": "v2"}, 409, "slot")  # the live one
        refused({"slot": "purple", "bundle": "v2"}, 409, "slot")
        refused({"slot": "blue", "bundle": "v2"}, 401, "", headers={})
        meta = httpx.get(f"{server.url}/metadata").json()
        assert meta["variants"]["blue"]["model_version"] == v1  # nothing half-loaded
        answer = httpx.post(f"{server.url}/predict", json=customers[0]).json()
        assert (answer["variant"], answer["model_version"]) == ("green", v2)

        # what `promote --server` does: a registered version, fetched at its GTO tag
        state = rollout.deploy_version(server.url, server.env["SERVING_ADMIN_TOKEN"],
                                       "v1.0.0")
        assert state["live"] == "blue" and state["loaded"] == v1
        meta = httpx.get(f"{server.url}/metadata").json()["variants"]["blue"]
        assert meta["source"] == "churn-model@v1.0.0"


def test_a_canary_takes_a_loaded_challenger_then_ramps_it_to_every_customer(
        bundle: Path, customers, tmp_path: Path):
    """Canary, then full, on a running server: the new bundle loaded as the challenger answers
    its share of customers; /admin/share 1.0 sends every customer to it, none failing."""
    from lifecycle.feedback import rollout
    from lifecycle.packaging.runtime import load_bundle
    from lifecycle.packaging.store import write_bundle

    root = tmp_path / "bundles"
    shutil.copytree(bundle, root / "v2")
    manifest = orjson.loads((root / "v2" / "manifest.json").read_bytes())
    files = {p.name: p.read_bytes() for p in (root / "v2").iterdir() if p.name != "manifest.json"}
    files["model_card.md"] += b"\nRetrained: a new version.\n"
    write_bundle(root / "v2", files, manifest["lineage"])
    v1, v2 = load_bundle(bundle).version, load_bundle(root / "v2").version
    deployment = {"name": "ramp-test", "strategy": "canary", "share": 0.2,
                  "variants": {"champion": {"bundle": str(bundle)},
                               "challenger": {"bundle": str(bundle)}}}
    with serve(tmp_path / "srv", deployment, "--bundle-root", str(root)) as server:
        token = server.env["SERVING_ADMIN_TOKEN"]
        loaded = rollout._admin(server.url, "/admin/load", token,
                                {"slot": "challenger", "bundle": "v2"})
        assert loaded["model_version"] == v2
        canary = variants_for(server, customers[:2000])
        assert canary.count("challenger") / 2000 == pytest.approx(0.2, abs=0.04)

        async def ramp_under_load():
            bodies = [orjson.dumps(c) for c in customers[:500]]
            load = asyncio.create_task(run_load(f"{server.url}/predict", bodies,
                                                requests=1000, concurrency=16))
            await asyncio.sleep(0.2)
            state = await asyncio.to_thread(rollout.ramp, server.url, token, 1.0)
            return await load, state

        result, state = asyncio.run(ramp_under_load())
        assert state["share"] == 1.0
        assert result["statuses"] == {"200": 1000} and not result["errors"], result
        assert {a["model_version"] for a in result["answered"]} == {v1, v2}
        full = httpx.post(f"{server.url}/predict", json=customers[:1000], timeout=60).json()
        assert {(a["variant"], a["model_version"]) for a in full} == {("challenger", v2)}
        for body, status in (({"share": 1.5}, 422), ({"shares": 1}, 422)):
            response = httpx.post(f"{server.url}/admin/share", json=body,
                                  headers=server.admin())
            assert response.status_code == status and "\n" not in response.json()["detail"]
