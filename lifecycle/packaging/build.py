"""The package stage's library: every bundle file from the DAG's outputs (`build_files`).

To add a file to the bundle, add its entry to the dict `build_files` returns: `store.write_bundle`
hashes it into the manifest, `runtime.load_bundle` verifies it like the others, and
`Bundle.file(name)` gives its bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lifecycle import features, models, persistence
from lifecycle.contract import Contract, load_contract
from lifecycle.errors import StageError
from lifecycle.monitoring import reference as monitoring_reference
from lifecycle.packaging.card import model_card
from lifecycle.packaging.onnx_export import export, opsets
from lifecycle.packaging.reference import reference_stats
from lifecycle.packaging.signature import class_labels, example_record, model_inputs, signature
from lifecycle.packaging.store import canonical_json


def build_files(*, name: str, task: str, contract_text: bytes, featurizer, model,
                derived: dict[str, str], threshold: float | None, train: pd.DataFrame,
                validation: pd.DataFrame, scores: dict, split_summary: dict,
                lineage_info: dict, card: dict, opset: int, tolerance: float,
                unknown_category: str, bins: int, family: str | None = None,
                reference_sample: dict | None = None) -> dict[str, bytes]:
    """Every bundle file but the manifest, as bytes (deterministic for identical inputs).
    `family`: train.model (default: the lineage's), whose registry entry says how the model
    reaches ONNX; without a converter the bundle has no model.onnx and serves model.skops.
    `reference_sample`: rows and seed of the monitoring reference (lifecycle/monitoring)."""
    from sklearn.pipeline import Pipeline

    contract = Contract.model_validate(yaml.safe_load(contract_text))
    pipeline = Pipeline([("features", featurizer), ("model", model)])
    inputs = model_inputs(contract, derived)
    classes = class_labels(contract, task, model)
    if task == "binary" and threshold is None:
        raise StageError("a binary model needs a decision threshold (metrics/scores.json "
                         "`threshold`, written by evaluate)")
    family = family or lineage_info.get("params", {}).get("train", {}).get("model") \
        or models.family_name_of(model)
    onnx_model, no_onnx = export(pipeline, inputs, name, opset, models.family_of(family).onnx)
    inference = {
        "name": name, "task": task, "target": contract.target.column,
        "classes": classes, "positive_class": contract.target.positive if task == "binary"
        else None, "threshold": threshold if task == "binary" else None,
        "derived": dict(derived), "missing_token": features.MISSING,
        "model_inputs": inputs, "estimator": type(model).__name__,
        "model_family": family,
        "estimator_path": f"{type(model).__module__}.{type(model).__name__}",
        "engine": "onnx" if onnx_model else "sklearn",
        "feature_names": [str(f) for f in featurizer.get_feature_names_out()],
        "unknown_category": unknown_category,
        "onnx": {"opset_import": opsets(onnx_model), "max_opset": opset,
                 "tolerance": tolerance,
                 "inputs": "one [n, 1] tensor per model input: double numbers, string text",
                 "outputs": "probabilities [n, classes]" if task != "regression"
                 else "variable [n, 1]"} if onnx_model else
        {"unavailable": f"{no_onnx}: served from model.skops (the sklearn Pipeline)"},
    }
    sig = signature(contract, unknown_category, example_record(train, contract))
    model_input = features.model_frame(validation, contract, derived)
    if task == "regression":
        predicted = pd.DataFrame({"prediction": pipeline.predict(model_input)})
    else:
        proba = pipeline.predict_proba(model_input)
        if task == "binary":
            decided = {"prediction": np.where(proba[:, 1] >= threshold, classes[1], classes[0]),
                       "probability": proba[:, 1]}
        else:
            best = proba.argmax(axis=1)
            decided = {"prediction": np.asarray(classes, dtype=object)[best],
                       "probability": proba[np.arange(len(best)), best]}
        predicted = pd.DataFrame(decided)
    stats = reference_stats(train, contract, predicted, task, bins, "validation split")
    card_text = model_card(name=name, task=task, contract=contract, inference=inference,
                           scores=scores, split_summary=split_summary, lineage_info=lineage_info,
                           card=card, tolerance=tolerance)
    files = {
        "model.skops": persistence.dumps(pipeline),
        "contract.yaml": contract_text,
        "inference.json": canonical_json(inference),
        "signature.json": canonical_json(sig),
        "reference_stats.json": canonical_json(stats),
        "model_card.md": card_text.encode(),
        **monitoring_reference.bundle_files(train=train, validation=validation,
                                            predicted=predicted, contract=contract, task=task,
                                            scores=scores,
                                            **(reference_sample or {"rows": 5000, "seed": 42})),
    }
    if onnx_model:
        files["model.onnx"] = onnx_model
    return files




def read_threshold(scores: dict, task: str) -> float | None:
    """The decision threshold evaluate chose on validation (a number, or {"value": ...})."""
    if task != "binary":
        return None
    value = scores.get("threshold")
    if isinstance(value, dict):
        value = value.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise StageError(f"metrics/scores.json: `threshold` must be a probability, got {value!r}")
    return float(value)


def load_contract_text(path: str | Path) -> tuple[bytes, Contract]:
    """The contract file's bytes (copied into the bundle as they are) and its parsed form."""
    return Path(path).read_bytes(), load_contract(path)
