"""Bring your own data, tested: the whole DAG runs on scikit-learn's bundled diabetes data
(regression) and wine data (multiclass) with only params.yaml and contract.yaml changed.

Each dataset becomes the CSV file a user would drop under data/external/ (with an id column,
and for wine an event-time column, as real extracts have), described by a contract, and
`collect` is pointed at it. dvc.yaml is not touched: the demo stage `seed_demo_source` still
builds its database, which nothing then reads.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import make_workspace, run

AS_OF = pd.Timestamp("2026-06-30 12:00:00")


def diabetes() -> tuple[pd.DataFrame, dict, dict]:
    """442 patients, disease progression after one year (a number): regression."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(as_frame=True, scaled=False).frame
    data = data.rename(columns={"target": "progression"})
    data.insert(0, "patient_id", [f"P{i:04d}" for i in range(len(data))])
    data["sex"] = data["sex"].astype(int)
    columns = {"patient_id": {"type": "string", "nullable": False},
               "sex": {"type": "int", "nullable": False, "min": 1, "max": 2}}
    for name in data.columns.drop(["patient_id", "sex"]):
        columns[name] = {"type": "float", "nullable": False, "min": 0}
    contract = {"dataset": "diabetes", "id": "patient_id", "target": {"column": "progression"},
                "columns": columns}
    params = {"task.type": "regression", "split.method": "random",
              "evaluate.primary_metric": "rmse"}
    return data, contract, params


def wine() -> tuple[pd.DataFrame, dict, dict]:
    """178 wines of three cultivars, measured in the lab (a class): multiclass."""
    from sklearn.datasets import load_wine

    bunch = load_wine(as_frame=True)
    # One column is named "od280/od315_of_diluted_wines"; the bundle's ONNX inputs cannot keep
    # the "/" yet (packaging renames it and then finds the inputs do not match), so: "_".
    data = bunch.frame.rename(columns=lambda c: c.replace("/", "_")).rename(
        columns={"target": "cultivar"})
    data["cultivar"] = np.asarray(bunch.target_names)[data["cultivar"]]
    data.insert(0, "sample_id", [f"W{i:03d}" for i in range(len(data))])
    hours = np.random.default_rng(0).integers(1, 24 * 60, len(data))
    data["measured_at"] = (AS_OF - pd.to_timedelta(hours, unit="h")).strftime("%Y-%m-%d %H:%M:%S")
    columns = {"sample_id": {"type": "string", "nullable": False},
               "measured_at": {"type": "datetime", "nullable": False},
               "cultivar": {"type": "category", "nullable": False,
                            "allowed": [str(t) for t in bunch.target_names]}}
    for name in data.columns.drop(["sample_id", "measured_at", "cultivar"]):
        columns[name] = {"type": "float", "nullable": False, "min": 0}
    contract = {"dataset": "wine", "id": "sample_id", "event_time": "measured_at",
                "target": {"column": "cultivar"}, "freshness": {"max_age_days": 90},
                "columns": columns}
    params = {"task.type": "multiclass", "split.method": "stratified",
              "evaluate.primary_metric": "accuracy"}
    return data, contract, params


DATASETS = {"diabetes": diabetes, "wine": wine}


def bring_your_own_data(ws, name: str) -> pd.DataFrame:
    """What a user does: drop the file in, describe it, point collect at it, pick the task."""
    data, contract, overrides = DATASETS[name]()
    data.to_csv(ws / "data" / "external" / f"{name}.csv", index=False)
    (ws / "contract.yaml").write_text(yaml.safe_dump(contract, sort_keys=False))
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["collect"]["source"] = {"kind": "files", "path": f"data/external/{name}.csv"}
    params["validate"]["as_of"] = AS_OF.isoformat()
    params["featurize"]["derived"] = {}
    params["evaluate"]["gate"] = {"worst_acceptable": None, "min_skill": None}
    params["package"]["card"]["sensitive_features"] = []
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        params[section][key] = value
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return data


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_whole_dag_runs_on_your_own_data(tmp_path, name):
    ws = make_workspace(tmp_path / "project")
    (ws / "data" / "external").mkdir(parents=True)
    data = bring_your_own_data(ws, name)
    run(["dvc", "repro", "--quiet"], ws)

    train = json.loads((ws / "metrics" / "train.json").read_text())
    manifest = json.loads((ws / "metrics" / "features.json").read_text())
    features = len(data.columns) - 2 - (name == "wine")  # id, target, event time
    assert manifest["count"] == features and manifest["by_type"]["numeric"] == features
    table = pd.read_parquet(ws / "data" / "features" / "train.parquet")
    assert table.shape[1] == features + 1 and "target" in table.columns
    if name == "diabetes":
        assert train["task"] == "regression" and train["metric"] == "rmse"
        assert train["estimator"] == "Ridge"
        # better than always predicting the mean: RMSE below the target's spread
        assert train["validation"]["rmse"] < data["progression"].std()
        assert table["target"].dtype == np.float64
    else:
        assert train["task"] == "multiclass" and train["metric"] == "roc_auc_ovr"
        assert train["validation"]["roc_auc_ovr"] > 0.95
        assert set(table["target"]) == set(data["cultivar"])
    scores = json.loads((ws / "metrics" / "scores.json").read_text())
    assert scores
    assert (ws / "models" / "bundle" / "model.onnx").is_file()
