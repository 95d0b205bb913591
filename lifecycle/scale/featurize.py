"""featurize's transform on the cluster: the transformer fitted on train (by the stage, as the
pandas engine fits it) turns each partition of a split into its feature table on a worker;
the tables are written byte-identical to the pandas engine's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lifecycle import features
from lifecycle.contract import Contract
from lifecycle.scale import EngineParams, cluster
from lifecycle.scale import io as sio


def feature_table(part: pd.DataFrame, featurizer, contract: Contract, derived: dict,
                  task: str) -> pd.DataFrame:
    """One partition's feature table: the stage's own three calls."""
    frame = features.model_frame(part, contract, derived)
    return featurizer.transform(frame).assign(
        **{features.TARGET: features.target_vector(part, contract, task)})


def write_tables(featurizer, splits: dict[str, str], contract: Contract, derived: dict,
                 task: str, outdir, engine: EngineParams) -> dict[str, int]:
    """{split name: rows} after writing `outdir/<name>.parquet` for each split file."""
    from dask import delayed

    written = {}
    with cluster.connect(engine) as client:
        shipped = client.scatter(featurizer, broadcast=True, hash=False)
        for name, path in splits.items():
            rows = sio.read(path, engine.partition_rows)
            tables = [delayed(feature_table)(part, shipped, contract, derived, task)
                      for part in rows.to_delayed()]
            import dask.dataframe as dd

            written[name] = sio.write_file(dd.from_delayed(tables, verify_meta=False),
                                           Path(outdir) / f"{name}.parquet", client)
    return written
