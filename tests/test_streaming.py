"""The pandas engine streams: validate, preprocess, split and featurize read their input
partition by partition (`engine.partition_rows`) and write each output row group by row group.
Here the real stages run on the demo source with problems placed far apart (a duplicate record
and an older, conflicting version of an id at the far end of the table from their originals,
bad rows in between), once as one partition and once in partitions of 7 rows: every output and
metric must be the same bytes, and the problems found across partitions."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.helpers_stages import metrics, run_stages, stage_dir

STAGES = ("collect", "validate", "preprocess", "split", "featurize")
FIRST, SECOND = "C0000001", "C0000002"
SPREAD = [
    "DROP INDEX idx_customers_id",
    # a duplicate record of the first customer under a new id, at the end of the table
    f"INSERT INTO customers SELECT * FROM customers WHERE customer_id = '{FIRST}'",
    "UPDATE customers SET customer_id = 'C9999999', email = 'new@example.com' "
    "WHERE rowid = (SELECT max(rowid) FROM customers)",
    # an older version of the second customer, with other content, at the end too
    f"INSERT INTO customers SELECT * FROM customers WHERE customer_id = '{SECOND}'",
    "UPDATE customers SET contract = 'Two year', updated_at = '2026-09-01T00:00:00' "
    "WHERE rowid = (SELECT max(rowid) FROM customers)",
    # rows that break the contract, and one without a target, in the middle
    "UPDATE customers SET tenure = 'abc' WHERE customer_id = 'C0000250'",
    "UPDATE customers SET contract = 'Three year' WHERE customer_id = 'C0000300'",
    "UPDATE customers SET churn = NULL WHERE customer_id = 'C0000400'",
]
OUTPUTS = ["data/raw/snapshot.parquet", "data/interim/validated.parquet",
           "data/interim/quarantine.parquet", "data/interim/clean.parquet",
           "data/interim/removed.parquet", "data/processed/train.parquet",
           "data/processed/validation.parquet", "data/processed/test.parquet",
           "data/features/train.parquet", "data/features/validation.parquet",
           "models/featurizer.skops", "metrics/validate.json", "metrics/data_quality.json",
           "metrics/preprocess.json", "metrics/split.json", "metrics/features.json"]


def reproduce(where: Path, demo_sqlite: Path, partition_rows: int,
              *more: str) -> dict[str, str]:
    """The data stages run on the spread-out source (and `more` SQL); {output: sha256}."""
    stage_dir(where, {"engine.partition_rows": partition_rows,   # the rows as inserted:
                      "collect.source.query": "SELECT * FROM customers ORDER BY rowid"})
    db = where / "data" / "external" / "crm.sqlite"
    db.parent.mkdir(parents=True)
    shutil.copy(demo_sqlite, db)
    with sqlite3.connect(db) as con:
        for statement in [*SPREAD, *more]:
            con.execute(statement)
    con.close()
    run_stages(where, *STAGES)
    leftovers = [p for p in where.rglob(".spill-*")]
    assert not leftovers, leftovers
    return {out: hashlib.sha256((where / out).read_bytes()).hexdigest() for out in OUTPUTS}


def test_partitions_of_7_rows_give_the_one_partition_bytes(tmp_path, demo_sqlite):
    whole = reproduce(tmp_path / "whole", demo_sqlite, 1_000_000)
    streamed = reproduce(tmp_path / "streamed", demo_sqlite, 7)
    assert streamed == whole

    where = tmp_path / "streamed"
    quality = metrics(where, "data_quality")
    assert quality["detail"]["consistency"]["conflicting_duplicate_ids"] == 2  # rows 2 and 502
    assert metrics(where, "preprocess")["rows_dropped"] == {
        "duplicate_record": 1, "missing_target": 1, "older_version_of_id": 1}
    assert metrics(where, "validate")["rows_dropped"] == {
        "quarantined:unknown_category:contract": 1, "quarantined:wrong_type:tenure": 1}
    removed = pd.read_parquet(where / "data" / "interim" / "removed.parquet")
    assert set(removed["customer_id"]) == {"C9999999", SECOND, "C0000400"}
    assert removed["email"].str.startswith("masked:").all()
    splits = [pd.read_parquet(where / "data" / "processed" / f"{n}.parquet")
              for n in ("train", "validation", "test")]
    assert sum(map(len, splits)) == metrics(where, "preprocess")["rows_out"] == 497
    for split in splits:   # in id order, as the whole table sorted
        assert split["customer_id"].is_monotonic_increasing


def test_row_groups_and_waiting_partitions_spill_and_keep_the_bytes(tmp_path, demo_sqlite,
                                                                    monkeypatch):
    """Row groups of 64 rows: outputs cross row groups; with total_charges missing from the
    first 100 rows, the files holding it wait for its first value beyond a row group, in Arrow
    files on disk."""
    from lifecycle.scale import io as sio

    monkeypatch.setattr(sio, "ROW_GROUP_ROWS", 64)
    spilled = []
    original = sio.FrameWriter._spilled
    monkeypatch.setattr(sio.FrameWriter, "_spilled",
                        lambda self, table: spilled.append(self.path) or original(self, table))
    late = "UPDATE customers SET total_charges = NULL WHERE rowid <= 100"
    whole = reproduce(tmp_path / "whole", demo_sqlite, 1_000_000, late)
    streamed = reproduce(tmp_path / "streamed", demo_sqlite, 7, late)
    assert streamed == whole
    assert {Path(p).name for p in spilled} >= {"validated.parquet", "clean.parquet"}
    groups = pq.ParquetFile(tmp_path / "streamed" / "data" / "processed" / "train.parquet")
    assert groups.metadata.num_row_groups > 1


@pytest.mark.parametrize("rows", [0, 1])
def test_a_file_whose_column_never_holds_a_value_is_still_written(tmp_path, rows):
    """A column with no value in any partition takes the first partition's type, as pandas
    gives the whole frame's."""
    from lifecycle import io
    from lifecycle.scale.io import FrameWriter

    frame = pd.DataFrame({"a": list(range(rows * 10)), "b": [None] * (rows * 10)})
    writer = FrameWriter(tmp_path / "streamed.parquet")
    for start in range(0, max(len(frame), 1), 3):
        writer.add(frame.iloc[start:start + 3])
    assert writer.close() == len(frame)
    io.write_parquet(frame, tmp_path / "whole.parquet")
    assert (tmp_path / "streamed.parquet").read_bytes() == \
        (tmp_path / "whole.parquet").read_bytes()
