"""Column names as they reach ONNX, the fitted featurizer and the files it describes.

Source columns keep their own names in the data, the contract, the API and batch files (a user
sends `Culmen Length (mm)` as the column is called). From the model frame on
(`features.model_frame`), each is used under `safe(name)`: the featurizer is fitted on safe
names, so they are also the ONNX input names and the feature names in metrics/features.json,
explain.json and the bundle. One function, used everywhere.
"""

from __future__ import annotations

import re

from lifecycle.errors import StageError

_UNSAFE = re.compile(r"[^A-Za-z0-9_]+")


def safe(name: str) -> str:
    """Letters, digits and `_` only: every run of other characters (spaces, parentheses, `/`,
    `-`, ...) becomes one `_`, none at either end, and a leading digit gets a `_` before it.
    Safe names are left as they are: `safe(safe(x)) == safe(x)`."""
    text = _UNSAFE.sub("_", str(name)).strip("_") or "column"
    return f"_{text}" if text[0].isdigit() else text


def safe_names(columns) -> dict[str, str]:
    """{column: safe name}; StageError naming both columns when two would share a name."""
    out, seen = {}, {}
    for column in columns:
        name = safe(column)
        if name in seen and seen[name] != column:
            raise StageError(f"columns {seen[name]!r} and {column!r} both become {name!r} in "
                             "the model: rename one of them in the source")
        seen[name], out[column] = column, name
    return out


def one_hot_name(column: str, category) -> str:
    """A one-hot feature's name (OneHotEncoder's `feature_name_combiner`): the category is data,
    so it may hold anything (`Adult, 1 Egg Stage`); LightGBM refuses JSON characters in
    feature names and ONNX, JSON and files want plain ones. Module-level so skops saves it."""
    return safe(f"{column}_{category}")
