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


# --- text files: every line a row or a rejected line with its reason (issue 11, items 1-9) ---
def demo_table(demo_sqlite: Path) -> pd.DataFrame:
    with sqlite3.connect(demo_sqlite) as con:
        table = pd.read_sql_query("SELECT * FROM customers ORDER BY customer_id", con)
    con.close()
    return table


def csv_lines(demo_sqlite: Path) -> list[str]:
    """The demo customers as CSV lines: the header is line 1, customer i (0-based) line i + 2."""
    return demo_table(demo_sqlite).to_csv(index=False).splitlines()


def file_source(tmp_path: Path, name: str, content: str | bytes, params=None,
                contract: str | None = None) -> Path:
    """A stage folder whose source is one file under data/external/."""
    where = stage_dir(tmp_path, {"collect.source": {"kind": "files",
                                                    "path": f"data/external/{name}"},
                                 **(params or {})})
    (where / "data" / "external").mkdir(parents=True, exist_ok=True)
    path = where / "data" / "external" / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    if contract is not None:
        (where / "contract.yaml").write_text(contract)
    return where


def manifest_of(where: Path) -> dict:
    import json
    return json.loads((where / "data" / "raw" / "manifest.json").read_text())


def rejected(where: Path) -> pd.DataFrame:
    return pd.read_parquet(where / "data" / "raw" / "rejected.parquet")


def assert_lines_add_up(where: Path, data_lines: int) -> None:
    """collect: every data line of the source is a row or a rejected line, and validate gets
    exactly the rows collect kept."""
    manifest = manifest_of(where)
    lines = manifest["lines"]
    assert lines["data_lines"] == data_lines == lines["rows"] + lines["rejected"]
    assert manifest["rows"] == lines["rows"] and manifest["rows_rejected"] == lines["rejected"]
    assert len(rejected(where)) == lines["rejected"]
    assert sum(manifest["rejected_reasons"].values()) == lines["rejected"]


def with_line(lines: list[str], index: int, text: str) -> str:
    return "\n".join(lines[:index] + [text] + lines[index + 1:]) + "\n"


QUOTING_FAULTS = {
    # name: (how customer 5's line is damaged (line, header), the reason it is rejected with)
    "unclosed_quote_in_email": (lambda line, _: line.replace("c0000006@", '"c0000006@'),
                                "unclosed_quote"),
    "stray_quote_inside_value": (lambda line, _: line.replace("c0000006@", 'c00"00006@'),
                                 "unclosed_quote"),
    "text_after_closing_quote": (lambda line, _: line.replace("c0000006@example.com",
                                                           '"c0000006"@example.com'),
                                 "bad_quoting"),
    "missing_last_field": (lambda line, _: line.rsplit(",", 1)[0], "field_count"),
    "carriage_return_inside": (lambda line, _: line.replace("@example", "\r@example"),
                               "bad_quoting"),
    "repeated_header": (lambda line, header: header, "repeated_header"),   # files joined
    "extra_field": (lambda line, _: line + ",42", "field_count"),
    "quoted_comma_splits_nothing": (lambda line, _: line.replace("c0000006@", '"c0000006,x"@'),
                                    "bad_quoting"),
}


@pytest.mark.parametrize("fault", QUOTING_FAULTS)
def test_malformed_csv_line_is_rejected_alone_with_file_and_line(fault, tmp_path, demo_sqlite):
    """A damaged line costs itself only: never the lines after it, never silently."""
    damage, reason = QUOTING_FAULTS[fault]
    lines = csv_lines(demo_sqlite)
    where = file_source(tmp_path, "customers.csv", with_line(lines, 6, damage(lines[6], lines[0])))
    run_stages(where, "collect", "validate", "preprocess")

    assert_lines_add_up(where, 500)
    bad = rejected(where)
    assert bad[["line", "reason"]].values[0][0] == 7 and len(bad) == 1
    assert bad["reason"].iloc[0].startswith(reason + ":")
    assert bad["file"].iloc[0].endswith("customers.csv")
    assert manifest_of(where)["rejected_reasons"] == {reason: 1}
    snapshot = pd.read_parquet(where / "data" / "raw" / "snapshot.parquet")
    expected = demo_table(demo_sqlite).drop(index=5)["customer_id"].tolist()
    assert snapshot["customer_id"].tolist() == expected
    # no row carries another's values: every kept email belongs to its own id
    assert (snapshot["email"] == snapshot["customer_id"].str.lower() + "@example.com").all()
    assert metrics(where, "validate")["rows_in"] == 499
    assert_accounting_chains(where)


def test_two_unclosed_quotes_do_not_swallow_the_lines_between(tmp_path, demo_sqlite):
    """Two quotes on different lines balance each other for a lenient parser, which then
    reads the lines between them as one value."""
    lines = csv_lines(demo_sqlite)
    lines[3] = lines[3].replace("c0000003@", '"c0000003@')
    lines[6] = lines[6].replace("c0000006@", 'c0000006"@')
    where = file_source(tmp_path, "customers.csv", "\n".join(lines) + "\n")
    run_stages(where, "collect", "validate")
    assert rejected(where)["line"].tolist() == [4, 7]
    assert_lines_add_up(where, 500)
    assert metrics(where, "validate")["rows_in"] == 498


def test_file_cut_mid_row_is_rejected_not_truncated(tmp_path, demo_sqlite):
    """The last line has no line end: the file may have been cut mid-number (105. of 105.65)."""
    text = "\n".join(csv_lines(demo_sqlite)) + "\n"
    cut = text[:text.rindex(".") + 1]        # ends inside total_charges of the last customer
    where = file_source(tmp_path, "customers.csv", cut)
    run_stages(where, "collect", "validate")
    bad = rejected(where)
    assert bad["line"].tolist() == [501] and bad["reason"].iloc[0].startswith("no_line_end:")
    assert_lines_add_up(where, 500)
    snapshot = pd.read_parquet(where / "data" / "raw" / "snapshot.parquet")
    assert demo_table(demo_sqlite)["customer_id"].iloc[-1] not in set(snapshot["customer_id"])


def test_too_many_malformed_lines_stop_collect_with_the_first(tmp_path, demo_sqlite):
    lines = csv_lines(demo_sqlite)
    for i in range(2, 22):                  # 20 of 500 lines: above max_rejected_share 0.01
        lines[i] = lines[i].rsplit(",", 1)[0]
    where = file_source(tmp_path, "customers.csv", "\n".join(lines) + "\n")
    code, err = run_stage(where, "collect")
    assert code == 1
    assert_one_error_line(err, "collect", "20/500 data lines rejected", "max_rejected_share",
                          "customers.csv line 3: field_count: 23 fields, the header has 24")
    assert len(rejected(where)) == 20     # written before stopping, to inspect


def test_zero_padded_ids_stay_text(tmp_path, demo_sqlite):
    """Ids 0000001... and 1... are ten customers, not five with older versions."""
    table = demo_table(demo_sqlite)
    table["customer_id"] = [str(1000 + i) for i in range(len(table))]   # numeric-looking ids
    table.loc[0:4, "customer_id"] = [f"{i:07d}" for i in range(1, 6)]
    table.loc[5:9, "customer_id"] = [str(i) for i in range(1, 6)]
    where = file_source(tmp_path / "csv", "customers.csv", table.to_csv(index=False))
    jsonl = file_source(tmp_path / "jsonl", "customers.jsonl",
                        table.to_json(orient="records", lines=True))
    for folder in (where, jsonl):
        run_stages(folder, "collect", "validate", "preprocess")
        clean = interim(folder, "clean")
        assert {"0000001", "0000005", "1", "5"} <= set(clean["customer_id"])
        assert "older_version_of_id" not in metrics(folder, "preprocess")["rows_dropped"]
        assert_accounting_chains(folder)


OVERFLOWS = ["inf", "-inf", "1e20", "9223372036854775808", "99999999999999999999", "nan", "NaN",
             "1e400", "-9223372036854775809", "Infinity", "12.5", "true", "1_000", "\uff11\uff12",
             "-1e39"]
JSON_NUMBERS = {"1e20", "9223372036854775808", "99999999999999999999", "1e400",
                "-9223372036854775809", "Infinity", "NaN", "12.5", "-1e39"}   # unquoted in JSONL


@pytest.mark.parametrize("source", ["csv", "jsonl", "sqlite"])
def test_numbers_that_do_not_fit_are_quarantined_not_tracebacks(source, tmp_path, demo_sqlite):
    """Each spelling of a number out of int64 / not finite, in an int column (tenure) and a
    float column (monthly_charges), is one quarantined row: never an exit 255."""
    table = demo_table(demo_sqlite)
    table["tenure"] = table["tenure"].astype(object)
    table["monthly_charges"] = table["monthly_charges"].astype(object)
    victims = {}
    for k, value in enumerate(OVERFLOWS):
        table.loc[10 + k, "tenure"] = value
        victims[table.loc[10 + k, "customer_id"]] = "wrong_type:tenure"
        if value not in ("12.5", "9223372036854775808", "99999999999999999999", "1e20",
                         "-9223372036854775809"):         # these are fine floats (out of range)
            table.loc[30 + k, "monthly_charges"] = value
            victims[table.loc[30 + k, "customer_id"]] = "wrong_type:monthly_charges"
    params = {"validate.max_quarantine_share": 0.1}
    if source == "sqlite":
        where = stage_dir(tmp_path, params)
        (where / "data" / "external").mkdir(parents=True)
        db = where / "data" / "external" / "crm.sqlite"
        shutil.copy(demo_sqlite, db)
        with sqlite3.connect(db) as con:
            for _, row in table.loc[list(range(10, 25)) + list(range(30, 45))].iterrows():
                for column in ("tenure", "monthly_charges"):
                    value = row[column]
                    if isinstance(value, str):   # a real inf where SQLite can hold one
                        value = {"inf": 9e999, "-inf": -9e999, "Infinity": 9e999}.get(
                            value, _sql_number(value))
                    con.execute(f"UPDATE customers SET {column} = ? WHERE customer_id = ?",
                                (value, row["customer_id"]))
        con.close()
    elif source == "csv":
        where = file_source(tmp_path, "customers.csv", table.to_csv(index=False), params)
    else:   # numbers written as JSON numbers where JSON can spell them
        text = table.to_json(orient="records", lines=True)
        for value in JSON_NUMBERS:
            text = text.replace(f'"{value}"', value)
        where = file_source(tmp_path, "customers.jsonl", text, params)
    run_stages(where, "collect", "validate", "preprocess")
    quarantine = interim(where, "quarantine").set_index("customer_id")["failed_checks"]
    for victim, reason in victims.items():
        assert reason in quarantine[victim].split("; "), (victim, quarantine[victim])
    assert_accounting_chains(where)


def _sql_number(text: str):
    """What a CRM would store: an exact integer where SQLite can hold one, else the text."""
    if not text.lstrip("+-").isascii() or not text.lstrip("+-").isdigit():
        return text
    number = int(text)
    return number if -(2**63) <= number < 2**63 else text


@pytest.mark.parametrize("drift, words", [
    (lambda part: part.drop(columns=["total_charges"]), ["customers-2.csv", "missing",
                                                         "total_charges"]),
    (lambda part: part.assign(nickname="x"), ["customers-2.csv", "unexpected", "nickname"]),
], ids=["missing_column", "extra_column"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_glob_files_must_share_their_columns(drift, words, fmt, tmp_path, demo_sqlite):
    table = demo_table(demo_sqlite)
    where = stage_dir(tmp_path, {"collect.source": {"kind": "files",
                                                    "path": f"data/external/customers-*.{fmt}"}})
    (where / "data" / "external").mkdir(parents=True)
    for part, rows in ((1, table.iloc[:250]), (2, drift(table.iloc[250:]))):
        path = where / "data" / "external" / f"customers-{part}.{fmt}"
        {"csv": lambda f, p: f.to_csv(p, index=False),
         "jsonl": lambda f, p: f.to_json(p, orient="records", lines=True),
         "parquet": lambda f, p: f.to_parquet(p, index=False)}[fmt](rows, path)
    code, err = run_stage(where, "collect")
    assert code == 1
    assert_one_error_line(err, "collect", *[w.replace(".csv", f".{fmt}") for w in words])
    assert not (where / "data" / "raw" / "snapshot.parquet").exists()


def test_glob_parts_in_another_column_order_are_one_source(tmp_path, demo_sqlite):
    table = demo_table(demo_sqlite)
    where = stage_dir(tmp_path, {"collect.source": {"kind": "files",
                                                    "path": "data/external/part-*.csv"}})
    (where / "data" / "external").mkdir(parents=True)
    table.iloc[:250].to_csv(where / "data" / "external" / "part-1.csv", index=False)
    table.iloc[250:, ::-1].to_csv(where / "data" / "external" / "part-2.csv", index=False)
    run_stages(where, "collect", "validate")
    assert metrics(where, "validate")["rows_out"] == 500
    assert manifest_of(where)["lines"] == {"files": 2, "data_lines": 500, "rows": 500,
                                           "rejected": 0, "blank": 0}


def _contract_with(where: Path, old: str, new: str) -> None:
    contract = where / "contract.yaml"
    text = contract.read_text()
    assert old in text
    contract.write_text(text.replace(old, new))


SIGNUP = '{type: datetime, nullable: false, role: metadata, format: "%Y-%m-%d"}'


@pytest.mark.parametrize("formats, values, expected", [
    # the demo contract: ISO dates only; day-first and dotted spellings are not guessed
    (None, ["09/10/2025", "12.10.2025", "2025-13-01", "1700000000", "2025-10-01T00:00:00"],
     ["wrong_type"] * 5),
    # day-first and month-first both allowed: a date both read differently is ambiguous
    ('["%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y"]',
     ["09/10/2025", "13/10/2025", "10/13/2025", "10/10/2025"],
     ["ambiguous_date", pd.Timestamp("2025-10-13"), pd.Timestamp("2025-10-13"),
      pd.Timestamp("2025-10-10")]),
    # ISO or day-first with dots (they cannot collide): read as declared, the rest refused
    ('["%Y-%m-%d", "%d.%m.%Y"]', ["12.10.2025", "09.10.2025", "2025-10-12", "12/10/2025"],
     [pd.Timestamp("2025-10-12"), pd.Timestamp("2025-10-09"), pd.Timestamp("2025-10-12"),
      "wrong_type"]),
], ids=["iso_only", "two_orders", "day_first"])
def test_dates_are_read_by_the_contract_format_never_guessed(formats, values, expected, tmp_path,
                                                             demo_sqlite):
    table = demo_table(demo_sqlite)
    for k, value in enumerate(values):
        table.loc[k, "signup_date"] = value
    where = file_source(tmp_path, "customers.csv", table.to_csv(index=False),
                        {"validate.max_quarantine_share": 0.1})
    if formats is not None:
        _contract_with(where, SIGNUP, SIGNUP.replace('"%Y-%m-%d"', formats))
    run_stages(where, "collect", "validate", "preprocess")
    quarantine = interim(where, "quarantine").set_index("customer_id")["failed_checks"]
    clean = interim(where, "clean").set_index("customer_id")["signup_date"]
    for k, outcome in enumerate(expected):
        victim = table.loc[k, "customer_id"]
        if isinstance(outcome, str):
            assert quarantine[victim] == f"{outcome}:signup_date", (values[k], quarantine[victim])
        else:
            assert clean[victim] == outcome, values[k]
    assert_accounting_chains(where)


@pytest.mark.parametrize("signup, rules", [
    ("2026-10-20", ["rule:signup_not_after_update"]),
    ("2099-01-01", ["rule:signup_not_after_update", "rule:signup_not_in_future"]),
], ids=["after_update", "in_2099"])
def test_signup_after_update_or_in_the_future_is_quarantined(signup, rules, tmp_path,
                                                             demo_sqlite):
    where = corrupted(tmp_path, demo_sqlite,
                      f"UPDATE customers SET signup_date = '{signup}', "
                      f"updated_at = '2026-10-01T00:00:00' WHERE customer_id = '{VICTIM}'")
    run_stages(where, "collect", "validate", "preprocess")
    quarantine = interim(where, "quarantine")
    assert quarantine["customer_id"].tolist() == [VICTIM]
    assert quarantine["failed_checks"].iloc[0].split("; ") == rules
    assert metrics(where, "data_quality")["detail"]["consistency"][rules[-1]] == 1
    assert_accounting_chains(where)


# --- degenerate data stops at split, with the numbers (issue 11, item 6) ---------------------
@pytest.mark.parametrize("statements, words", [
    # every row the same content under unique ids: 1 row survives de-duplication
    (["UPDATE customers SET (female, senior_citizen, partner, dependents, tenure, phone_service,"
      " multiple_lines, internet_service, online_security, online_backup, device_protection,"
      " tech_support, streaming_tv, streaming_movies, contract, paperless_billing,"
      " payment_method, monthly_charges, total_charges, churn) = (SELECT female, senior_citizen,"
      " partner, dependents, tenure, phone_service, multiple_lines, internet_service,"
      " online_security, online_backup, device_protection, tech_support, streaming_tv,"
      " streaming_movies, contract, paperless_billing, payment_method, monthly_charges,"
      " total_charges, churn FROM customers WHERE customer_id = 'C0000001')"],
     ["the train split would hold 1 rows", "split.min_rows 20",
      "1 train, 0 validation, 0 test from 1 clean rows"]),
    (["UPDATE customers SET churn = 'No'"],
     ["target churn needs at least two classes", "'No' in all 500 rows"]),
    (["UPDATE customers SET churn = 'No' WHERE customer_id NOT IN ('C0000001', 'C0000002')",
      "UPDATE customers SET churn = 'Yes' WHERE customer_id IN ('C0000001', 'C0000002')"],
     ["class 'Yes' of churn is absent from the validation split", "2 train, 0 validation, 0 test"]),
], ids=["all_rows_identical", "one_class", "class_absent_from_a_split"])
def test_degenerate_data_stops_at_split_with_one_line(statements, words, tmp_path, demo_sqlite):
    where = corrupted(tmp_path, demo_sqlite, *statements)
    run_stages(where, "collect", "validate", "preprocess")
    proc = run_stage_process(where, "split")
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "split", *words)
    assert not (where / "data" / "processed" / "train.parquet").exists()


def test_constant_regression_target_and_small_splits_are_refused():
    from lifecycle.contract import load_contract
    from lifecycle.errors import StageError
    from lifecycle.splitting import check_splits
    from tests.conftest import ROOT

    contract = load_contract(ROOT / "contract.yaml")
    frame = pd.DataFrame({"churn": [3.5] * 40})
    splits = {"train": frame.iloc[:20], "validation": frame.iloc[20:30], "test": frame.iloc[30:]}
    with pytest.raises(StageError, match=r"must vary for regression: '3.5' in all 40 rows"):
        check_splits(splits, contract, "regression", 10)
    varied = {k: f.assign(churn=[1.0, 2.0] * (len(f) // 2)) for k, f in splits.items()}
    check_splits(varied, contract, "regression", 10)
    with pytest.raises(StageError, match=r"the validation split would hold 10 rows "
                                         r"\(< split.min_rows 11\): 20 train, 10 validation"):
        check_splits(varied, contract, "regression", 11)


# --- messages name the file, the line and what was expected (issue 11, item 9) ---------------
def test_json_lines_that_are_not_objects_are_named(tmp_path, demo_sqlite):
    text = demo_table(demo_sqlite).to_json(orient="records", lines=True).splitlines()
    text[2], text[5] = "5", '["a", 1]'
    text[8] = '{"tenure":1,' + text[8][1:]          # which tenure is meant cannot be told
    where = file_source(tmp_path, "customers.jsonl", "\n".join(text) + "\n")
    run_stages(where, "collect")
    bad = rejected(where)
    assert bad[["line", "reason"]].values.tolist() == [
        [3, "not_an_object: expected a JSON object, got a number"],
        [6, "not_an_object: expected a JSON object, got an array"],
        [9, "duplicate_key: 'tenure' twice in one object"]]
    assert_lines_add_up(where, 500)

    only_numbers = file_source(tmp_path / "numbers", "x.jsonl", "1\n2\n3\n")
    code, err = run_stage(only_numbers, "collect")
    assert code == 1
    assert_one_error_line(err, "collect", "x.jsonl line 1",
                          "not_an_object: expected a JSON object, got a number")


def test_bytes_that_are_not_utf8_are_named_at_their_offset(tmp_path, demo_sqlite):
    content = ("\n".join(csv_lines(demo_sqlite)) + "\n").encode()
    at = content.index(b"c0000009@")           # customer 8, line 10
    content = content[:at] + b"\xe9" + content[at + 1:]
    where = file_source(tmp_path, "customers.csv", content)
    run_stages(where, "collect")
    bad = rejected(where)
    assert bad["line"].tolist() == [10]
    assert bad["reason"].iloc[0].startswith(f"not_utf-8: byte 0xe9 at byte offset {at} ")
    assert content[at] == 0xE9
    assert_lines_add_up(where, 500)


@pytest.mark.parametrize("header", [
    "x" * 4096,                                           # one 4 KB name
    ",".join(f"col{i}" for i in range(1000)),              # a 4 KB header of unknown names
    "customer_id,\x00\x01\x02" + "y" * 4000,               # control characters
    "customer_id,email,customer_id",                       # a name twice
], ids=["huge_name", "many_names", "control_characters", "duplicate_name"])
def test_a_bad_header_is_named_by_file_in_a_bounded_line(header, tmp_path, demo_sqlite):
    lines = csv_lines(demo_sqlite)
    where = file_source(tmp_path, "customers.csv", "\n".join([header, *lines[1:]]) + "\n")
    run_stages_ok = run_stage(where, "collect")
    if run_stages_ok[0] == 0:                               # a readable header: validate names it
        code, err = run_stage(where, "validate")
        stage = "validate"
    else:
        code, err = run_stages_ok
        stage = "collect"
        assert "customers.csv" in err
    assert code == 1
    line = assert_one_error_line(err, stage)
    assert len(line) < 400, line


def test_dates_typed_by_the_source_need_no_format(tmp_path, demo_sqlite):
    """A Parquet date (or a SQL DATE) is a date already: the contract's text format does not
    apply to it."""
    table = demo_table(demo_sqlite)
    table["signup_date"] = pd.to_datetime(table["signup_date"]).dt.date   # Parquet date32
    where = stage_dir(tmp_path, {"collect.source": {"kind": "files",
                                                    "path": "data/external/customers.parquet"}})
    (where / "data" / "external").mkdir(parents=True)
    table.to_parquet(where / "data" / "external" / "customers.parquet", index=False)
    _contract_with(where, SIGNUP, SIGNUP.replace('"%Y-%m-%d"', '"%d/%m/%Y"'))
    run_stages(where, "collect", "validate")
    assert metrics(where, "validate")["rows_out"] == 500
