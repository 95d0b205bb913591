"""`make retrain TRAIN_ON=production MODE=incremental` end to end, in a temporary repo with the
real server, DVC and GTO: v1 (stage prod) serves concept-shifted traffic with feedback;
`python -m lifecycle.feedback retrain --train-on production --mode incremental` (what the make
target runs) copies the prod bundle out of the DAG's outputs, runs `dvc exp run` with
`collect.train_on=production` and `train.mode=incremental`, and the gate judges the continued
model against v1 on the newest labelled answers. Checked: the champion's featurizer and model
were continued (not refitted), on production rows only, and no row of the judged window (nor
any newer) reached train, validation or test."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lifecycle.packaging.runtime import load_bundle
from tests.conftest import run
from tests.helpers_feedback import feedback_cli, project_with_v1, serve, simulate

JUDGE = 200


def test_incremental_retraining_on_production_rows_never_sees_the_judged_window(
        reproduced: Path, tmp_path: Path):
    ws = project_with_v1(reproduced, tmp_path / "project", JUDGE)
    registry = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    test = pd.read_parquet(ws / "data" / "processed" / "test.parquet")
    older, newer = tmp_path / "older.parquet", tmp_path / "newer.parquet"
    test.iloc[:len(test) // 2].to_parquet(older)
    test.iloc[len(test) // 2:].to_parquet(newer)
    v1 = {"name": "inc", "strategy": "single", "variants": {"main": {"stage": "prod"}}}
    with serve(ws, tmp_path / "server", registry, v1) as server:
        simulate(server, ws, "concept", older, 600, seed=2)
        simulate(server, ws, "concept", newer, JUDGE, seed=3)  # the newest: the judged window

    proc = feedback_cli(ws, registry, "retrain", "--train-on", "production", "--mode",
                        "incremental", "--name", "inc-1")
    assert proc.returncode in (0, 2), proc.stderr  # promoted or kept: both are verdicts
    assert "retraining (incremental) on production" in proc.stderr
    assert "inc-1" in run(["dvc", "exp", "list", "--all-commits"], ws).stdout
    champion = load_bundle(ws / "models" / "champion" / "v1.0.0")
    assert champion.version == load_bundle(reproduced / "models" / "bundle").version

    # the champion continued, on the production rows' train split only
    report = json.loads((ws / "metrics" / "train.json").read_text())
    split = json.loads((ws / "metrics" / "split.json").read_text())
    assert report["mode"] == "incremental", report
    assert json.dumps(champion.version) in json.dumps(report)
    features = json.loads((ws / "metrics" / "features.json").read_text())
    assert features["fitted_by"]["champion"] == champion.version
    manifest = json.loads((ws / "data" / "raw" / "manifest.json").read_text())
    assert manifest["train_on"] == "production"
    assert manifest["production"]["rows"] == 600 and manifest["production"]["judge_rows"] == JUDGE

    # the judged window (and anything newer) never reached a split: every processed row is a
    # production row answered before the window's first answer
    judge_first = pd.Timestamp(manifest["production"]["judge_first"])
    processed = pd.concat([pd.read_parquet(ws / "data" / "processed" / f"{name}.parquet")
                           for name in ("train", "validation", "test")])
    assert 0 < len(processed) <= 600
    assert sum(split["splits"][name]["rows"] for name in ("train", "validation", "test")) \
        == len(processed), split
    answered = pd.to_datetime(processed["updated_at"], utc=True)
    assert (answered < judge_first).all(), answered.max()
    assert not set(processed["customer_id"]) & set(pd.read_parquet(reproduced / "data" /
                                                                    "processed" /
                                                                    "train.parquet")
                                                    ["customer_id"])  # no original row

    # the gate judged the continued model against v1 on exactly the judged window
    promotion = json.loads((ws / "metrics" / "promotion.json").read_text())
    assert promotion["window"]["rows_scored"] == JUDGE
    assert promotion["champion"] == {"version": "v1.0.0", "bundle": champion.version}
    assert promotion["challenger"]["bundle"] == load_bundle(ws / "models" / "bundle").version
    print(f"\nINCREMENTAL on production: {json.dumps(promotion['decision']['primary'])}; "
          f"train: {json.dumps(report)}")
