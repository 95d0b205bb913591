"""Feature engineering: the model's view of a clean row, fitted on train only.

`model_frame` (derived columns, dtypes, missing-category token) learns nothing and runs in
training and serving alike; `build_featurizer` returns the unfitted sklearn transformer that
`featurize` fits on the train split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lifecycle.contract import Contract

MISSING = "__missing__"  # categorical nulls become a category of their own (ONNX has no NaN text)


def derive(frame: pd.DataFrame, derived: dict[str, str]) -> pd.DataFrame:
    """Add the derived columns declared in params (pandas expressions over clean columns)."""
    if not derived:
        return frame
    numeric = frame.astype({c: "float64" for c in frame.columns
                            if str(frame[c].dtype) in ("Int64", "boolean", "Float64")})
    return frame.assign(**{name: numeric.eval(expr).astype("float64")
                           for name, expr in derived.items()})


def numeric_columns(contract: Contract, derived: dict[str, str]) -> list[str]:
    return [c for c in contract.feature_columns
            if contract.columns[c].type in ("int", "float", "bool")] + list(derived)


def indicator_columns(contract: Contract) -> dict[str, str]:
    """A missing-value indicator for each nullable numeric feature (declared, not learned)."""
    return {f"{c}_missing": c for c in contract.feature_columns
            if contract.columns[c].nullable and contract.columns[c].type in ("int", "float", "bool")}


def categorical_columns(contract: Contract) -> list[str]:
    return [c for c in contract.feature_columns
            if contract.columns[c].type in ("category", "string")]


def model_frame(frame: pd.DataFrame, contract: Contract, derived: dict[str, str]) -> pd.DataFrame:
    """The model's input columns with plain dtypes: float64 numbers, object text."""
    frame = derive(frame, derived)
    numeric = numeric_columns(contract, derived)
    categorical = categorical_columns(contract)
    out = {c: pd.to_numeric(frame[c], errors="coerce").astype("float64").to_numpy() for c in numeric}
    indicators = indicator_columns(contract)
    for name, source in indicators.items():
        out[name] = np.isnan(out[source]).astype("float64")
    numeric = numeric + list(indicators)
    for c in categorical:
        text = frame[c].astype("string").fillna(MISSING)
        out[c] = text.to_numpy(dtype=object)
    return pd.DataFrame(out, index=frame.index, columns=numeric + categorical)


def build_featurizer(contract: Contract, derived: dict[str, str], min_frequency: float,
                     scale: str):
    """Median imputation and scaling for numbers; one-hot for categories that groups rare ones
    and ignores unseen ones. Every step has an ONNX converter (the serving fast path)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, RobustScaler, StandardScaler

    scaler = {"standard": StandardScaler(), "robust": RobustScaler(), "none": "passthrough"}[scale]
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", scaler)])
    categorical = OneHotEncoder(handle_unknown="ignore", min_frequency=min_frequency,
                                sparse_output=False, dtype=np.float64)
    return ColumnTransformer(
        [("num", numeric, numeric_columns(contract, derived) + list(indicator_columns(contract))),
         ("cat", categorical, categorical_columns(contract))],
        verbose_feature_names_out=True,
    )


def target_vector(frame: pd.DataFrame, contract: Contract, task: str) -> np.ndarray:
    """The target as the model sees it: 0/1 for binary (1 = the contract's positive class),
    labels for multiclass, floats for regression."""
    y = frame[contract.target.column]
    if task == "binary":
        return (y.astype("string") == contract.target.positive).to_numpy(dtype=np.int64)
    if task == "multiclass":
        return y.astype("string").to_numpy(dtype=object)
    return y.astype("float64").to_numpy()


def save(estimator, path) -> None:
    """Save a fitted sklearn object with skops (no pickle: loading executes no code)."""
    from pathlib import Path

    import skops.io as sio

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sio.dump(estimator, path)


def load(path):
    """Load a skops file written by `save`, trusting only the types skops reports as known
    sklearn/numpy types (our own files; bundles add a hash check on top)."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    unsafe = [t for t in untrusted if not t.startswith(("sklearn.", "numpy.", "scipy."))]
    if unsafe:
        raise ValueError(f"{path} holds types that are not sklearn/numpy: {unsafe}")
    return sio.load(path, trusted=untrusted)
