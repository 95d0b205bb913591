"""Reading and writing stage outputs deterministically: same data in, same bytes out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """Write a DataFrame as Parquet with its dtypes, byte-identical for identical data."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    pq.write_table(table, path, compression="zstd")


def read_parquet(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    return pd.read_parquet(path, columns=columns)


def write_json(obj, path: str | Path) -> None:
    """Write small metrics/manifests as stable, diff-friendly JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2, default=json_default) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_default(value):
    """JSON for numpy scalars and timestamps."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_yaml_model(path: str | Path, model, what: str):
    """Read a YAML file into a pydantic model; a missing or malformed file is one StageError
    naming the file and the first bad key."""
    from pydantic import ValidationError

    from lifecycle.errors import StageError
    from lifecycle.params import read_yaml

    try:
        return model.model_validate(read_yaml(path))
    except FileNotFoundError as exc:
        raise StageError(f"{what} file not found: {path}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise StageError(f"{path}: {where}: {first['msg']}") from exc
