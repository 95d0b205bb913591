"""Training on more rows than one process should hold, chosen by `train_scale.method` and
stated in metrics/train.json (`training_rows`):

- `all`: the whole train feature table, in the stage's process (the default);
- `sample`: a seeded sample of `train_scale.rows` train rows, read row group by row group, so
  the stage holds the sample only; any model family;
- `xgboost_dask`: `train.model: xgboost` trained on the Dask cluster (`xgboost.dask`) from the
  partitions of the train feature table; saved as a plain `XGBClassifier`/`XGBRegressor`, so
  evaluate, the ONNX export and the bundle are unchanged. Its train-set metric is measured on a
  seeded sample of `train_scale.rows` rows (the validation metric on all of validation)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from lifecycle import features, params
from lifecycle.errors import StageError


class TrainScaleParams(params.Section):
    method: Literal["all", "sample", "xgboost_dask"] = "all"
    rows: int = Field(default=1_000_000, gt=0)   # sample: train rows drawn; xgboost_dask: rows
    seed: int = 42                               # behind the train-set metric


def load() -> TrainScaleParams:
    return params.load("train_scale", model=TrainScaleParams)


def sample_table(path: str | Path, rows: int, seed: int) -> pd.DataFrame:
    """`rows` rows of a Parquet file drawn without replacement (seeded), in file order; the
    whole file when it holds fewer. Memory: one row group and the sample."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lifecycle.scale.io import to_pandas

    pf = pq.ParquetFile(path)
    total = pf.metadata.num_rows
    if rows >= total:
        return to_pandas(pf.read())
    picked = np.sort(np.random.default_rng(seed).choice(total, rows, replace=False))
    pieces, offset = [], 0
    for i in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        inside = picked[(picked >= offset) & (picked < offset + n)] - offset
        if len(inside):
            pieces.append(pf.read_row_group(i).take(pa.array(inside)))
        offset += n
    return to_pandas(pa.concat_tables(pieces))


def parquet_rows(path: str | Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def statement(method: str, used: int, available: int, p: TrainScaleParams) -> dict:
    """What metrics/train.json says about the rows the model learned from."""
    out = {"method": method, "rows": used, "of": available}
    if method != "all":
        out["seed"] = p.seed
    return out


def fit_on_cluster(task: str, p, train_path: str, X_val: pd.DataFrame, y_val: np.ndarray,
                   metric: str, scale_p: TrainScaleParams) -> tuple[object, dict]:
    """`xgboost.dask` on the engine's cluster; (the fitted plain estimator, the train report)."""
    from xgboost import XGBClassifier, XGBRegressor
    from xgboost import dask as dxgb

    from lifecycle import models
    from lifecycle.scale import cluster
    from lifecycle.scale import io as sio
    from lifecycle.scale import load as load_engine

    if p.model != "xgboost" or task not in ("binary", "regression"):
        raise StageError(f"train_scale.method xgboost_dask trains train.model xgboost for "
                         f"binary or regression tasks, not {p.model} for {task}")
    engine = load_engine()
    hp = {k: v for k, v in p.hyperparameters().items() if k != "n_jobs"}
    with cluster.connect(engine) as client:
        table = sio.read(train_path, engine.partition_rows)
        X, y = table.drop(columns=[features.TARGET]), table[features.TARGET]
        weight = None
        if task == "binary" and p.class_weight == "balanced":   # as sklearn's "balanced"
            counts = y.value_counts().compute()
            total = int(counts.sum())
            per_class = {c: total / (len(counts) * int(n)) for c, n in counts.items()}
            weight = y.map(per_class, meta=(features.TARGET, "float64"))
        cls = dxgb.DaskXGBClassifier if task == "binary" else dxgb.DaskXGBRegressor
        model = cls(random_state=p.seed, tree_method="hist", **hp)
        model.client = client
        start = time.perf_counter()
        model.fit(X, y, sample_weight=weight)
        seconds = time.perf_counter() - start
        rows, workers = int(len(table)), len(client.scheduler_info()["workers"])
        with tempfile.TemporaryDirectory() as tmp:
            model.save_model(Path(tmp) / "model.json")
            plain = (XGBClassifier if task == "binary" else XGBRegressor)()
            plain.load_model(Path(tmp) / "model.json")
    sample = sample_table(train_path, scale_p.rows, scale_p.seed)
    X_s, y_s = features.split_target(sample)
    report = {
        "task": task, "model": p.model, "estimator": type(plain).__name__,
        "hyperparameters": p.hyperparameters(),
        "class_weight": p.class_weight if task != "regression" else None, "metric": metric,
        "train": {metric: round(models.score(plain, X_s, y_s, task, metric), 6)},
        "validation": {metric: round(models.score(plain, X_val, y_val, task, metric), 6)},
        "rows": {"train": rows, "validation": len(X_val)}, "features": X_val.shape[1],
        "fit_seconds": round(seconds, 3), "search": None,
        "training_rows": statement("xgboost_dask", rows, rows, scale_p)
        | {"workers": workers, "train_metric_rows": len(X_s)},
    }
    return plain, report
