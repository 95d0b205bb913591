"""train_scale: a seeded sample of stated size, or XGBoost trained on a Dask LocalCluster
(2 worker processes); which one, and on how many rows, is stated in metrics/train.json."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers_stages import run_stages, set_params, stage_dir
from tests.test_dask_engine import s3, scheduler  # noqa: F401 - fixtures: the cluster, S3


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory) -> Path:
    """The demo's data stages and featurize, pandas engine (shared; copy before changing)."""
    where = stage_dir(tmp_path_factory.mktemp("features"))
    run_stages(where, "seed_demo_source", "collect", "validate", "preprocess", "split",
               "featurize")
    return where


def copy_of(features_dir: Path, dest: Path, params: dict) -> Path:
    shutil.copytree(features_dir, dest)
    set_params(dest, params)
    return dest


def train_json(where: Path) -> dict:
    return json.loads((where / "metrics/train.json").read_text())


def test_a_seeded_sample_of_stated_size(features_dir: Path, tmp_path: Path) -> None:
    available = len(pd.read_parquet(features_dir / "data/features/train.parquet"))
    runs = []
    for name in ("a", "b"):
        where = copy_of(features_dir, tmp_path / name,
                        {"train_scale.method": "sample", "train_scale.rows": 1500})
        run_stages(where, "train")
        runs.append(where)
    report = train_json(runs[0])
    assert report["training_rows"] == {"method": "sample", "rows": 1500, "of": available,
                                       "seed": 42}
    assert report["rows"]["train"] == 1500
    digests = [hashlib.sha256((w / "models/model.skops").read_bytes()).hexdigest() for w in runs]
    assert digests[0] == digests[1]   # seeded: the same sample, the same model

    everything = copy_of(features_dir, tmp_path / "all", {})
    run_stages(everything, "train")
    assert train_json(everything)["training_rows"] == {"method": "all", "rows": available,
                                                       "of": available}


def test_xgboost_trained_on_the_cluster(features_dir: Path, tmp_path: Path, scheduler: str,  # noqa: F811
                                        monkeypatch) -> None:
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", scheduler)
    where = copy_of(features_dir, tmp_path / "xgb", {
        "train.model": "xgboost", "train_scale.method": "xgboost_dask",
        "train_scale.rows": 2000, "engine.kind": "dask", "engine.partition_rows": 800})
    run_stages(where, "train", "evaluate")
    report = train_json(where)
    available = len(pd.read_parquet(where / "data/features/train.parquet"))
    assert report["training_rows"] == {"method": "xgboost_dask", "rows": available,
                                       "of": available, "seed": 42, "workers": 2,
                                       "train_metric_rows": 2000}
    assert report["estimator"] == "XGBClassifier"
    scores = json.loads((where / "metrics/scores.json").read_text())
    assert scores["roc_auc"] > 0.8   # a real model, scored by evaluate as any other


def test_xgboost_dask_refuses_another_family(features_dir: Path, tmp_path: Path) -> None:
    from tests.helpers_stages import run_stage

    where = copy_of(features_dir, tmp_path / "lr", {"train_scale.method": "xgboost_dask",
                                                    "engine.kind": "dask"})
    code, err = run_stage(where, "train")
    assert code == 1
    assert "xgboost_dask trains train.model xgboost" in err and "Traceback" not in err
