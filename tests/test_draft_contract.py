"""`python -m lifecycle.draft_contract` (`make contract DATA=...`): a contract drafted from data
loads with load_contract, matches what a person wrote for the demo, and accepts its own data."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import yaml

from lifecycle import draft_contract
from lifecycle.contract import load_contract
from tests.conftest import ROOT, run
from tests.helpers_stages import assert_one_error_line, metrics, run_stages, stage_dir


def draft(cwd: Path, *args: str):
    return run([sys.executable, "-m", "lifecycle.draft_contract", *args], cwd, check=False,
               env={"PYTHONPATH": str(ROOT)})


def test_draft_from_the_demo_snapshot_matches_the_written_contract(reproduced_data, tmp_path):
    snapshot = reproduced_data / "data" / "raw" / "snapshot.parquet"
    proc = draft(tmp_path, str(snapshot), "--output", "contract.draft.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "guessed id: customer_id" in proc.stderr and "guessed target: churn" in proc.stderr
    drafted = load_contract(tmp_path / "contract.draft.yaml")
    written = load_contract(ROOT / "contract.yaml")

    assert (drafted.id, drafted.event_time, drafted.target.column, drafted.target.positive) == (
        "customer_id", "updated_at", "churn", "Yes")
    assert set(drafted.personal_data) == {"customer_id", "email"}
    assert list(drafted.columns) == list(written.columns)
    for name, spec in written.columns.items():
        assert drafted.columns[name].type == spec.type, name
        if spec.allowed:
            assert set(drafted.columns[name].allowed) == set(spec.allowed), name
    assert drafted.columns["tenure"].min == 0 and drafted.columns["tenure"].max == 72
    assert drafted.columns["total_charges"].nullable
    assert not drafted.columns["monthly_charges"].nullable

    # the real validate stage, holding the snapshot to the draft: nothing is quarantined
    where = stage_dir(tmp_path / "stages")
    shutil.copy(tmp_path / "contract.draft.yaml", where / "contract.yaml")
    (where / "data" / "raw").mkdir(parents=True)
    shutil.copy(snapshot, where / "data" / "raw" / "snapshot.parquet")
    run_stages(where, "validate")
    assert metrics(where, "validate")["rows_out"] == 7043


def test_draft_from_a_small_csv(tmp_path):
    pd.DataFrame({
        "order_no": ["A1", "A2", "A3", "A4", "A5", "A6"],
        "email": ["a@x.io", "b@x.io", None, "d@x.io", "e@x.io", "f@x.io"],
        "placed_at": [f"2026-01-0{d} 10:00:00" for d in range(1, 7)],
        "items": [1, 2, None, 4, 2, 1],               # whole numbers in a float column: float
        "amount": [9.5, 20.0, 3.25, 7.0, 1.0, 2.5],
        "gift": [True, False, False, True, False, False],
        "channel": ["web", "shop", "web", "web", "shop", "web"],
        "note": ["fast", "slow", "ok", "late", "fine", "meh"],
        "returned": ["no", "no", "yes", "no", "no", "no"],
    }).to_csv(tmp_path / "orders.csv", index=False)
    proc = draft(tmp_path, "orders.csv", "--output", "orders.yaml", "--target", "returned")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "orders.yaml").read_text()
    contract = load_contract(tmp_path / "orders.yaml")

    assert contract.dataset == "orders" and contract.id == "order_no"
    assert contract.target.column == "returned" and contract.target.positive == "yes"
    assert contract.event_time is None and contract.freshness is None   # `placed_at` is no update
    assert contract.personal_data == ["order_no", "email"]
    types = {name: spec.type for name, spec in contract.columns.items()}
    assert types == {"order_no": "string", "email": "string", "placed_at": "datetime",
                     "items": "float", "amount": "float", "gift": "bool", "channel": "category",
                     "note": "string", "returned": "category"}
    assert contract.columns["items"].nullable and not contract.columns["amount"].nullable
    assert (contract.columns["items"].min, contract.columns["items"].max) == (1, 4)
    assert contract.columns["channel"].allowed == ["shop", "web"]
    assert "  items:     {type: float, nullable: true, min: 1.0, max: 4.0}\n" in text   # a line
    assert contract.columns["note"].role == "metadata"   # free text: mostly distinct values
    assert "  amount:    {type: float, nullable: false, min: 1.0, max: 20.0}\n" in text
    assert yaml.safe_load(text)["rules"] == []


def test_draft_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"a": [1, 1], "b": [2, 2]}).to_csv("dups.csv", index=False)
    for args, words in [
        (["nowhere/*.csv"], "no file matches nowhere/*.csv"),
        (["dups.csv"], "name the id with --id"),
        (["dups.csv", "--id", "a", "--target", "label"], "'label' is not in the data"),
    ]:
        assert draft_contract.main(args) == 1
        assert_one_error_line(capsys.readouterr().err, "draft_contract", words)
    assert not Path("contract.draft.yaml").exists()
