"""The inference registry on real SQLite and a real PostgreSQL server: group commit under
concurrency, feedback joins, export to Parquet, outcomes per variant."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pandas as pd
import pytest

from lifecycle.serving.registry import (
    Registry,
    RegistryError,
    export_parquet,
    outcomes_by_variant,
)
from tests.test_sources import postgres  # noqa: F401 - the throw-away PostgreSQL server


def prediction(i: int, variant: str = "a", prediction: str = "No") -> dict:
    return {"request_id": f"req-{i:06d}", "role": "served", "created_at": time.time(),
            "deployment": "test", "strategy": "ab", "variant": variant,
            "model_version": "v1", "engine": "onnx", "routing_key": f"masked:{i}",
            "inputs": f'{{"tenure": {i % 70}, "contract": "One year"}}',
            "prediction": prediction, "probability": 0.25, "latency_ms": 0.5}


def exercise(url: str, tmp_path: Path) -> None:
    """400 concurrent requests in one event loop: all committed, in fewer commits than
    requests (group commit); feedback joins; a repeated feedback fails alone."""
    with Registry(url) as registry:
        async def many():
            await asyncio.gather(*(registry.record([prediction(i, "ab"[i % 2])])
                                   for i in range(400)))
        asyncio.run(many())
        assert registry.count() == {"predictions": 400, "feedback": 0}
        assert registry.commits < 400

        async def notes():
            outcomes = [registry.record(feedback_rows=[{
                "request_id": f"req-{i:06d}", "received_at": time.time(),
                "outcome": "No" if i % 4 else "Yes"}]) for i in range(100)]
            repeated = registry.record(feedback_rows=[{"request_id": "req-000001",
                                                       "received_at": time.time(),
                                                       "outcome": "Yes"}])
            return await asyncio.gather(*outcomes, repeated, return_exceptions=True)
        results = asyncio.run(notes())
        assert results[:100] == [None] * 100 and isinstance(results[100], RegistryError)
        assert registry.find("req-000003")["variant"] == "b"
        assert registry.find("nope") is None

    out = tmp_path / "registry.parquet"
    assert export_parquet(url, out) == 400
    exported = pd.read_parquet(out)
    assert exported["outcome"].notna().sum() == 100
    assert exported["input.tenure"].dtype == "float64"
    assert (exported["input.contract"] == "One year").all()
    by_variant = {o["variant"]: o for o in outcomes_by_variant(url)}
    assert by_variant["a"]["predictions"] == by_variant["b"]["predictions"] == 200
    assert by_variant["a"]["with_feedback"] == 50
    # predictions are all "No"; outcomes are "Yes" for every 4th request (all in variant a)
    assert by_variant["a"]["accuracy"] == pytest.approx(0.5)
    assert by_variant["b"]["accuracy"] == pytest.approx(1.0)


def test_sqlite_registry(tmp_path: Path):
    exercise(f"sqlite:///{tmp_path / 'registry.sqlite'}", tmp_path)


def test_postgresql_registry(postgres, tmp_path: Path):  # noqa: F811 - the fixture
    url = (f"postgresql+psycopg://postgres:{postgres['password']}@127.0.0.1:"
           f"{postgres['port']}/postgres")
    exercise(url, tmp_path)


def test_an_empty_registry_exports_a_readable_file(tmp_path: Path):
    out = tmp_path / "empty.parquet"
    assert export_parquet(f"sqlite:///{tmp_path / 'r.sqlite'}", out) == 0
    assert "request_id" in pd.read_parquet(out).columns


OLD_PREDICTIONS = """CREATE TABLE predictions (request_id VARCHAR(36) NOT NULL,
    role VARCHAR(8) NOT NULL, created_at FLOAT NOT NULL, deployment VARCHAR(100) NOT NULL,
    strategy VARCHAR(16) NOT NULL, variant VARCHAR(100) NOT NULL,
    model_version VARCHAR(64) NOT NULL, engine VARCHAR(16) NOT NULL, routing_key VARCHAR(64),
    inputs TEXT NOT NULL, prediction TEXT, probability FLOAT, latency_ms FLOAT NOT NULL,
    PRIMARY KEY (request_id, role))"""


def migrate_an_older_registry(url: str) -> None:
    """A registry made before the `reasons` column: it is added at start, rows kept; an
    event delivered twice is then written once (skip_repeats)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as connection:  # the server may hold this module's other registry
        connection.exec_driver_sql("DROP TABLE IF EXISTS feedback")
        connection.exec_driver_sql("DROP TABLE IF EXISTS predictions")
        connection.exec_driver_sql(OLD_PREDICTIONS)
        connection.execute(sa.text(
            "INSERT INTO predictions VALUES ('old-1', 'served', 0, 'd', 'single', 'main', "
            "'v0', 'onnx', NULL, '{}', 'No', 0.1, 1.0)"))
    engine.dispose()
    with Registry(url) as registry:
        registry.record_sync([{**prediction(1), "reasons": '{"top": []}'}])
        row = (*prediction(2).values(), None)  # a tuple in COLUMNS order, reasons null
        assert registry.write([row, row], skip_repeats=True) == []
        assert registry.find("req-000001")["reasons"] == '{"top": []}'
        assert registry.find("old-1")["reasons"] is None
        assert registry.count()["predictions"] == 3


def test_an_older_sqlite_registry_gets_the_new_columns(tmp_path: Path):
    migrate_an_older_registry(f"sqlite:///{tmp_path / 'old.sqlite'}")


def test_an_older_postgresql_registry_gets_the_new_columns(postgres):  # noqa: F811
    migrate_an_older_registry(f"postgresql+psycopg://postgres:{postgres['password']}@"
                              f"127.0.0.1:{postgres['port']}/postgres")
