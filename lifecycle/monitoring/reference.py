"""The monitoring reference, carried by the bundle: production has no training data.

`bundle_files` (called once by the package stage) writes two bundle files, hashed in the
manifest like every other:
- `monitoring_reference.parquet`: a seeded sample of training rows, feature columns only (the
  id, the target, the event time and every personal-data column are left out);
- `monitoring_reference.json`: per column its kind, training range, null share and known
  categories; the validation split's scores and labels (what prediction drift compares with and
  what the label-free performance estimate is calibrated on); the evaluate scores on test.

`load` reads them back from a verified bundle as a `Reference`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

SAMPLE_FILE = "monitoring_reference.parquet"
SUMMARY_FILE = "monitoring_reference.json"
FILES = (SAMPLE_FILE, SUMMARY_FILE)
NUMBER_TYPES = ("int", "float", "bool")
EVALUATE_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "log_loss",
                    "brier", "mae", "rmse", "r2")


def _round(value: float) -> float:
    return float(f"{value:.10g}")


def bundle_files(*, train: pd.DataFrame, validation: pd.DataFrame, predicted: pd.DataFrame,
                 contract, task: str, scores: dict, rows: int, seed: int) -> dict[str, bytes]:
    """The two reference files as bytes (deterministic for identical inputs).

    `predicted` holds the model's answers on `validation` (`prediction`, and `probability` of
    the positive class for binary tasks), row for row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(contract.feature_columns)
    sample = train[names].sample(n=min(rows, len(train)), random_state=seed)
    sample = sample.reset_index(drop=True)
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(sample, preserve_index=False), buffer,
                   compression="zstd")
    columns = {}
    for name in names:
        spec = contract.columns[name]
        values = train[name]
        info = {"kind": "number" if spec.type in NUMBER_TYPES else "category",
                "null_share": _round(float(values.isna().mean())) if len(values) else 0.0}
        if info["kind"] == "number":
            numbers = pd.to_numeric(values, errors="coerce").astype("float64")
            info.update(min=_round(numbers.min()), max=_round(numbers.max()))
        else:
            seen = set(values.dropna().astype(str))
            info["categories"] = sorted(seen | set(spec.allowed or []))
        columns[name] = info
    target = contract.target.column
    labels = validation[target].astype(str).to_numpy()
    summary = {
        "task": task, "target": target, "positive_class": contract.target.positive,
        "rows_train": len(train), "rows_sampled": len(sample), "seed": seed,
        "columns": columns,
        "validation": {
            "score": [_round(v) for v in (predicted["probability"] if "probability" in
                                          predicted else predicted["prediction"]).astype(float)],
            "prediction": [str(v) for v in predicted["prediction"]],
            "label": [str(v) for v in labels] if task != "regression"
            else [None if np.isnan(v) else _round(v) for v in pd.to_numeric(
                validation[target], errors="coerce").astype("float64")],
        },
        "evaluate": {k: _round(float(scores[k])) for k in EVALUATE_METRICS
                     if isinstance(scores.get(k), int | float)},
    }
    text = json.dumps(summary, sort_keys=True, separators=(",", ":")).encode()
    return {SAMPLE_FILE: buffer.getvalue(), SUMMARY_FILE: text}


@dataclass
class Reference:
    """What a window is judged against, all from the bundle."""

    version: str
    task: str
    features: pd.DataFrame  # the training sample, feature columns
    kinds: dict[str, str]  # column -> number | category
    columns: dict[str, dict]  # column -> min, max, null_share, categories
    validation_scores: np.ndarray  # positive-class probability (binary) or predicted value
    validation_labels: np.ndarray  # 1/0 for binary (positive class), values for regression
    evaluate: dict[str, float]  # the evaluate stage's test scores
    threshold: float | None
    positive_class: str | None
    classes: list[str] | None
    _calibrator: object = field(default=None, repr=False)
    derived: dict = field(default_factory=dict, repr=False, compare=False)  # a check's cache

    @property
    def numeric(self) -> list[str]:
        return [c for c, k in self.kinds.items() if k == "number"]

    @property
    def categorical(self) -> list[str]:
        return [c for c, k in self.kinds.items() if k == "category"]

    def calibrate(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated probability of the positive class: isotonic regression of the validation
        labels on the validation scores (the model's own scores need not be probabilities that
        match frequencies: class weights, for one, inflate them)."""
        if self._calibrator is None:
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=1e-6, y_max=1 - 1e-6, out_of_bounds="clip")
            self._calibrator = iso.fit(self.validation_scores, self.validation_labels)
        return self._calibrator.predict(np.asarray(scores, dtype=np.float64))


def from_files(files: dict[str, bytes], version: str, inference: dict) -> Reference:
    """A Reference from the two files' bytes and the bundle's inference.json."""
    sample = pd.read_parquet(io.BytesIO(files[SAMPLE_FILE]))
    summary = json.loads(files[SUMMARY_FILE])
    task = summary["task"]
    validation = summary["validation"]
    if task == "regression":
        labels = np.asarray([np.nan if v is None else v for v in validation["label"]],
                            dtype=np.float64)
    else:
        positive = summary["positive_class"]
        labels = (np.asarray(validation["label"]) == str(positive)).astype(np.int8)
    return Reference(
        version=version, task=task, features=sample,
        kinds={c: v["kind"] for c, v in summary["columns"].items()},
        columns=summary["columns"],
        validation_scores=np.asarray(validation["score"], dtype=np.float64),
        validation_labels=labels, evaluate=summary["evaluate"],
        threshold=inference.get("threshold"), positive_class=summary["positive_class"],
        classes=inference.get("classes"))


def load(bundle_path: str | Path) -> Reference:
    """The reference of a bundle, every file checked against its manifest first."""
    from lifecycle.packaging.runtime import load_bundle

    bundle = load_bundle(bundle_path, threads=1)
    return from_files({name: bundle.file(name) for name in FILES}, bundle.version,
                      bundle.inference)
