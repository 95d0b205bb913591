"""featurize: fitted on the train split alone, unbroken by unseen, rare or missing values at
transform time (in sklearn and in ONNX alike), and a manifest whose version follows the
feature definitions, not the data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from lifecycle import features, io, params, persistence
from lifecycle.contract import Contract, load_contract
from lifecycle.params import FeaturizeParams
from tests.conftest import ROOT

# --- the demo, as the featurize stage fitted it --------------------------------------------


def demo(featurized):
    contract = load_contract(featurized / "contract.yaml")
    p = params.load("featurize", featurized / "params.yaml")
    splits = {name: io.read_parquet(featurized / "data" / "processed" / f"{name}.parquet")
              for name in ("train", "validation")}
    return contract, p, splits


def test_fitted_statistics_are_those_of_the_train_split_alone(featurized):
    contract, p, splits = demo(featurized)
    train = features.model_frame(splits["train"], contract, p.derived)
    featurizer = persistence.load(featurized / "models" / "featurizer.skops")
    numeric = featurizer.named_transformers_["num"]
    columns = features.numeric_columns(contract, p.derived)

    medians = train[columns].median()
    np.testing.assert_array_equal(numeric["impute"].statistics_, medians.to_numpy())
    imputed = train[columns].fillna(medians)
    np.testing.assert_allclose(numeric["scale"].mean_, imputed.mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(numeric["scale"].scale_, imputed.std(ddof=0).to_numpy(),
                               rtol=1e-12)
    encoder = featurizer.named_transformers_["cat"]
    assert list(encoder.feature_names_in_) == features.categorical_columns(contract)
    for column, categories in zip(encoder.feature_names_in_, encoder.categories_, strict=True):
        counts = train[column].value_counts()
        assert list(categories) == sorted(counts.index[counts >= p.min_frequency * len(train)])

    # The comparison can tell: with the validation rows in, the statistics would differ.
    both = features.model_frame(pd.concat(splits.values()), contract, p.derived)
    assert not np.allclose(both[columns].fillna(both[columns].median()).mean(),
                           numeric["scale"].mean_, rtol=1e-9)


def test_featurize_never_reads_the_test_split():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["featurize"]
    assert "test" not in stage["cmd"] and not any("test" in str(d) for d in stage["deps"])


def test_feature_tables_and_manifest(featurized):
    contract, p, splits = demo(featurized)
    manifest = json.loads((featurized / "metrics" / "features.json").read_text())
    table = io.read_parquet(featurized / "data" / "features" / "train.parquet")
    names = [f["name"] for f in manifest["features"]]
    assert list(table.columns) == names + [features.TARGET]
    churned = (splits["train"]["churn"] == "Yes").astype(int)
    assert table[features.TARGET].tolist() == churned.tolist()
    assert len(table) == len(splits["train"]) and not table.isna().any().any()
    assert manifest["count"] == len(names) == sum(manifest["by_type"].values())

    by_name = {f["name"]: f for f in manifest["features"]}
    assert by_name["num__tenure"] == {**by_name["num__tenure"], "type": "numeric",
                                      "source": ["tenure"]}
    assert by_name["num__charges_per_month"]["type"] == "derived"
    assert by_name["num__charges_per_month"]["source"] == ["tenure", "total_charges"]
    assert by_name["ind__total_charges_missing"]["type"] == "indicator"
    assert by_name["cat__contract_Two_year"]["source"] == ["contract"]
    assert all(0 <= f["importance"] < 1 for f in manifest["features"])
    assert len(manifest["version"]) == 12

    rows = json.loads((featurized / "metrics" / "plots" / "featurize" / "importance.json")
                      .read_text())
    assert [r["importance"] for r in rows] == sorted((r["importance"] for r in rows), reverse=True)


# --- a small contract of our own: unseen, rare and missing values -------------------------
CONTRACT = Contract.model_validate({
    "dataset": "accounts", "id": "account_id", "target": {"column": "left", "positive": "yes"},
    "columns": {
        "account_id": {"type": "string", "nullable": False},
        "left": {"type": "category", "allowed": ["yes", "no"]},
        "amount": {"type": "float", "nullable": True},
        "seats": {"type": "int", "nullable": False},
        "plan": {"type": "category", "nullable": True},
    },
})
PARAMS = FeaturizeParams(derived={"amount_per_seat": "amount / seats"}, min_frequency=0.05,
                         scale="standard", select_k_best=None, importance_rows=1000, seed=0)


def accounts(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Plans basic / pro, plus 'legacy' (2 rows: rarer than 5%) and 2 missing; some amounts
    missing."""
    rng = np.random.default_rng(seed)
    plan = ["basic"] * (n // 2) + ["pro"] * (n // 2 - 4) + ["legacy"] * 2 + [None] * 2
    amount = rng.gamma(2.0, 50.0, n)
    amount[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({
        "account_id": [f"A{i}" for i in range(n)],
        "left": np.where(rng.random(n) < 0.3, "yes", "no"),
        "amount": amount,
        "seats": rng.integers(1, 50, n),
        "plan": pd.array(plan, dtype="string"),
    })


def fit(frame: pd.DataFrame, p: FeaturizeParams = PARAMS, contract: Contract = CONTRACT):
    y = features.target_vector(frame, contract, "binary")
    return features.fit_featurizer(features.model_frame(frame, contract, p.derived), y,
                                   contract, p, "binary")


NEW_ROWS = pd.DataFrame({
    "account_id": ["n1", "n2", "n3", "n4", "n5"],
    "left": ["no"] * 5,
    "amount": [10.0, np.nan, 20.0, np.nan, 5.0],
    "seats": [1, 2, 3, 4, 5],
    "plan": pd.array(["basic", "legacy", "brand-new", None, "pro"], dtype="string"),
})


def test_unseen_rare_and_missing_values_transform_cleanly():
    featurizer, manifest = fit(accounts())
    encoder = featurizer.named_transformers_["cat"]
    assert list(encoder.categories_[0]) == ["basic", "pro"]  # legacy and missing are rare

    out = featurizer.transform(features.model_frame(NEW_ROWS, CONTRACT, PARAMS.derived))
    assert np.isfinite(out.to_numpy()).all()
    codes = out[["cat__plan_basic", "cat__plan_pro"]].to_numpy()
    assert codes.tolist() == [[1, 0], [0, 0], [0, 0], [0, 0], [0, 1]]  # rare = unseen = missing
    assert out["ind__amount_missing"].tolist() == [0, 1, 0, 1, 0]
    scaler = featurizer.named_transformers_["num"]["scale"]
    median = featurizer.named_transformers_["num"]["impute"].statistics_[0]
    assert out["num__amount"][1] == pytest.approx((median - scaler.mean_[0]) / scaler.scale_[0])
    assert manifest["by_type"] == {"numeric": 2, "derived": 1, "indicator": 1, "one-hot": 2}


def onnx_transform(featurizer, frame: pd.DataFrame) -> np.ndarray:
    """The featurizer converted by skl2onnx and run by onnxruntime (one input per column)."""
    import onnxruntime as rt
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    numeric = {c: pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns}
    types = [(c, FloatTensorType([None, 1]) if numeric[c] else StringTensorType([None, 1]))
             for c in frame.columns]
    session = rt.InferenceSession(to_onnx(featurizer, initial_types=types).SerializeToString(),
                                  providers=["CPUExecutionProvider"])
    feeds = {c: frame[[c]].to_numpy(np.float32 if numeric[c] else object) for c in frame.columns}
    return session.run(None, feeds)[0]


def test_onnx_groups_rare_and_unseen_categories_as_sklearn_does():
    featurizer, _ = fit(accounts())
    frame = features.model_frame(NEW_ROWS, CONTRACT, PARAMS.derived)
    np.testing.assert_allclose(onnx_transform(featurizer, frame), featurizer.transform(frame),
                               rtol=1e-5, atol=1e-5)


def test_select_k_best_keeps_the_most_informative_and_stays_loadable_and_convertible():
    p = PARAMS.model_copy(update={"select_k_best": 3})
    featurizer, manifest = fit(accounts(), p)
    kept = [f["name"] for f in manifest["features"] if f["selected"]]
    ranked = sorted(manifest["features"], key=lambda f: -f["importance"])
    assert manifest["count"] == len(kept) == 3 and manifest["candidates"] == 6
    assert {f["name"] for f in ranked[:3]} == set(kept)
    frame = features.model_frame(NEW_ROWS, CONTRACT, p.derived)
    assert list(featurizer.transform(frame).columns) == kept

    reloaded = persistence.loads(persistence.dumps(featurizer))  # its scorer is a functools.partial
    pd.testing.assert_frame_equal(reloaded.transform(frame), featurizer.transform(frame))
    np.testing.assert_allclose(onnx_transform(featurizer, frame), featurizer.transform(frame),
                               rtol=1e-5, atol=1e-5)


def test_fitting_is_deterministic_to_the_byte():
    first, second = fit(accounts()), fit(accounts())
    assert persistence.dumps(first[0]) == persistence.dumps(second[0])
    assert first[1] == second[1]


def test_loading_refuses_types_outside_sklearn_numpy_scipy():
    # skops is imported without its default trust list (persistence._skops_io): the refusal
    # must come from our own check, and the import must not drag in all of sklearn
    import subprocess
    import sys

    code = ("import fractions, sys\n"
            "from sklearn.preprocessing import FunctionTransformer\n"
            "from lifecycle import persistence as p\n"
            "data = p.dumps(FunctionTransformer(kw_args={'x': fractions.Fraction(1, 3)}))\n"
            "try:\n    p.loads(data)\nexcept ValueError as exc:\n    print(exc)\n"
            "print(p.loads(p.dumps(FunctionTransformer())).__class__.__name__)\n"
            "print('sklearn.utils._testing' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out == [("skops archive holds types that are not sklearn/numpy or a model family's: "
                    "['fractions.Fraction']"),
                   "FunctionTransformer", "False"]


def test_manifest_version_follows_feature_definitions_not_data():
    base = fit(accounts())[1]["version"]
    other_rows = accounts(seed=1)  # same columns and categories, other values and medians
    unchanged = [fit(other_rows), fit(accounts(), PARAMS.model_copy(update={"seed": 7})),
                 fit(accounts(), PARAMS.model_copy(update={"importance_rows": 50}))]
    assert [m["version"] for _, m in unchanged] == [base] * 3

    changes = [{"min_frequency": 0.06}, {"scale": "robust"}, {"select_k_best": 4},
               {"derived": {"amount_per_seat": "amount / (seats + 1)"}}, {"derived": {}}]
    versions = [fit(accounts(), PARAMS.model_copy(update=c))[1]["version"] for c in changes]
    assert base not in versions and len(set(versions)) == len(versions)

    spec = CONTRACT.model_dump()
    spec["columns"]["seats"]["max"] = 500  # the contract's spec of a feature column
    assert fit(accounts(), contract=Contract.model_validate(spec))[1]["version"] != base
    spec["columns"]["plan"]["role"] = "metadata"  # a column no longer a feature
    assert fit(accounts(), contract=Contract.model_validate(spec))[1]["version"] != base

    selecting = PARAMS.model_copy(update={"select_k_best": 3})  # seed now picks features
    assert (fit(accounts(), selecting)[1]["version"]
            != fit(accounts(), selecting.model_copy(update={"seed": 7}))[1]["version"])


def test_a_category_seen_in_train_only_once_more_changes_the_version():
    rows = accounts()
    rows.loc[:9, "plan"] = "legacy"  # legacy is now frequent: a new one-hot feature
    assert fit(rows)[1]["version"] != fit(accounts())[1]["version"]


def test_target_problems_are_one_clear_error():
    from lifecycle.errors import StageError

    rows = accounts()
    rows.loc[0, "left"] = None
    with pytest.raises(StageError, match="target left is missing in 1 rows"):
        features.target_vector(rows, CONTRACT, "binary")
    with pytest.raises(StageError, match="regression but target left is category"):
        features.target_vector(accounts(), CONTRACT, "regression")
