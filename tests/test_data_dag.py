"""The data half of the DAG (seed_demo_source -> collect -> validate -> preprocess -> split),
driven by the real `dvc` in throw-away git repos on the real data.

Targets `split` throughout, so later stages in dvc.yaml neither run nor matter here.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lifecycle.contract import load_contract
from tests.conftest import make_workspace, run
from tests.helpers_stages import assert_rows_add_up, metrics, run_stages, set_params, stage_dir

DATA_STAGES = ["seed_demo_source", "collect", "validate", "preprocess", "split"]
SPLITS = ["train", "validation", "test"]


def ran(proc) -> list[str]:
    """The stages a `dvc repro` actually ran."""
    return re.findall(r"Running stage '([\w-]+)'", proc.stdout + proc.stderr)


def lock_outs(ws: Path, stages: list[str] = DATA_STAGES) -> dict[str, str]:
    """md5 of every output (data and metrics) of the data stages, from dvc.lock."""
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages for out in lock[stage]["outs"]}


@pytest.fixture
def copy_of_reproduced(reproduced_data, tmp_path) -> Path:
    """A private copy of the reproduced workspace (git, DVC cache and all) to change."""
    return Path(shutil.copytree(reproduced_data, tmp_path / "project", symlinks=True))


def test_repro_leaves_everything_up_to_date(reproduced_data):
    status = run(["dvc", "status", "--json", "--with-deps", "split"], reproduced_data)
    assert json.loads(status.stdout) == {}
    again = run(["dvc", "repro", "split"], reproduced_data)
    assert ran(again) == []
    assert set(lock_outs(reproduced_data)) >= {f"data/processed/{s}.parquet" for s in SPLITS}


def test_row_accounting_adds_up_and_chains(reproduced_data):
    collected = json.loads((reproduced_data / "data/raw/manifest.json").read_text())["rows"]
    seeded = yaml.safe_load((reproduced_data / "params.yaml").read_text())["seed_demo_source"]
    assert collected == seeded["rows"] == 7043
    reports = {stage: metrics(reproduced_data, stage)
               for stage in ("validate", "preprocess", "split")}
    for report in reports.values():
        assert_rows_add_up(report)
    assert reports["validate"]["rows_in"] == collected
    assert reports["validate"]["rows_out"] == reports["preprocess"]["rows_in"]
    assert reports["preprocess"]["rows_out"] == reports["split"]["rows_in"]
    split_rows = {s: len(pd.read_parquet(reproduced_data / f"data/processed/{s}.parquet"))
                  for s in SPLITS}
    assert sum(split_rows.values()) == reports["split"]["rows_out"]
    assert split_rows == {s: reports["split"]["splits"][s]["rows"] for s in SPLITS}
    # what is dropped is on record, row by row
    removed = pd.read_parquet(reproduced_data / "data/interim/removed.parquet")
    assert removed["reason"].value_counts().to_dict() == reports["preprocess"]["rows_dropped"]
    quarantine = pd.read_parquet(reproduced_data / "data/interim/quarantine.parquet")
    assert len(quarantine) == sum(reports["validate"]["rows_dropped"].values())


def test_data_quality_scores(reproduced_data):
    quality = metrics(reproduced_data, "data_quality")
    for dimension in ("accuracy", "completeness", "consistency", "timeliness"):
        assert 0 <= quality[dimension] <= 1, dimension
    floors = yaml.safe_load((reproduced_data / "params.yaml").read_text())["validate"]
    for dimension, floor in floors["min_scores"].items():
        assert quality[dimension] >= floor, dimension
    # the real data has missing total_charges (brand-new customers): completeness sees them
    assert quality["completeness"] < 1 and "total_charges" in quality["detail"]["completeness"]


def test_splits_share_no_customer_and_no_duplicate_record(reproduced_data):
    contract = load_contract(reproduced_data / "contract.yaml")
    frames = {s: pd.read_parquet(reproduced_data / f"data/processed/{s}.parquet") for s in SPLITS}
    ids = pd.concat([f[contract.id] for f in frames.values()])
    assert ids.is_unique
    content = pd.concat([f[contract.content_columns].assign(_split=s) for s, f in frames.items()])
    splits_per_record = content.groupby(contract.content_columns, dropna=False)["_split"]
    assert splits_per_record.nunique().max() == 1
    # the demo data does hold repeated records: preprocess removed them before the split
    assert metrics(reproduced_data, "preprocess")["rows_dropped"].get("duplicate_record", 0) > 0
    # stratified: each split keeps the churn rate within a point of the others
    rates = [f[contract.target.column].eq(contract.target.positive).mean()
             for f in frames.values()]
    assert max(rates) - min(rates) < 0.01


def test_two_clean_runs_give_identical_outputs(reproduced_data, tmp_path):
    other = make_workspace(tmp_path / "project")
    run(["dvc", "repro", "--quiet", "split"], other)
    assert lock_outs(other) == lock_outs(reproduced_data)
    for name in ("data_quality", "validate", "preprocess", "split"):
        assert metrics(other, name) == metrics(reproduced_data, name), name


def test_recollecting_an_unchanged_source_changes_nothing(copy_of_reproduced):
    before = lock_outs(copy_of_reproduced)
    forced = run(["dvc", "repro", "-f", "collect"], copy_of_reproduced)
    assert "collect" in ran(forced)
    assert lock_outs(copy_of_reproduced) == before   # byte-identical snapshot and manifest
    after = run(["dvc", "repro", "split"], copy_of_reproduced)
    assert ran(after) == []
    assert lock_outs(copy_of_reproduced) == before


def test_changing_a_split_param_reruns_only_split(copy_of_reproduced):
    upstream = DATA_STAGES[:-1]
    before, before_upstream = lock_outs(copy_of_reproduced), lock_outs(copy_of_reproduced, upstream)
    set_params(copy_of_reproduced, {"split.seed": 7})
    status = json.loads(run(["dvc", "status", "--json", "--with-deps", "split"],
                            copy_of_reproduced).stdout)
    assert list(status) == ["split"]
    proc = run(["dvc", "repro", "split"], copy_of_reproduced)
    assert ran(proc) == ["split"]
    assert lock_outs(copy_of_reproduced, upstream) == before_upstream
    after = lock_outs(copy_of_reproduced)
    assert after["data/processed/train.parquet"] != before["data/processed/train.parquet"]
    assert_rows_add_up(metrics(copy_of_reproduced, "split"))


def test_more_rows_than_the_real_data(tmp_path):
    """rows above 7,043 resample new customers (for timing): more rows, still unique ids."""
    where = stage_dir(tmp_path, {"seed_demo_source.rows": 9000})
    run_stages(where, *DATA_STAGES)
    assert json.loads((where / "data/raw/manifest.json").read_text())["rows"] == 9000
    assert metrics(where, "validate")["rows_in"] == 9000
    clean = pd.read_parquet(where / "data/interim/clean.parquet")
    assert clean["customer_id"].is_unique and len(clean) > 7043
    report = metrics(where, "split")
    assert_rows_add_up(report)
    assert report["rows_out"] == len(clean)
    splits = [pd.read_parquet(where / f"data/processed/{s}.parquet") for s in SPLITS]
    assert pd.concat([s["customer_id"] for s in splits]).is_unique
