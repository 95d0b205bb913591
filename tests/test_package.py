"""The package stage and the bundle library: ONNX agrees with sklearn, tampering is refused, two
runs give the same bytes, the lineage is dvc.lock's, and row checks reject with reasons."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle import features, io, models, params
from lifecycle.cleaning import make_coherent
from lifecycle.contract import Contract, Rule, load_contract
from lifecycle.errors import StageError
from lifecycle.packaging import build, lineage, parity, reference, store
from lifecycle.packaging.rows import coherent_columns, plain_value
from lifecycle.packaging.runtime import Bundle, load_bundle
from lifecycle.packaging.store import BUNDLE_FILES, MANIFEST, BundleError
from tests.conftest import ROOT, run
from tests.helpers_stages import assert_one_error_line, run_stage_process, set_params

ALL_FILES = [*BUNDLE_FILES, MANIFEST]
# skl2onnx's tree converters pass booleans as ints to onnx (theirs to fix, harmless here)
pytestmark = pytest.mark.filterwarnings("ignore:Field onnx.AttributeProto.ints")


@pytest.fixture(scope="session")
def bundle_dir(reproduced: Path) -> Path:
    return reproduced / "models" / "bundle"


@pytest.fixture(scope="session")
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(bundle_dir)


@pytest.fixture(scope="session")
def validation(reproduced: Path) -> pd.DataFrame:
    return io.read_parquet(reproduced / "data/processed/validation.parquet")


@pytest.fixture
def bundle_copy(bundle_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))


def plain(value):
    return plain_value(value)


# --- the bundle's contents ---------------------------------------------------------------------
def test_bundle_holds_exactly_its_files_and_a_manifest(bundle_dir: Path, bundle):
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    assert sorted(p.name for p in bundle_dir.iterdir()) == sorted([*manifest["files"], MANIFEST])
    assert set(BUNDLE_FILES) <= set(manifest["files"])
    assert manifest["version"] == bundle.version and len(bundle.version) == 12
    for name in manifest["files"]:
        assert manifest["files"][name] == io.sha256_file(bundle_dir / name)
        assert bundle.file(name) == (bundle_dir / name).read_bytes()
    assert bundle.inference["threshold"] == json.loads(
        (bundle_dir.parents[1] / "metrics/scores.json").read_text())["threshold"]


def test_signature_is_the_id_and_the_feature_columns(bundle):
    contract = bundle.contract
    fields = bundle.signature["fields"]
    assert [f["name"] for f in fields] == [contract.id, *contract.feature_columns]
    assert fields[0]["role"] == "id" and contract.id not in bundle.inference["feature_names"]
    assert not set(contract.personal_data) & set(contract.feature_columns)
    tenure = next(f for f in fields if f["name"] == "tenure")
    assert (tenure["type"], tenure["min"], tenure["max"], tenure["required"]) == ("int", 0, 120,
                                                                                  True)
    ok, rejects = bundle.check_rows(pd.DataFrame([bundle.signature["example"]]))
    assert len(ok) == 1 and rejects.empty


def test_a_rule_reading_as_of_stays_with_validate_even_over_feature_columns():
    """`as_of` is validate's moment; a request has none, so the signature leaves out a rule
    reading it even when every column it reads is a feature (it would fail at serve time)."""
    from lifecycle.packaging.signature import signature

    contract = load_contract(ROOT / "contract.yaml")
    contract = contract.model_copy(update={"rules": [
        *contract.rules, Rule(name="tenure_as_of", check="tenure <= as_of.year * 12"),
        Rule(name="tenure_not_negative", check="tenure >= 0")]})
    assert set(contract.rule_columns(contract.rules[-2])) <= set(contract.feature_columns)
    kept = [r["name"] for r in signature(contract, "ignore")["rules"]]
    assert "tenure_as_of" not in kept and "signup_not_in_future" not in kept
    assert {"total_charges_match_tenure", "tenure_not_negative"} <= set(kept)


def test_reference_stats_describe_train_inputs_and_predictions(bundle, reproduced: Path):
    stats = bundle.reference_stats
    train = io.read_parquet(reproduced / "data/processed/train.parquet")
    assert set(stats["features"]) == set(bundle.contract.feature_columns)
    tenure = stats["features"]["tenure"]
    assert tenure["rows"] == len(train) and sum(tenure["counts"]) == len(train)
    assert len(tenure["edges"]) == 9 and len(tenure["counts"]) == 10   # deciles
    assert np.allclose(reference.histogram(train["tenure"].astype(float), tenure["edges"]),
                       tenure["counts"])
    assert abs(tenure["mean"] - train["tenure"].mean()) < 1e-6
    contract_shares = stats["features"]["contract"]["shares"]
    assert abs(sum(contract_shares.values()) - 1) < 1e-9
    prediction = stats["prediction"]
    validation = io.read_parquet(reproduced / "data/processed/validation.parquet")
    assert prediction["from"] == "validation split"
    assert sum(prediction["counts"]) == len(validation)
    assert 0 <= prediction["min"] <= prediction["max"] <= 1


def test_model_card_has_every_section_and_no_run_dates(bundle, reproduced: Path):
    card = bundle.model_card
    rows = json.loads((reproduced / "metrics/split.json").read_text())["splits"]
    for heading in ("## Intended use", "## Model", "## Data", "## Metrics", "## Parameters",
                    "## Limitations", "## Ethical considerations and personal data"):
        assert heading in card
    assert (f"train {rows['train']['rows']}, validation {rows['validation']['rows']}, "
            f"test {rows['test']['rows']}") in card
    assert "roc_auc" in card and "[0." in card   # the metric with its interval
    assert "customer_id" in card and "senior_citizen" in card
    assert "test split was read only by evaluate" in card


# --- ONNX against sklearn ----------------------------------------------------------------------
def test_onnx_and_sklearn_agree_on_the_validation_split(bundle, validation, reproduced: Path):
    ok, rejects = bundle.check_rows(validation)
    assert rejects.empty
    fast, reference = bundle.predict(ok), bundle.predict(ok, engine="sklearn")
    assert np.abs(fast["probability"] - reference["probability"]).max() < 1e-4
    near = (reference["probability"] - bundle.threshold).abs() <= 1e-4
    assert (fast["prediction"] == reference["prediction"])[~near].all()
    assert set(fast["prediction"]) <= {"Yes", "No"}
    assert ((fast["probability"] >= bundle.threshold) == (fast["prediction"] == "Yes")).all()
    checks = json.loads((reproduced / "metrics/package.json").read_text())
    assert checks["onnx_vs_sklearn"]["ok"] and checks["onnx_vs_sklearn"]["rows"] > len(validation)
    assert checks["records_vs_frame"]["ok"]


def test_edge_rows_score_alike_in_both_engines(bundle, validation):
    edges = parity.edge_rows(validation, bundle.contract)
    assert (edges["contract"] == "__unseen_category__").any()
    assert edges["total_charges"].isna().any()
    report = parity.compare_engines(bundle, edges, 1e-4)
    assert report["ok"], report


def test_reason_codes_are_what_moves_the_answer(bundle, validation):
    ok, _ = bundle.check_rows(validation.head(20))
    records = [{k: plain(v) for k, v in row.items()} for row in ok.to_dict("records")]
    checked, _ = bundle.check_records(records)
    reasons = bundle.reasons(checked, top=3)
    assert len(reasons) == len(checked)
    typical = bundle._typical_values()
    for record, said in zip(checked[:5], reasons[:5], strict=True):
        assert said["units"] == "probability of Yes" and len(said["top"]) == 3
        sizes = [abs(r["contribution"]) for r in said["top"]]
        assert sizes == sorted(sizes, reverse=True)
        first = said["top"][0]
        assert first["value"] == record[first["feature"]]
        without = {**record, first["feature"]: typical[first["feature"]]}
        moved = (bundle.predict_records([record])[0]["probability"]
                 - bundle.predict_records([without])[0]["probability"])
        assert first["contribution"] == pytest.approx(moved, abs=1e-12)


def test_predict_records_matches_predict(bundle, validation):
    ok, _ = bundle.check_rows(validation.head(300))
    records = [{k: plain(v) for k, v in row.items()} for row in ok.to_dict("records")]
    checked, reasons = bundle.check_records(records)
    assert not reasons and len(checked) == 300
    fast = bundle.predict_records(checked)
    frame = bundle.predict(ok)
    assert [r["prediction"] for r in fast] == frame["prediction"].tolist()
    assert np.allclose([r["probability"] for r in fast], frame["probability"], rtol=0, atol=0)


def test_stage_fails_and_removes_the_bundle_when_engines_disagree(reproduced: Path,
                                                                   tmp_path: Path):
    measured = json.loads((reproduced / "metrics/package.json").read_text())
    assert measured["onnx_vs_sklearn"]["max_difference"] > 1e-18   # rounding, never zero
    ws = Path(shutil.copytree(reproduced, tmp_path / "ws", symlinks=True))
    set_params(ws, {"package.tolerance": 1e-18})
    proc = run_stage_process(ws, "package", env={"PYTHONPATH": str(ws)})
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "package", "engines disagree", "bundle removed")
    assert not (ws / "models" / "bundle").exists()
    assert not json.loads((ws / "metrics/package.json").read_text())["onnx_vs_sklearn"]["ok"]


# --- tampering ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_FILES)
def test_one_changed_byte_in_any_file_is_refused(bundle_copy: Path, name: str):
    path = bundle_copy / name
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle] = ord("7") if data[middle] != ord("7") else ord("8")
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=name.replace(".", r"\.")):
        load_bundle(bundle_copy)


def test_manifest_whitespace_edit_is_refused(bundle_copy: Path):
    path = bundle_copy / MANIFEST
    path.write_text(path.read_text().replace('\n  "files"', '\n   "files"', 1))
    with pytest.raises(BundleError, match="manifest.json: its bytes differ"):
        load_bundle(bundle_copy)


def test_unexpected_file_is_refused(bundle_copy: Path):
    (bundle_copy / "notes.txt").write_text("hello")
    with pytest.raises(BundleError, match="unexpected file.*notes.txt"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("name", ["model.onnx", "signature.json"])
def test_missing_file_is_refused(bundle_copy: Path, name: str):
    (bundle_copy / name).unlink()
    with pytest.raises(BundleError, match=f"missing: {name}"):
        load_bundle(bundle_copy)


def test_a_manifest_without_a_core_file_is_refused(bundle_copy: Path):
    files = {n: (bundle_copy / n).read_bytes() for n in BUNDLE_FILES if n != "signature.json"}
    with pytest.raises(BundleError, match="must include"):
        store.write_bundle(bundle_copy, files, {})
    manifest = json.loads((bundle_copy / MANIFEST).read_text())
    del manifest["files"]["signature.json"]
    manifest["version"] = store.manifest_for(files, manifest["lineage"])["version"]
    (bundle_copy / "signature.json").unlink()
    (bundle_copy / MANIFEST).write_bytes(store.canonical_json(manifest))
    with pytest.raises(BundleError, match="a bundle holds at least"):
        load_bundle(bundle_copy)


def test_a_folder_without_manifest_is_not_a_bundle(bundle_copy: Path):
    (bundle_copy / MANIFEST).unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(bundle_copy)


# --- reproducibility and lineage ---------------------------------------------------------------
def test_two_package_runs_give_identical_bundles(reproduced: Path, bundle_dir: Path,
                                                 tmp_path: Path):
    ws = Path(shutil.copytree(reproduced, tmp_path / "ws", symlinks=True))
    shutil.rmtree(ws / "models" / "bundle")
    run(["dvc", "repro", "--quiet", "--force", "--single-item", "package"], ws)
    for name in ALL_FILES:
        assert (ws / "models/bundle" / name).read_bytes() == (bundle_dir / name).read_bytes(), name


def test_manifest_lineage_matches_dvc_lock(reproduced: Path, bundle):
    lock = yaml.safe_load((reproduced / "dvc.lock").read_text())["stages"]
    lineage = bundle.manifest["lineage"]
    upstream = ["seed_demo_source", "collect", "validate", "preprocess", "split", "featurize",
                "train", "evaluate"]
    assert list(lineage["stages"]) == upstream   # explain is not upstream of package
    for name, recorded in lineage["stages"].items():
        assert recorded["deps"] == {d["path"]: d["md5"] for d in lock[name]["deps"]}
        outs = {o["path"]: o["md5"] for o in lock[name]["outs"]}
        assert recorded["outs"].items() <= outs.items()
        assert recorded["params"] == {   # where the work ran (engine.*) is not lineage
            file: {k: v for k, v in keys.items() if not k.startswith("engine.")}
            for file, keys in lock[name].get("params", {}).items()}
    assert "models/model.skops" in lineage["stages"]["train"]["outs"]
    assert "data/processed/test.parquet" in lineage["stages"]["split"]["outs"]   # via evaluate
    assert "metrics/train.json" not in lineage["stages"]["train"]["outs"]   # a side output
    assert lineage["params"]["train"]["model"] == lock["train"]["params"]["params.yaml"][
        "train"]["model"]
    own = {d["path"]: d["md5"] for d in lock["package"]["deps"]}
    for path, md5 in {**lineage["package"]["inputs"], **lineage["package"]["code"]}.items():
        if not path.endswith("__init__.py"):   # docstring-only packages (see dag_check)
            assert own[path] == md5, f"{path} is read by package but not declared in dvc.yaml"


def test_lineage_refuses_a_stale_lock():
    lock = {"stages": {"train": {"deps": [{"path": "a.parquet", "md5": "1"}],
                                 "outs": [{"path": "model.skops", "md5": "old"}]}}}
    with pytest.raises(StageError, match="model.skops.*stale"):
        lineage.lineage(lock, {"model.skops": "new"}, {}, {})
    fresh = lineage.lineage(lock, {"model.skops": "old"}, {"stages/package.py": "c"}, {})
    assert list(fresh["stages"]) == ["train"] and fresh["code"] == {"stages/package.py": "c"}


# --- row checks --------------------------------------------------------------------------------
def test_check_rows_rejects_bad_rows_with_their_reasons(bundle):
    good = dict(bundle.signature["example"])
    rows = [
        good,
        {**good, "tenure": "twelve"},                 # wrong type
        {**good, "tenure": 500},                      # out of range (and the charges rule)
        {**good, "contract": None},                   # missing required
        {k: v for k, v in good.items() if k != "payment_method"},   # field absent
        {**good, "total_charges": 1e6},               # cross-field rule
        {**good, "customer_id": "  "},                # the id is required too
        {**good, "contract": "Three year"},           # unknown category: accepted
        {**good, "contract": " one   YEAR ", "total_charges": None},   # coherent spelling, null
        {**good, "monthly_charges": "56.95"},         # a number sent as text: readable
    ]
    ok, rejects = bundle.check_rows(pd.DataFrame(rows))
    assert rejects["reason"].to_dict() == {
        1: "wrong_type:tenure",
        2: "out_of_range:tenure; rule:total_charges_match_tenure",
        3: "missing_required:contract",
        4: "missing_required:payment_method",
        5: "rule:total_charges_match_tenure",
        6: "missing_required:customer_id",
    }
    assert list(ok.index) == [0, 7, 8, 9]
    assert ok.loc[8, "contract"] == "One year" and pd.isna(ok.loc[8, "total_charges"])
    assert ok.loc[9, "monthly_charges"] == 56.95
    records, reasons = bundle.check_records(rows)
    assert reasons == rejects["reason"].to_dict()
    assert [r["contract"] for r in records] == ["One year", "Three year", "One year", "One year"]
    assert len(bundle.predict(ok)) == 4 and len(bundle.predict_records(records)) == 4


def test_unknown_categories_can_be_rejected(bundle_dir: Path, bundle):
    signature = {**bundle.signature, "unknown_category": "reject"}
    files = {n: (bundle_dir / n).read_bytes() for n in bundle.manifest["files"]}
    files["signature.json"] = store.canonical_json(signature)
    strict = Bundle(bundle_dir, {**files, MANIFEST: (bundle_dir / MANIFEST).read_bytes()})
    row = {**bundle.signature["example"], "contract": "Three year"}
    _, rejects = strict.check_rows(pd.DataFrame([row]))
    assert rejects["reason"].tolist() == ["unknown_category:contract"]
    assert strict.check_records([row])[1] == {0: "unknown_category:contract"}


def _value_strategy(field: dict):
    options = [st.none(), st.integers(-3, 130), st.floats(-10, 5000, allow_nan=False),
               st.just(float("nan")), st.booleans(),
               st.text(alphabet=" \t\n\x0b\x1cab1.-eY", max_size=5)]
    if field.get("allowed"):
        allowed = st.sampled_from(field["allowed"])
        options += [allowed, allowed.map(str.upper), allowed.map(lambda a: f"  {a} "),
                    allowed.map(lambda a: a.replace(" ", "_"))]
    return st.one_of(*options)


@st.composite
def _records(draw, signature: dict):
    example = signature["example"]
    out = []
    for _ in range(draw(st.integers(1, 4))):
        record = dict(example)
        for field in draw(st.lists(st.sampled_from(signature["fields"]), max_size=4)):
            record[field["name"]] = draw(_value_strategy(field))
        out.append(record)
    return out


def test_check_records_agrees_with_check_rows(bundle):
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_records(bundle.signature))
    def agree(records):
        ok, rejects = bundle.check_rows(pd.DataFrame(records, dtype=object))
        fast_ok, fast_reasons = bundle.check_records(records)
        assert fast_reasons == rejects["reason"].to_dict()
        names = [f["name"] for f in bundle.signature["fields"]]
        expected = [{n: plain(row[n]) for n in names} for row in ok.to_dict("records")]
        assert [{n: r[n] for n in names} for r in fast_ok] == expected

    agree()


def test_batch_cleaning_equals_make_coherent(bundle):
    rng = np.random.default_rng(0)
    n = 600
    contract = bundle.contract
    frame = pd.DataFrame({
        contract.id: [f"c{i}" if i % 50 else f" c {i}\t" for i in range(n)],
        "contract": rng.choice(["One year", "one_year", " Two year", "Month-to-month", "",
                                None, "Three year"], n),
        "tenure": rng.choice(["12", "x", None, "3.0", "3.5", " 7 "], n),
        "monthly_charges": rng.normal(50, 10, n),
    }).astype({contract.id: "string", "contract": "string", "tenure": object})
    expected, unreadable = make_coherent(frame, contract)
    got, got_unreadable = coherent_columns(frame, contract)
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(got_unreadable, unreadable.astype(bool))
    tidy_ids = frame.assign(**{contract.id: [f"c{i}" for i in range(n)]})
    pd.testing.assert_frame_equal(coherent_columns(tidy_ids, contract)[0],
                                  make_coherent(tidy_ids, contract)[0])


# --- other tasks and model families (in memory: the library without the DAG) -----------------
def _small_bundle(tmp_path: Path, task: str, family: str, contract: Contract,
                  train: pd.DataFrame, validation: pd.DataFrame,
                  min_frequency: float | None = None) -> Bundle:
    fp = params.load("featurize", ROOT / "params.yaml")
    if min_frequency is not None:
        fp = fp.model_copy(update={"min_frequency": min_frequency})
    tp = params.load("train", ROOT / "params.yaml", models.TrainParams)
    tp = tp.model_copy(update={"model": family})
    frame = features.model_frame(train, contract, fp.derived)
    y = features.target_vector(train, contract, task)
    featurizer, _ = features.fit_featurizer(frame, y, contract, fp, task)
    small = {"random_forest": {"n_estimators": 10, "max_depth": 4},
             "gradient_boosting": {"max_iter": 20}, "mlp": {"max_iter": 30},
             "lightgbm": {"n_estimators": 30}, "xgboost": {"n_estimators": 30},
             "lightgbm.LGBMClassifier": {"n_estimators": 30, "verbose": -1}}.get(family, {})
    model = models.build_model(task, tp, rows=len(frame)).set_params(**small)
    model.fit(featurizer.transform(frame), y)
    pp = params.load("package", ROOT / "params.yaml")
    text = yaml.safe_dump(contract.model_dump()).encode()
    files = build.build_files(
        name="test", task=task, contract_text=text, featurizer=featurizer, model=model,
        derived=fp.derived, threshold=0.3 if task == "binary" else None, train=train,
        validation=validation, scores={}, split_summary={}, lineage_info={},
        card=pp.card.model_dump(), opset=pp.onnx_opset,
        tolerance=pp.tolerance, unknown_category="accept", bins=5,
        reference_sample=pp.reference_sample.model_dump())
    store.write_bundle(tmp_path / task / family, files, {})
    return load_bundle(tmp_path / task / family)


def _contract_for(task: str) -> Contract:
    base = load_contract(ROOT / "contract.yaml").model_dump()
    if task == "multiclass":
        base["target"] = {"column": "payment_method", "positive": None}
    elif task == "regression":
        base["target"] = {"column": "monthly_charges", "positive": None}
        base["rules"] = []
        base["columns"]["monthly_charges"]["nullable"] = False
    return Contract.model_validate(base)


@pytest.mark.parametrize("task,family,min_frequency", [
    ("binary", "decision_tree", None), ("binary", "random_forest", None),
    ("binary", "gradient_boosting", None), ("binary", "mlp", None),
    ("binary", "logistic_regression", 0.6),   # columns without a frequent category: unused
    ("multiclass", "gradient_boosting", None), ("multiclass", "logistic_regression", None),
    ("regression", "random_forest", None), ("regression", "logistic_regression", None),
    ("binary", "lightgbm", None), ("multiclass", "lightgbm", None),
    ("regression", "lightgbm", None), ("binary", "xgboost", None), ("regression", "xgboost", None),
    ("binary", "lightgbm.LGBMClassifier", None),   # by import path: the same converter
    ("binary", "sklearn.gaussian_process.GaussianProcessClassifier", None),   # no converter
])
def test_every_task_and_family_packages_with_agreeing_engines(
        tmp_path: Path, reproduced: Path, task: str, family: str, min_frequency: float | None):
    contract = _contract_for(task)
    train = io.read_parquet(reproduced / "data/processed/train.parquet").head(600)
    validation = io.read_parquet(reproduced / "data/processed/validation.parquet").head(200)
    bundle = _small_bundle(tmp_path, task, family, contract, train, validation, min_frequency)
    checked = pd.concat([validation, parity.edge_rows(validation, contract)],
                        ignore_index=True)
    report = parity.compare_engines(bundle, checked, 1e-4)
    assert report["ok"], report
    assert parity.compare_paths(bundle, validation)["ok"]
    answer = bundle.predict(validation)
    if task == "regression":
        assert list(answer.columns) == ["prediction"] and answer["prediction"].between(0, 200).all()
    else:
        assert set(answer["prediction"]) <= set(bundle.classes)
        assert answer["probability"].between(0, 1).all()
    if task == "multiclass":
        assert bundle.classes == sorted(contract.columns["payment_method"].allowed)
    records = [{k: plain(v) for k, v in row.items()}
               for row in bundle.check_rows(validation.head(3))[0].to_dict("records")]
    reasons = bundle.reasons(bundle.check_records(records)[0], top=2)
    assert [len(r["top"]) for r in reasons] == [2, 2, 2]
    if family.endswith("GaussianProcessClassifier"):   # served from skops, and says so
        assert bundle.engine == "sklearn" and "model.onnx" not in bundle.manifest["files"]
        assert "served from model.skops" in bundle.inference["onnx"]["unavailable"]
        assert "no ONNX" in bundle.model_card and "skipped" in report
    else:
        assert bundle.engine == "onnx" and "skipped" not in report
