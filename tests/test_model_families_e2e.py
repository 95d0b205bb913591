"""LightGBM and XGBoost through the real DAG: `make new` on a public table, `train.model` set to
the family, `dvc repro` to the bundle, then the bundle's ONNX parity report, batch scores
(`python -m lifecycle.serving predict`) and a real uvicorn server's /predict, recorded in the
registry, reason codes included. tests/test_package.py covers every task x family at library
level; this is the whole path for each family as a classifier (penguins) and a regressor (cars),
on tables tests/test_byod.py already uses. (XGBoost multiclass is refused: tests/test_train.py.)
"""

from __future__ import annotations

import json

import httpx
import pandas as pd
import pytest
import yaml

from tests.conftest import make_workspace, run
from tests.helpers_serving import Server, registry_rows
from tests.test_byod import MAKE, cars, penguins

# family, table, task, that family's hyperparameters kept small (the DAG, not the model, is
# under test)
CASES = {
    "lightgbm-binary": ("lightgbm", penguins, "binary", {"n_estimators": 30}),
    "lightgbm-regression": ("lightgbm", cars, "regression", {"n_estimators": 30}),
    "xgboost-binary": ("xgboost", penguins, "binary", {"n_estimators": 30, "max_depth": 4}),
    "xgboost-regression": ("xgboost", cars, "regression", {"n_estimators": 30, "max_depth": 4}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_boosting_family_goes_from_train_to_batch_and_api_predictions(tmp_path, case):
    family, write, task, small = CASES[case]
    ws = make_workspace(tmp_path / "project")
    data, args = write(ws)
    run([*MAKE, "new", f"DATA={data}", *args], ws)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    assert params["task"]["type"] == task
    params["train"]["model"] = family
    params["train"][family].update(small)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    run(["dvc", "repro", "--quiet"], ws)

    trained = json.loads((ws / "metrics" / "train.json").read_text())
    assert trained["model"] == family
    assert trained["estimator"] == {"lightgbm": "LGBM", "xgboost": "XGB"}[family] + \
        {"binary": "Classifier", "regression": "Regressor"}[task]
    scores = json.loads((ws / "metrics" / "scores.json").read_text())
    metric = params["evaluate"]["primary_metric"]
    print(f"{case}: {metric} {scores[metric]:.4f} vs baseline {scores['baseline'][metric]:.4f}")
    assert better(scores[metric], scores["baseline"][metric], metric)

    # the bundle is served by ONNX, and package checked it against the sklearn Pipeline
    bundle = ws / "models" / "bundle"
    inference = json.loads((bundle / "inference.json").read_text())
    assert inference["engine"] == "onnx" and (bundle / "model.onnx").exists()
    parity = json.loads((ws / "metrics" / "package.json").read_text())
    engines = parity["onnx_vs_sklearn"]
    assert engines["ok"] and "skipped" not in engines, engines
    assert engines["rows"] > 0 and engines["max_difference"] <= engines["tolerance"] == 1e-4
    assert engines["label_mismatches"] == 0
    assert parity["records_vs_frame"]["ok"]

    # batch: the table make new wrote, scored with the bundle
    source = ws / params["collect"]["source"]["path"]
    run(["python", "-m", "lifecycle.serving", "predict", "--input", str(source),
         "--output", "scores.csv"], ws)
    scored = pd.read_csv(ws / "scores.csv")
    table = pd.read_csv(source) if source.suffix == ".csv" else pd.read_parquet(source)
    assert 0.9 * len(table) <= len(scored) <= len(table)
    assert scored["prediction"].notna().all()

    # the API: a real uvicorn server, the same rows batch scored, answered the same way
    signature = json.loads((bundle / "signature.json").read_text())
    names = [f["name"] for f in signature["fields"]]
    first = scored.head(3)
    rows = [{k: None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)
             for k, v in record.items()}
            for record in table.iloc[first["row"]][names].to_dict("records")]
    registry = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    with Server("--bundle", str(bundle), cwd=tmp_path / "serve", registry=registry) as server:
        answer = httpx.post(f"{server.url}/predict?reasons=3", json=rows, timeout=60)
        assert answer.status_code == 200, answer.text
        answers = answer.json()
    assert len(answers) == 3
    for said, (_, batch) in zip(answers, first.iterrows(), strict=True):
        if task == "regression":
            assert said["prediction"] == pytest.approx(batch["prediction"], rel=1e-6)
        else:
            assert said["prediction"] in inference["classes"]
            assert said["prediction"] == batch["prediction"]
            assert said["probability"] == pytest.approx(batch["probability"], abs=1e-6)
        codes = said["reasons"]["top"]            # why this row got this score
        assert len(codes) == 3 and all(c["feature"] in names for c in codes)
        sizes = [abs(c["contribution"]) for c in codes]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] > 0

    stored = registry_rows(registry).set_index("request_id")
    for said in answers:
        row = stored.loc[said["request_id"]]
        assert row["engine"] == "onnx" and row["model_version"] == said["model_version"]
        stored_prediction = json.loads(row["prediction"]) if task == "regression" \
            else row["prediction"]
        assert stored_prediction == said["prediction"]
        assert json.loads(row["reasons"]) == said["reasons"]


def better(model: float, baseline: float, metric: str) -> bool:
    from lifecycle import metrics

    return model > baseline if metrics.REGISTRY[metric].higher_is_better else model < baseline
