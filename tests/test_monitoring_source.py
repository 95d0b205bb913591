"""Reading a registry export: served answers only, oldest first, only the columns the checks
read (text as categories, so a million answers fit the memory budget)."""

from __future__ import annotations

import pandas as pd
import pytest

from lifecycle.errors import StageError
from lifecycle.monitoring import source


def export(path, order) -> None:
    rows = pd.DataFrame({
        "request_id": ["r1", "r2", "r3", "r4"],
        "role": ["served", "served", "shadow", "served"],
        "created_at": pd.to_datetime(["2026-01-01 00:00", "2026-01-01 00:00",
                                      "2026-01-01 00:01", "2026-01-01 00:02"], utc=True),
        "model_version": "v1", "prediction": ["Yes", "No", "No", "Yes"],
        "probability": [0.9, 0.2, 0.3, 0.7], "outcome": ["Yes", None, None, "No"],
        "input.plan": ["a", "b", "b", None], "input.tenure": [1, 2, 3, 4],
        "input.name": ["Ann", "Bob", "Bob", "Cy"],  # masked personal data: never read
    })
    rows.iloc[order].to_parquet(path)


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2]])
def test_served_answers_oldest_first_whatever_the_file_order(tmp_path, order):
    export(tmp_path / "r.parquet", order)
    rows = source.read(tmp_path / "r.parquet", ["plan", "tenure", "missing_field"])
    assert rows["request_id"].tolist() == ["r1", "r2", "r4"]  # ties broken by request id
    assert rows["score"].tolist() == [0.9, 0.2, 0.7]
    assert rows["plan"].tolist()[:2] == ["a", "b"] and pd.isna(rows["plan"].iloc[2])
    assert rows["tenure"].tolist() == [1, 2, 4]
    assert rows["missing_field"].isna().all()  # never recorded: data quality reports it
    assert "name" not in rows and "input.name" not in rows
    assert rows["outcome"].isna().tolist() == [False, True, False]


def test_a_file_that_is_not_an_export_is_one_line(tmp_path):
    pd.DataFrame({"created_at": [1]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(StageError, match=r"not a registry export, columns \['role', "):
        source.read(tmp_path / "x.parquet", [])
    with pytest.raises(StageError, match="no registry export"):
        source.read(tmp_path / "none.parquet", [])
