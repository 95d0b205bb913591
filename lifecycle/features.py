"""Feature engineering: the model's view of a clean row, fitted on train only.

`model_frame` (derived columns, dtypes, missing-category token) learns nothing and runs in
training and serving alike; `fit_featurizer` fits the sklearn transformer on the train split
(imputation, scaling, one-hot codes of the frequent categories, optional selection) and
describes every feature it makes in the feature manifest.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lifecycle.contract import Contract
from lifecycle.errors import ParamsError, StageError
from lifecycle.names import one_hot_name, safe, safe_names

MISSING = "__missing__"  # categorical nulls become a category of their own (ONNX has no NaN text)
TARGET = "target"        # the target's column in feature tables, encoded as `target_vector` says
DISCRETE_MAX_VALUES = 10  # integer columns with at most this many values on train are discrete
# Keys of the featurize params that only change the manifest's importance estimates, unless
# select_k_best uses those estimates to choose features (then they change the features).
IMPORTANCE_ONLY_KEYS = {"seed", "importance_rows"}


def derive(frame: pd.DataFrame, derived: dict[str, str]) -> pd.DataFrame:
    """Add the derived columns declared in params (pandas expressions over clean columns; a
    name with spaces or symbols in backticks: `Body Mass (g)`). An expression that cannot be
    evaluated is one error line naming its key."""
    if not derived:
        return frame
    numeric = frame.astype({c: "float64" for c in frame.columns
                            if str(frame[c].dtype) in ("Int64", "boolean", "Float64")})
    out = {}
    for name, expr in derived.items():
        try:
            out[name] = pd.Series(numeric.eval(expr), index=frame.index).astype("float64")
        except Exception as exc:  # noqa: BLE001 - pandas raises many kinds: one line for all
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ParamsError(f"params.yaml: featurize.derived.{name}: cannot evaluate "
                              f"{expr!r}: {reason}") from None
    return frame.assign(**out)


def numeric_sources(contract: Contract) -> list[str]:
    """The numeric feature columns, by their names in the data."""
    return [c for c in contract.feature_columns
            if contract.columns[c].type in ("int", "float", "bool")]


def categorical_sources(contract: Contract) -> list[str]:
    """The text feature columns, by their names in the data."""
    return [c for c in contract.feature_columns
            if contract.columns[c].type in ("category", "string")]


def numeric_columns(contract: Contract, derived: dict[str, str]) -> list[str]:
    """Numeric model-frame columns: the numeric features (safe names) and the derived ones."""
    return [safe(c) for c in numeric_sources(contract)] + list(derived)


def indicator_columns(contract: Contract) -> dict[str, str]:
    """A missing-value indicator for each nullable numeric feature (declared, not learned):
    {indicator (safe name): its source column (name in the data)}."""
    return {f"{safe(c)}_missing": c for c in numeric_sources(contract)
            if contract.columns[c].nullable}


def categorical_columns(contract: Contract) -> list[str]:
    """Text model-frame columns (safe names)."""
    return [safe(c) for c in categorical_sources(contract)]


def model_frame(frame: pd.DataFrame, contract: Contract, derived: dict[str, str]) -> pd.DataFrame:
    """The model's input columns with plain dtypes: float64 numbers, object text."""
    frame = derive(frame, derived)
    name = safe_names(contract.feature_columns)   # column -> its model-frame name
    sources = [*numeric_sources(contract), *derived]
    out = {name.get(c, c): pd.to_numeric(frame[c], errors="coerce").astype("float64").to_numpy()
           for c in sources}
    numeric = [name.get(c, c) for c in sources]
    indicators = indicator_columns(contract)
    for indicator, source in indicators.items():
        out[indicator] = np.isnan(out[name[source]]).astype("float64")
    numeric = numeric + list(indicators)
    categorical = []
    for source in categorical_sources(contract):
        c = name[source]
        categorical.append(c)
        # Object dtype, built from the distinct values: a million cells share a few str
        # objects, and sklearn's encoder reads them without making a million of its own
        # (pandas would infer its string dtype, which turns into new objects on every read).
        codes, values = pd.factorize(frame[source].astype("string").fillna(MISSING))
        out[c] = pd.Series(np.asarray(values, dtype=object)[codes], index=frame.index,
                           dtype=object)
    return pd.DataFrame(out, index=frame.index, columns=numeric + categorical)


def build_featurizer(contract: Contract, derived: dict[str, str], min_frequency: float,
                     scale: str, categories: dict[str, list[str]] | None = None):
    """The unfitted transformer: median imputation then scaling for numbers, the missing-value
    indicators as they are, and one-hot codes for categories (unseen ones are all zeros).

    `categories` (the frequent ones on train: `fit_on_rows`) fixes each column's codes; without it
    OneHotEncoder groups categories rarer than `min_frequency` itself, which serves sklearn but
    not ONNX. `fit_featurizer` always passes it. Every step has an skl2onnx converter.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, RobustScaler, StandardScaler

    numeric = [("impute", SimpleImputer(strategy="median"))]
    if scale != "none":  # no "passthrough" step: skl2onnx cannot convert one inside a Pipeline
        numeric.append(("scale", {"standard": StandardScaler(), "robust": RobustScaler()}[scale]))
    numeric = Pipeline(numeric)
    categorical = categorical_columns(contract)
    if categories is None:
        encoder = OneHotEncoder(handle_unknown="ignore", min_frequency=min_frequency,
                                sparse_output=False, dtype=np.float64)
    else:
        categorical = [c for c in categorical if categories[c]]  # no frequent category: no code
        encoder = OneHotEncoder(categories=[categories[c] for c in categorical],
                                handle_unknown="ignore", sparse_output=False, dtype=np.float64,
                                feature_name_combiner=one_hot_name)
    parts = [("num", numeric, numeric_columns(contract, derived)),
             ("ind", "passthrough", list(indicator_columns(contract))),
             ("cat", encoder, categorical)]
    return ColumnTransformer([part for part in parts if part[2]], verbose_feature_names_out=True)


@dataclass
class FitRows:
    """What fitting the featurizer reads of the train rows, which a table too big to hold can
    give part by part (`add` them): only imputation and scaling learn from every row, from the
    numeric columns; the one-hot codes are the frequent categories (counts add up); mutual
    information is estimated on a seeded sample of rows."""
    numeric: pd.DataFrame          # the numeric model-frame columns of every row
    counts: dict[str, pd.Series]   # per categorical model-frame column, its value counts
    head: pd.DataFrame             # the first rows of the model frame (to fit the rest on)
    sample: pd.DataFrame           # the model frame's rows at `importance_sample` positions
    y_sample: np.ndarray           # their target
    rows: int

    @classmethod
    def of(cls, frame: pd.DataFrame, y: np.ndarray, contract: Contract, derived: dict,
           positions: np.ndarray, start: int = 0) -> FitRows:
        """The part made of `frame`, rows [start, start + len(frame)) of the table; `positions`
        (sorted) are the sample's in the whole table."""
        here = positions[(positions >= start) & (positions < start + len(frame))] - start
        return cls(frame[numeric_columns(contract, derived)],
                   {c: frame[c].value_counts() for c in categorical_columns(contract)},
                   frame.iloc[:HEAD_ROWS] if start == 0 else frame.iloc[:0],
                   frame.iloc[here], y[here], len(frame))

    @classmethod
    def add(cls, parts: list[FitRows]) -> FitRows:
        counts = {c: pd.concat([p.counts[c] for p in parts]).groupby(level=0, sort=False).sum()
                  for c in parts[0].counts}
        return cls(pd.concat([p.numeric for p in parts], ignore_index=True), counts,
                   pd.concat([p.head for p in parts]).iloc[:HEAD_ROWS],
                   pd.concat([p.sample for p in parts]),
                   np.concatenate([p.y_sample for p in parts]), sum(p.rows for p in parts))


HEAD_ROWS = 100


def importance_sample(rows: int, p) -> np.ndarray:
    """The (sorted) positions of the train rows mutual information is estimated on."""
    return np.sort(np.random.default_rng(p.seed).permutation(rows)[:p.importance_rows])


def fit_featurizer(frame: pd.DataFrame, y: np.ndarray, contract: Contract, p, task: str):
    """Fit the featurizer on the train model frame and describe its features.

    `p` is the featurize params section. Returns (featurizer, manifest): the featurizer is the
    fitted ColumnTransformer, or Pipeline([columns, select]) when `p.select_k_best` is set;
    the manifest lists every candidate feature with its name, type, source columns, mutual
    information with the target on train (seeded), whether it was selected, and a version.
    """
    return fit_on_rows(FitRows.of(frame, y, contract, p.derived,
                                  importance_sample(len(frame), p)), contract, p, task)


def fit_on_rows(rows: FitRows, contract: Contract, p, task: str):
    """`fit_featurizer` from what it reads of the train rows: the same fitted featurizer as
    `ColumnTransformer.fit` on the whole frame, without the whole feature table that fit
    makes on the way (a third of a GB per million rows)."""
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    categories = {c: sorted(str(v) for v in n.index[n >= p.min_frequency * rows.rows])
                  for c, n in rows.counts.items()}
    columns = build_featurizer(contract, p.derived, p.min_frequency, p.scale, categories)
    columns.set_output(transform="pandas")
    # Only the numeric part learns from the rows: fit the whole on a few rows (each numeric
    # column holding a value there if it holds one anywhere, so every output is made), then
    # put in its place the numeric part fitted on every row, as ColumnTransformer fits it.
    head = rows.head.copy()
    for c in rows.numeric.columns:
        held = rows.numeric[c].dropna()
        if len(held):
            head[c] = head[c].fillna(held.iloc[0])
    columns.fit(head)
    for i, (name, _, inputs) in enumerate(columns.transformers_):
        if name == "num":
            template = dict((n, t) for n, t, _ in columns.transformers)["num"]
            columns.transformers_[i] = (name, clone(template).fit(rows.numeric[inputs]), inputs)
    described = describe_features(columns, contract, p.derived)
    table = columns.transform(rows.sample)
    score = importance_function(task, _discrete_mask(table, described), p.seed)
    with warnings.catch_warnings():  # discrete codes are floats here (scaled flags, one-hots)
        warnings.filterwarnings("ignore", "Clustering metrics expects discrete values")
        if p.select_k_best:
            from sklearn.feature_selection import SelectKBest

            selector = SelectKBest(score, k=min(p.select_k_best, table.shape[1]))
            selector.fit(table, rows.y_sample)
            scores, selected = selector.scores_, selector.get_support()
            featurizer = Pipeline([("columns", columns), ("select", selector)])
            featurizer.set_output(transform="pandas")
        else:
            scores = score(table, rows.y_sample)
            selected, featurizer = np.ones(table.shape[1], bool), columns
    unencoded = [c for c in categorical_columns(contract) if not categories[c]]
    manifest = _manifest(featurizer, described, scores, selected, len(table), rows.rows,
                         unencoded, contract, p, task)
    return featurizer, manifest


def transform_with_fitted(featurizer, frame: pd.DataFrame, y: np.ndarray, contract: Contract,
                          p, task: str) -> tuple[dict, pd.DataFrame]:
    """The manifest and features of `frame` through a featurizer fitted before (a champion's:
    `train.mode: incremental`), nothing refitted; the importance estimates are on `frame`."""
    columns = featurizer.named_steps["columns"] if hasattr(featurizer, "named_steps") \
        else featurizer
    table = columns.transform(frame)
    described = describe_features(columns, contract, p.derived)
    sample = np.random.default_rng(p.seed).permutation(len(table))[:p.importance_rows]
    sample.sort()
    score = importance_function(task, _discrete_mask(table.iloc[sample], described), p.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Clustering metrics expects discrete values")
        scores = score(table.iloc[sample], y[sample])
    if columns is featurizer:
        selected = np.ones(table.shape[1], bool)
    else:
        selected = featurizer.named_steps["select"].get_support()
        table = featurizer.named_steps["select"].transform(table)
    encoded = {c for part, _, inputs in columns.transformers_ if part == "cat" for c in inputs}
    unencoded = [c for c in categorical_columns(contract) if c not in encoded]
    manifest = _manifest(featurizer, described, scores, selected, len(sample), len(frame),
                         unencoded, contract, p, task)
    return manifest, table


def _manifest(featurizer, described: list[dict], scores, selected, sampled: int, rows: int,
              unencoded: list[str], contract: Contract, p, task: str) -> dict:
    """The feature manifest (metrics/features.json): every candidate feature described, its
    importance and whether it was selected, and the featurizer's version."""
    for feature, value, kept in zip(described, scores, selected, strict=True):
        feature.update(importance=round(float(value), 6), selected=bool(kept))
    return {
        "version": version_hash(featurizer, described, contract, p, task),
        "count": int(selected.sum()),
        "candidates": len(described),
        "by_type": {t: sum(f["type"] == t for f in described if f["selected"])
                    for t in ("numeric", "derived", "indicator", "one-hot")},
        "train_rows": rows,
        "importance": {"measure": "mutual_information", "rows": sampled, "seed": p.seed},
        "unencoded_columns": unencoded,
        "features": described,
    }


def describe_features(columns, contract: Contract, derived: dict[str, str]) -> list[dict]:
    """Name, type and source columns of each output of a fitted ColumnTransformer, in order."""
    indicators = indicator_columns(contract)
    out = []
    for part, transformer, inputs in columns.transformers_:
        if part == "num":
            out += [{"type": "derived", "source": _expression_columns(derived[c], contract)}
                    if c in derived else {"type": "numeric", "source": [c]} for c in inputs]
        elif part == "ind":
            out += [{"type": "indicator", "source": [indicators[c]]} for c in inputs]
        elif part == "cat":
            out += [{"type": "one-hot", "source": [c], "category": str(value)}
                    for c, values in zip(inputs, transformer.categories_, strict=True)
                    for value in values]
    names = columns.get_feature_names_out()
    twice = sorted({n for n in names if list(names).count(n) > 1})
    if twice:  # categories that differ only in symbols (`a b`, `a_b`) share a safe name
        raise StageError(f"features {twice} come out twice: categories of one column differ "
                         "only in spaces or symbols; make them differ in letters or digits")
    if len(names) != len(out):
        raise AssertionError(f"{len(names)} features but {len(out)} descriptions")
    return [{"name": str(name), **info} for name, info in zip(names, out, strict=True)]


def _expression_columns(expression: str, contract: Contract) -> list[str]:
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", expression))
    return [c for c in contract.columns if c in words]


def _discrete_mask(table: pd.DataFrame, described: list[dict]) -> list[bool]:
    """Which features mutual information should count as discrete: codes, indicators, and
    numbers with few distinct values in the (train) rows given (flags like 0/1)."""
    return [f["type"] in ("indicator", "one-hot")
            or table[f["name"]].nunique() <= DISCRETE_MAX_VALUES for f in described]


def importance_function(task: str, discrete: list[bool], seed: int):
    """Mutual information with the target (classification or regression), seeded; a
    functools.partial of an sklearn function, so skops can save a selector that uses it."""
    from functools import partial

    from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

    estimate = mutual_info_regression if task == "regression" else mutual_info_classif
    return partial(estimate, discrete_features=discrete, random_state=seed)


def version_hash(featurizer, described: list[dict], contract: Contract, p, task: str) -> str:
    """A short hash of what defines the features, not of the data they were fitted on.

    Covers the feature names, types and sources (so a new category in train changes it), the
    featurize params, the transformer's own params, the contract's spec of the feature columns,
    and the derived expressions (in the params). Fitted statistics (medians, means) and the
    importance estimates are left out, as are `seed`/`importance_rows` unless select_k_best
    uses the estimates to choose features.
    """
    selecting = p.select_k_best is not None
    recipe = p.model_dump(exclude=None if selecting else IMPORTANCE_ONLY_KEYS)
    payload = {
        "features": [[f["name"], f["type"], f["source"]] + ([f["selected"]] if selecting else [])
                     for f in described],
        "featurize": recipe,
        "task": task if selecting else None,
        "transformer": _describe(featurizer),
        "contract": {c: contract.columns[c].model_dump() for c in contract.feature_columns},
    }
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _describe(value):
    """A JSON-able description of an (un)fitted transformer's params, recursively."""
    from functools import partial

    if hasattr(value, "get_params") and not isinstance(value, type):
        return {"class": type(value).__name__,
                "params": {k: _describe(v) for k, v in value.get_params(deep=False).items()}}
    if isinstance(value, partial):
        return {"function": value.func.__name__, "keywords": _describe(value.keywords)}
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_describe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, type) or callable(value):
        return getattr(value, "__name__", repr(value))
    return value


def importance_plot_data(manifest: dict) -> list[dict]:
    """Rows for DVC's bar chart: every candidate feature with its importance, largest first."""
    rows = [{"feature": f["name"], "importance": f["importance"], "selected": f["selected"]}
            for f in manifest["features"]]
    return sorted(rows, key=lambda r: (-r["importance"], r["feature"]))


def target_vector(frame: pd.DataFrame, contract: Contract, task: str) -> np.ndarray:
    """The target as the model sees it: 0/1 for binary (1 = the contract's positive class),
    labels for multiclass, floats for regression."""
    column = contract.target.column
    y = frame[column]
    if y.isna().any():
        raise StageError(f"target {column} is missing in {int(y.isna().sum())} rows "
                         "(set preprocess.drop_missing_target: true)")
    if task == "binary":
        if contract.target.positive is None:
            raise StageError("task.type is binary but the contract names no target.positive")
        return (y.astype("string") == contract.target.positive).to_numpy(dtype=np.int64)
    if task == "multiclass":
        return y.astype("string").to_numpy(dtype=object)
    if contract.columns[column].type not in ("int", "float"):
        raise StageError(f"task.type is regression but target {column} is "
                         f"{contract.columns[column].type}, not a number")
    return y.astype("float64").to_numpy()


def split_target(table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """A feature table as (features, target). The table itself loses its target column: no
    copy of the features (a million rows of them is a third of a GB)."""
    if TARGET not in table.columns:
        raise StageError(f"feature table has no '{TARGET}' column (rerun featurize)")
    y = table.pop(TARGET).to_numpy()
    return table, y


def read_table(path) -> tuple[pd.DataFrame, np.ndarray]:
    """A feature table file as (features, target), the features held once: in one C-ordered
    float64 array (the layout scikit-learn's fit copies them into), under a DataFrame that
    only views it. A table of other dtypes is read as it is."""
    import pyarrow.parquet as pq

    from lifecycle import io

    schema = pq.read_schema(path)
    names = [n for n in schema.names if n != TARGET]
    if TARGET not in schema.names or any(str(schema.field(n).type) != "double" for n in names):
        return split_target(io.read_parquet(path))
    parquet = pq.ParquetFile(path)
    X = np.empty((parquet.metadata.num_rows, len(names)), dtype=np.float64)
    start = 0
    for i in range(parquet.metadata.num_row_groups):   # one row group at a time
        group = parquet.read_row_group(i, columns=names)
        for j, name in enumerate(names):
            X[start:start + len(group), j] = group.column(name).to_numpy()
        start += len(group)
    y = io.read_parquet(path, columns=[TARGET])[TARGET].to_numpy()
    return pd.DataFrame(X, columns=names, copy=False), y
