"""Corrupted sources fed through the real collect -> validate -> preprocess stages.

Each corruption is made in a copy of the real demo database (500 customers) with SQL, the way it
would arrive from a CRM. Nothing may be lost silently: every bad row ends in quarantine.parquet
(`failed_checks`) or removed.parquet (`reason`), or the stage stops with one clear line.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers_stages import (
    assert_one_error_line,
    assert_rows_add_up,
    metrics,
    run_stage,
    run_stage_process,
    run_stages,
    stage_dir,
)

VICTIM = "C0000005"   # the customer whose row is corrupted


def corrupted(tmp_path: Path, demo_sqlite: Path, *statements: str, params=None) -> Path:
    """A stage folder whose source database has had `statements` applied."""
    where = stage_dir(tmp_path / "stages", params)
    db = where / "data" / "external" / "crm.sqlite"
    db.parent.mkdir(parents=True)
    shutil.copy(demo_sqlite, db)
    with sqlite3.connect(db) as con:
        for statement in statements:
            con.execute(statement)
    con.close()
    return where


def interim(where: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(where / "data" / "interim" / f"{name}.parquet")


def assert_accounting_chains(where: Path) -> None:
    """validate and preprocess each add up, and every collected row is accounted for."""
    collected = metrics(where, "validate")["rows_in"]
    manifest = pd.read_json(where / "data" / "raw" / "manifest.json", typ="series")
    assert manifest["rows"] == collected
    for stage in ("validate", "preprocess"):
        assert_rows_add_up(metrics(where, stage))
    assert metrics(where, "validate")["rows_out"] == metrics(where, "preprocess")["rows_in"]
    assert len(interim(where, "quarantine")) == collected - metrics(where, "validate")["rows_out"]
    assert len(interim(where, "clean")) == metrics(where, "preprocess")["rows_out"]


ROW_CORRUPTIONS = {
    # name: (SQL applied to the source, the check the row must fail)
    "wrong_type": ([f"UPDATE customers SET tenure = 'abc' WHERE customer_id = '{VICTIM}'"],
                   "wrong_type:tenure"),
    "out_of_range": ([f"UPDATE customers SET tenure = 500 WHERE customer_id = '{VICTIM}'"],
                     "out_of_range:tenure"),
    "unknown_category": ([f"UPDATE customers SET contract = 'Three year' "
                          f"WHERE customer_id = '{VICTIM}'"], "unknown_category:contract"),
    "null_not_allowed": ([f"UPDATE customers SET internet_service = NULL "
                          f"WHERE customer_id = '{VICTIM}'"], "null_not_allowed:internet_service"),
    "future_timestamp": ([f"UPDATE customers SET updated_at = '2027-06-01T00:00:00' "
                          f"WHERE customer_id = '{VICTIM}'"], "future_timestamp:updated_at"),
    "unparseable_timestamp": ([f"UPDATE customers SET updated_at = 'last tuesday' "
                               f"WHERE customer_id = '{VICTIM}'"], "wrong_type:updated_at"),
}


@pytest.mark.parametrize("case", ROW_CORRUPTIONS)
def test_bad_value_is_quarantined_with_its_reason(case, tmp_path, demo_sqlite):
    statements, reason = ROW_CORRUPTIONS[case]
    where = corrupted(tmp_path, demo_sqlite, *statements)
    # one bad row in 500 is well within the default quality gate
    run_stages(where, "collect", "validate", "preprocess")

    quarantine = interim(where, "quarantine")
    assert quarantine["customer_id"].tolist() == [VICTIM]
    assert reason in quarantine["failed_checks"].iloc[0].split("; ")
    assert metrics(where, "validate")["rows_dropped"] == {f"quarantined:{reason}": 1}
    assert VICTIM not in set(interim(where, "clean")["customer_id"])
    assert_accounting_chains(where)


def test_bad_values_in_a_csv_file_are_quarantined(tmp_path, demo_sqlite):
    """A file source: text in a number column and a misspelt-beyond-repair category."""
    with sqlite3.connect(demo_sqlite) as con:
        table = pd.read_sql_query("SELECT * FROM customers ORDER BY customer_id", con)
    con.close()
    table["tenure"] = table["tenure"].astype(object)
    table.loc[4, "tenure"] = "twelve"
    table.loc[9, "payment_method"] = "Bitcoin"
    table.loc[14, "payment_method"] = " credit-card (AUTOMATIC) "   # only spelt differently
    where = stage_dir(tmp_path, {"collect.source": {"kind": "files", "path": "customers.csv"}})
    table.to_csv(where / "customers.csv", index=False)
    run_stages(where, "collect", "validate", "preprocess")

    quarantine = interim(where, "quarantine").set_index("customer_id")["failed_checks"]
    assert quarantine.to_dict() == {"C0000005": "wrong_type:tenure",
                                    "C0000010": "unknown_category:payment_method"}
    clean = interim(where, "clean").set_index("customer_id")
    assert clean.loc["C0000015", "payment_method"] == "Credit card (automatic)"
    assert_accounting_chains(where)


def test_quarantine_keeps_the_value_as_received_and_masks_personal_data(tmp_path, demo_sqlite):
    where = corrupted(tmp_path, demo_sqlite,
                      f"UPDATE customers SET tenure = 'abc' WHERE customer_id = '{VICTIM}'")
    run_stages(where, "collect", "validate")
    row = interim(where, "quarantine").iloc[0]
    assert row["tenure"] == "abc"             # what the source held, to debug it
    assert row["customer_id"] == VICTIM       # the id stays joinable
    assert row["email"].startswith("masked:")
    assert "@" not in row["email"]


def test_duplicate_id_with_conflicting_values_keeps_the_newest(tmp_path, demo_sqlite):
    where = corrupted(
        tmp_path, demo_sqlite,
        "DROP INDEX idx_customers_id",
        f"INSERT INTO customers SELECT * FROM customers WHERE customer_id = '{VICTIM}'",
        # the second copy is an older version with other content
        "UPDATE customers SET contract = 'Two year', payment_method = 'Mailed check', "
        "updated_at = '2026-09-01T00:00:00' WHERE rowid = (SELECT max(rowid) FROM customers)",
    )
    run_stages(where, "collect", "validate", "preprocess")

    newest = pd.read_parquet(where / "data" / "raw" / "snapshot.parquet")
    newest = newest[newest["customer_id"] == VICTIM].sort_values("updated_at").iloc[-1]
    clean = interim(where, "clean")
    kept = clean[clean["customer_id"] == VICTIM]
    assert len(kept) == 1 and kept["contract"].iloc[0] == newest["contract"] != "Two year"
    removed = interim(where, "removed")
    assert removed[["customer_id", "reason"]].values.tolist() == [[VICTIM, "older_version_of_id"]]
    assert removed["updated_at"].iloc[0] == pd.Timestamp("2026-09-01")
    assert removed["email"].iloc[0].startswith("masked:")
    quality = metrics(where, "data_quality")
    assert quality["detail"]["consistency"]["conflicting_duplicate_ids"] == 2
    assert metrics(where, "preprocess")["rows_dropped"]["older_version_of_id"] == 1
    assert metrics(where, "validate")["rows_in"] == 501
    assert_accounting_chains(where)


def test_stale_data_stops_the_dag_at_the_timeliness_gate(tmp_path, demo_sqlite):
    where = corrupted(tmp_path, demo_sqlite,
                      "UPDATE customers SET updated_at = '2025-01-01T00:00:00'")
    run_stages(where, "collect")
    proc = run_stage_process(where, "validate")
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "validate", "data-quality gate failed", "timeliness")
    quality = metrics(where, "data_quality")
    assert quality["timeliness"] == 0.0
    assert quality["detail"]["timeliness"]["stale_rows"] == 500
    assert_rows_add_up(metrics(where, "validate"))   # the verdict is written for inspection


def test_massive_corruption_trips_the_gate(tmp_path, demo_sqlite):
    where = corrupted(tmp_path, demo_sqlite,
                      "UPDATE customers SET tenure = -1 WHERE rowid % 5 = 0")   # 20% of rows
    run_stages(where, "collect")
    code, err = run_stage(where, "validate")
    assert code == 1
    line = assert_one_error_line(err, "validate", "data-quality gate failed", "accuracy")
    assert "quarantined share 0.2000 > 0.05" in line
    assert len(interim(where, "quarantine")) == 100
    assert_rows_add_up(metrics(where, "validate"))


def test_a_handful_of_bad_rows_passes_a_loosened_gate(tmp_path, demo_sqlite):
    """Thresholds are params: 4% bad rows pass when the gate allows 5%, and fail at 2%."""
    bad = "UPDATE customers SET contract = 'Lifetime' WHERE rowid % 25 = 0"   # 20 rows
    where = corrupted(tmp_path / "loose", demo_sqlite, bad)
    run_stages(where, "collect", "validate", "preprocess")
    dropped = metrics(where, "validate")["rows_dropped"]
    assert dropped == {"quarantined:unknown_category:contract": 20}
    assert_accounting_chains(where)

    strict = corrupted(tmp_path / "strict", demo_sqlite, bad,
                       params={"validate.max_quarantine_share": 0.02})
    run_stages(strict, "collect")
    code, err = run_stage(strict, "validate")
    assert code == 1
    assert_one_error_line(err, "validate", "quarantined share 0.0400 > 0.02")


@pytest.mark.parametrize("statement, words", [
    ("ALTER TABLE customers DROP COLUMN contract", ["missing", "contract"]),
    ("ALTER TABLE customers ADD COLUMN nickname TEXT", ["unexpected", "nickname"]),
], ids=["missing_column", "unexpected_column"])
def test_column_mismatch_is_one_clear_error(statement, words, tmp_path, demo_sqlite):
    where = corrupted(tmp_path, demo_sqlite, statement)
    run_stages(where, "collect")
    proc = run_stage_process(where, "validate")
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "validate", *words)
    assert not (where / "data" / "interim" / "validated.parquet").exists()


def test_unexpected_column_can_be_ignored_by_the_contract(tmp_path, demo_sqlite):
    where = corrupted(tmp_path, demo_sqlite, "ALTER TABLE customers ADD COLUMN nickname TEXT")
    contract = where / "contract.yaml"
    contract.write_text(contract.read_text().replace("extra_columns: error",
                                                     "extra_columns: ignore"))
    run_stages(where, "collect", "validate", "preprocess")
    assert "nickname" not in interim(where, "clean").columns
    assert_accounting_chains(where)


def test_empty_source_is_one_clear_error(tmp_path, demo_sqlite):
    where = corrupted(tmp_path, demo_sqlite, "DELETE FROM customers")
    proc = run_stage_process(where, "collect")
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "collect", "source returned no rows")
    assert not (where / "data" / "raw" / "snapshot.parquet").exists()


def test_unreadable_file_is_one_clear_error(tmp_path):
    where = stage_dir(tmp_path, {"collect.source": {"kind": "files",
                                                    "path": "data/external/customers.parquet"}})
    (where / "data" / "external").mkdir(parents=True)
    (where / "data" / "external" / "customers.parquet").write_bytes(b"PAR1 not really\x00\xff")
    proc = run_stage_process(where, "collect")
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "collect", "cannot read", "customers.parquet", "parquet")


def test_missing_database_is_one_clear_error(tmp_path):
    where = stage_dir(tmp_path)   # the default source: data/external/crm.sqlite, not seeded
    code, err = run_stage(where, "collect")
    assert code == 1
    assert_one_error_line(err, "collect", "SQLite database not found", "crm.sqlite")


def test_missing_input_is_one_clear_error(tmp_path):
    code, err = run_stage(stage_dir(tmp_path), "validate")   # collect has not run
    assert code == 1
    assert_one_error_line(err, "validate", "input not found", "snapshot.parquet")
