"""The data stages on a Dask cluster (`engine.kind: dask`); docs/scale.md.

One module per concern: `cluster` (where the work runs), `io` (partitioned Parquet on local disk
or S3, and stage outputs written byte-identical to the pandas engine's), `stages` (collect,
validate, preprocess, split, featurize's transform, as partition-wise work that reuses the
pandas library functions), `batch` (batch scoring with a bundle). The engine changes where the
work runs, never what it computes: tests/test_dask_engine.py holds both engines to the same
bytes. Importing this package does not import dask."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lifecycle import params


class EngineParams(params.Section):
    kind: Literal["pandas", "dask"] = "pandas"
    scheduler: str | None = None          # tcp://host:8786; None: $DASK_SCHEDULER_ADDRESS or local
    workers: int = Field(default=2, gt=0)             # LocalCluster only: worker processes
    threads_per_worker: int = Field(default=1, gt=0)  # LocalCluster only
    memory_per_worker: str = "4GB"                    # LocalCluster only: dask's memory_limit
    partition_rows: int = Field(default=1_000_000, gt=0)   # rows per partition at most


def load() -> EngineParams:
    """The `engine` section of params.yaml."""
    return params.load("engine", model=EngineParams)


def uses_dask() -> bool:
    return load().kind == "dask"
