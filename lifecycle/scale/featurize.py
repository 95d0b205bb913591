"""featurize, partition by partition, on either engine (lifecycle/scale/parts.py): what the fit
reads of the train split (`features.FitRows`: its numeric columns, category counts, a seeded
sample) is gathered from the partitions, the featurizer fitted once in the stage's process (as
fitting it on the whole split would), and every partition of each split turned into its
feature table by that featurizer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lifecycle import features
from lifecycle.contract import Contract


def _fit_rows(part: pd.DataFrame, start: int, contract: Contract, derived: dict, task: str,
              positions: np.ndarray) -> features.FitRows:
    frame = features.model_frame(part, contract, derived)
    return features.FitRows.of(frame, features.target_vector(part, contract, task), contract,
                               derived, positions, start)


def fit(train, contract: Contract, p, task: str):
    """(featurizer, manifest) fitted on the train split's partitions."""
    positions = features.importance_sample(int(train.starts[-1]), p)
    rows = features.FitRows.add(train.map(_fit_rows, contract, p.derived, task, positions,
                                          each=train.starts[:-1].tolist()))
    return features.fit_on_rows(rows, contract, p, task)


def feature_table(part: pd.DataFrame, featurizer, contract: Contract, derived: dict,
                  task: str):
    """One partition's feature table (features + target), and its rows."""
    frame = features.model_frame(part, contract, derived)
    table = featurizer.transform(frame).assign(
        **{features.TARGET: features.target_vector(part, contract, task)})
    return (table,), len(table)


def write_tables(featurizer, splits: dict, contract: Contract, derived: dict, task: str,
                 outdir) -> dict[str, int]:
    """{split name: rows} after writing `outdir/<name>.parquet` for each split's partitions."""
    from pathlib import Path

    return {name: sum(table.write(feature_table, [Path(outdir) / f"{name}.parquet"],
                                  featurizer, contract, derived, task))
            for name, table in splits.items()}
