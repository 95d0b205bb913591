"""`train.mode: incremental` in the real DAG: featurize reuses the champion bundle's fitted
featurizer (no refit) and train continues the champion's model on the new train rows only.

The first run is the shared `reproduced` project (full mode); its bundle, copied out of the
DAG's outputs, is the champion. The new rows: the same source split with another seed, so the
train split is a different set of customers (about 60% of them the champion trained on). The
test is about the mechanism (which featurizer, which model, what the metrics state, the error
line); production rows (`collect.train_on: production`) feed the same path in the loop."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lifecycle import features, persistence
from lifecycle.packaging.runtime import load_bundle
from tests.conftest import run
from tests.helpers_stages import assert_one_error_line, run_stage_process, set_params


@pytest.fixture(scope="module")
def continued(reproduced: Path, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(first run, champion bundle copy, the project after an incremental `dvc repro`)."""
    where = tmp_path_factory.mktemp("incremental")
    ws = where / "project"
    shutil.copytree(reproduced, ws, symlinks=True)
    champion = where / "champion"
    shutil.copytree(reproduced / "models" / "bundle", champion)
    set_params(ws, {"train.mode": "incremental", "train.champion": str(champion),
                    "split.seed": 7})
    run(["dvc", "repro", "--quiet"], ws)
    return reproduced, champion, ws


def test_incremental_reuses_the_champion_featurizer_and_continues_its_model(continued):
    first, champion_path, ws = continued
    champion = load_bundle(champion_path)
    featurizer = (ws / "models" / "featurizer.skops").read_bytes()
    # the champion's featurizer as its bundle holds it, byte for byte: nothing was refitted on
    # the new rows. (Not the first run's file's bytes: skops numbers shared references, and
    # the fit shares interned strings that a load gives back as equal, separate objects.)
    assert featurizer == persistence.dumps(champion.pipeline.named_steps["features"])
    assert featurizer == persistence.dumps(persistence.load(first / "models" / "featurizer.skops"))
    frame = features.model_frame(pd.read_parquet(first / "data" / "processed" / "test.parquet"),
                                 champion.contract, champion.inference["derived"])
    assert persistence.loads(featurizer).transform(frame).equals(
        persistence.load(first / "models" / "featurizer.skops").transform(frame))
    assert (ws / "data" / "processed" / "train.parquet").read_bytes() != \
        (first / "data" / "processed" / "train.parquet").read_bytes()   # other rows
    model = persistence.load(ws / "models" / "model.skops")
    before = champion.pipeline[-1]
    assert type(model).__name__ == "SGDClassifier"   # logistic weights continued by SGD
    assert model.coef_.shape == before.coef_.shape and (model.coef_ != before.coef_).any()
    report = json.loads((ws / "metrics" / "train.json").read_text())
    split = json.loads((ws / "metrics" / "split.json").read_text())
    assert report["mode"] == "incremental"
    assert report["incremental"]["champion"] == champion.version
    rows = split["splits"]["train"]["rows"]
    assert report["incremental"]["rows"] == report["rows"]["train"] == rows
    manifest = json.loads((ws / "metrics" / "features.json").read_text())
    assert manifest["fitted_by"]["champion"] == champion.version
    # the continued model went through evaluate and package like any other
    assert load_bundle(ws / "models" / "bundle").version != champion.version
    full = json.loads((first / "metrics" / "train.json").read_text())
    assert "mode" not in full   # the default (full) leaves train.json as it was


def test_incremental_champion_errors_are_one_line(continued, tmp_path):
    _, champion_path, ws = continued
    set_params(ws, {"train.model": "gradient_boosting"})
    try:
        proc = run_stage_process(ws, "train")
        assert proc.returncode == 1
        assert_one_error_line(proc.stderr, "train", "train.champion",
                              "logistic_regression model, train.model says gradient_boosting")
    finally:
        set_params(ws, {"train.model": "logistic_regression"})
    set_params(ws, {"train.champion": str(tmp_path / "nowhere")})
    proc = run_stage_process(ws, "featurize")
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "featurize", "train.champion", "not a bundle")
    set_params(ws, {"train.champion": None})
    proc = run_stage_process(ws, "featurize")
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "featurize", "train.champion")
