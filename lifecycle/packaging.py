"""The inference bundle: cleaning rules, fitted features and model as one checked artifact.

`package` builds models/bundle/ (`build_files`, `write_bundle`); serving and batch scoring open
it with `load_bundle`, which refuses a bundle whose files do not match its manifest. The ONNX
export (double precision: trees then split exactly as in sklearn) is the fast path; the skops
Pipeline is the reference it is checked against, on the validation split and synthetic edge
rows (the test split is read by `evaluate` alone).

Serving: `check_records` + `predict_records` (plain dict records, ~0.1 ms a row); batch:
`check_rows` + `predict` (DataFrames, chunks of ~100k rows).

Row checks (`Bundle.check_rows`, `Bundle.check_records`) apply the contract to the signature
fields (the id and the feature columns): a row is rejected, with its reasons, for a missing
required field, a value that cannot be read as the declared type, a number outside its declared
range, or a broken cross-field rule. Categories outside the contract's `allowed` list are
accepted by default (`package.unknown_category`): the encoder ignores unseen categories, and
drift monitoring sees them against `reference_stats.json`.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lifecycle import features
from lifecycle.cleaning import make_coherent, spelling_key
from lifecycle.contract import Contract, load_contract
from lifecycle.errors import StageError
from lifecycle.io import json_default

MANIFEST = "manifest.json"
BUNDLE_FILES = ("model.skops", "model.onnx", "contract.yaml", "inference.json", "signature.json",
                "reference_stats.json", "model_card.md")
NUMBER_TYPES = ("int", "float", "bool")
ML_OPSET = 3  # ai.onnx.ml 3: tree ensembles with double thresholds (`*_as_tensor`)
TEXT_TYPES = ("string", "category")


class BundleError(StageError):
    """A bundle that must not be used: tampered, incomplete, or failing its own checks."""


# --- expressions: derived features and contract rules, evaluated without pandas' overhead ----
_FUNCTIONS = {name: getattr(np, name) for name in (
    "sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "arcsinh",
    "arccosh", "arctanh", "exp", "expm1", "log", "log1p", "log10", "sqrt", "abs", "arctan2")}
_SAFE_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Name, ast.Load,
               ast.Constant, ast.Call, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.Mod,
               ast.FloorDiv, ast.BitAnd, ast.BitOr, ast.USub, ast.UAdd, ast.Invert, ast.Lt,
               ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)


class Expression:
    """A pandas `eval` expression over numeric columns, compiled once to numpy when it is plain
    arithmetic, single comparisons and numpy math functions over those columns (the common
    case: ~2 us per call instead of ~1 ms); anything else is left to pandas itself."""

    def __init__(self, text: str, numeric_names: set[str]):
        self.text = text
        self.names = sorted(set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)))
        self._code = _compile(text, numeric_names)

    @property
    def compiled(self) -> bool:
        return self._code is not None

    def scalar(self, values: dict):
        """The expression for one row of plain values (numbers as numpy floats, so division
        by zero gives inf as it does on columns instead of raising)."""
        numbers = {k: np.float64(v) if isinstance(v, int | float) else v
                   for k, v in values.items()}
        if self._code is None:
            return pd.DataFrame({k: [v] for k, v in numbers.items()}).eval(self.text).iloc[0]
        with np.errstate(all="ignore"):
            return eval(self._code, {"__builtins__": {}}, {**_FUNCTIONS, **numbers})

    def __call__(self, columns: dict[str, np.ndarray], n: int) -> np.ndarray:
        if self._code is None:
            frame = pd.DataFrame({k: v for k, v in columns.items() if k in self.names})
            return np.asarray(frame.eval(self.text))
        with np.errstate(all="ignore"):
            value = np.asarray(eval(self._code, {"__builtins__": {}}, {**_FUNCTIONS, **columns}))
        return value if value.shape == (n,) else np.broadcast_to(value, (n,))


def _compile(text: str, numeric_names: set[str]):
    """Python code for the expression, or None. Safe to eval: every node of its syntax tree is
    a name of a numeric column or a numpy function, a number, arithmetic or a comparison."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if not isinstance(node, _SAFE_NODES):
            return None
        if isinstance(node, ast.Compare) and len(node.ops) > 1:
            return None  # pandas chains comparisons elementwise; numpy cannot
        if isinstance(node, ast.Call) and (not isinstance(node.func, ast.Name) or node.keywords
                                           or node.func.id not in _FUNCTIONS):
            return None
        if isinstance(node, ast.Name) and node.id not in numeric_names | set(_FUNCTIONS):
            return None
        if isinstance(node, ast.Constant) and not isinstance(node.value, int | float):
            return None
    return compile(tree, "<expression>", "eval")


# --- serialisation -------------------------------------------------------------------------
def onnx_bytes(pipeline, inputs: list[dict], name: str, opset: int) -> bytes:
    """The fitted Pipeline in ONNX: one [None, 1] input per model-frame column (double for
    numbers, string for text), probabilities without ZipMap, ai.onnx opset at most `opset`
    (ai.onnx.ml at most ML_OPSET), and reproducible bytes (a fixed graph name instead of
    skl2onnx's random uuid; opset imports sorted, skl2onnx collects them in a set).

    Numbers stay double end to end (see `_register_double_converters`): with float32 inputs
    a tree's split can fall between a value and its float32 rounding, and gradient boosting
    then moved probabilities by up to 0.45 on the demo's validation split."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    _register_double_converters()
    types = [(i["name"], DoubleTensorType([None, 1]) if i["kind"] == "number"
              else StringTensorType([None, 1])) for i in inputs]
    estimator = pipeline.steps[-1][1]
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    model = convert_sklearn(pipeline, initial_types=types, options=options,
                            target_opset={"": opset, "ai.onnx.ml": ML_OPSET})
    model.graph.name = name
    imports = sorted((o.domain, o.version) for o in model.opset_import)
    del model.opset_import[:]
    for domain, version in imports:
        model.opset_import.add(domain=domain, version=version)
    return model.SerializeToString()


_TREE_TENSORS = ("nodes_values", "nodes_hitrates", "class_weights", "target_weights",
                 "base_values")
_TREE_CONVERTERS = ("SklearnDecisionTreeClassifier", "SklearnDecisionTreeRegressor",
                    "SklearnRandomForestClassifier", "SklearnRandomForestRegressor",
                    "SklearnHistGradientBoostingClassifier",
                    "SklearnHistGradientBoostingRegressor")
_double_converters = threading.Lock()
_double_registered = False


def _register_double_converters() -> None:
    """Let skl2onnx export our pipelines in double precision, which onnxruntime runs.

    skl2onnx's SimpleImputer becomes an `Imputer` node, which onnxruntime has no double kernel
    for: it is replaced by Where(IsNaN(x), medians, x). Its tree converters store split
    thresholds as float32 attributes even for double inputs: they are wrapped so the
    thresholds and leaf weights go into the `*_as_tensor` double attributes of
    TreeEnsemble*/ai.onnx.ml 3, and the float scores onnxruntime returns are cast to the
    declared output type. The agreement check in `package` guards all of it."""
    global _double_registered
    with _double_converters:
        if _double_registered:
            return
        from onnx import TensorProto
        from skl2onnx import update_registered_converter
        from skl2onnx.algebra.onnx_ops import OnnxConcat, OnnxIsNaN, OnnxWhere
        from skl2onnx.common._registration import get_converter, register_converter
        from skl2onnx.common.data_types import guess_proto_type
        from skl2onnx.shape_calculators.imputer import calculate_sklearn_imputer_output_shapes
        from sklearn.impute import SimpleImputer

        def imputer(scope, operator, container):
            op, version = operator.raw_operator, container.target_opset
            double = guess_proto_type(operator.inputs[0].type) == TensorProto.DOUBLE
            fill = op.statistics_.astype(np.float64 if double else np.float32).reshape(1, -1)
            x = (operator.inputs[0] if len(operator.inputs) == 1
                 else OnnxConcat(*operator.inputs, axis=1, op_version=version))
            OnnxWhere(OnnxIsNaN(x, op_version=version), fill, x, op_version=version,
                      output_names=operator.outputs[:1]).add_to(scope, container)

        update_registered_converter(SimpleImputer, "SklearnSimpleImputer",
                                    calculate_sklearn_imputer_output_shapes, imputer)
        for alias in _TREE_CONVERTERS:
            registered = get_converter(alias)
            register_converter(alias, _double_trees(registered._fct), overwrite=True,
                               options=registered.get_allowed_options())
        _double_registered = True


def _double_trees(convert):
    """A tree converter that, for double inputs, writes double thresholds (see above)."""
    from onnx import TensorProto
    from skl2onnx.common.data_types import guess_proto_type

    def converter(scope, operator, container):
        if guess_proto_type(operator.inputs[0].type) != TensorProto.DOUBLE:
            return convert(scope, operator, container)
        return convert(scope, operator, _DoubleTreeContainer(container, scope, operator),
                       op_version=3)

    return converter


class _DoubleTreeContainer:
    """Passes nodes on to skl2onnx's container, tree ensembles with double tensors."""

    def __init__(self, container, scope, operator):
        self._container, self._scope = container, scope
        self._declared = {v.full_name: v.type for v in operator.outputs}

    def __getattr__(self, name):
        return getattr(self._container, name)

    def add_node(self, op_type, inputs, outputs, op_domain="", op_version=None, **attrs):
        if op_type not in ("TreeEnsembleClassifier", "TreeEnsembleRegressor"):
            return self._container.add_node(op_type, inputs, outputs, op_domain=op_domain,
                                            op_version=op_version, **attrs)
        from onnx import TensorProto
        from onnx.numpy_helper import from_array
        from skl2onnx.common.data_types import guess_proto_type

        for key in _TREE_TENSORS:
            value = attrs.get(key)
            if isinstance(value, np.ndarray) and value.dtype == np.float64:
                attrs[f"{key}_as_tensor"] = from_array(attrs.pop(key))
        outputs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
        position = 1 if op_type == "TreeEnsembleClassifier" else 0  # the scores
        declared = outputs[position]
        kind = self._declared.get(declared)
        if kind is not None and guess_proto_type(kind) == TensorProto.FLOAT:
            return self._container.add_node(op_type, inputs, outputs, op_domain=op_domain,
                                            op_version=3, **attrs)
        outputs[position] = self._scope.get_unique_variable_name("float_scores")
        self._container.add_node(op_type, inputs, outputs, op_domain=op_domain, op_version=3,
                                 **attrs)
        self._container.add_node("Cast", [outputs[position]], [declared],
                                 to=TensorProto.DOUBLE,
                                 name=self._scope.get_unique_operator_name("Cast"))


def canonical_json(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False, default=json_default) + "\n").encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- what the bundle says about itself --------------------------------------------------------
def model_inputs(contract: Contract, derived: dict[str, str]) -> list[dict]:
    """The ONNX inputs, in `features.model_frame` column order."""
    numbers = [*features.numeric_columns(contract, derived),
               *features.indicator_columns(contract)]
    return ([{"name": c, "kind": "number"} for c in numbers]
            + [{"name": c, "kind": "text"} for c in features.categorical_columns(contract)])


def class_labels(contract: Contract, task: str, model) -> list[str] | None:
    """Labels of the model's probability columns; binary models predict 0/1 = (other, positive)."""
    if task == "regression":
        return None
    if task == "binary":
        if [int(c) for c in model.classes_] != [0, 1]:
            raise StageError(f"a binary model must predict 0/1, it has classes {model.classes_}")
        positive = contract.target.positive
        allowed = contract.columns[contract.target.column].allowed or []
        others = [a for a in allowed if a != positive]
        return [others[0] if len(others) == 1 else f"not {positive}", positive]
    return [str(c) for c in model.classes_]


def signature(contract: Contract, unknown_category: str, example: dict | None = None) -> dict:
    """Input fields the API accepts: the id (for logging and sticky routing, never a feature)
    and the feature columns, with their declared type, nullability, categories and range."""
    fields = []
    for name in [contract.id, *contract.feature_columns]:
        spec = contract.columns[name]
        entry = {"name": name, "role": "id" if name == contract.id else "feature",
                 "type": spec.type, "nullable": spec.nullable, "required": not spec.nullable}
        if spec.allowed is not None:
            entry["allowed"] = list(spec.allowed)
        for end in ("min", "max"):
            bound = getattr(spec, end)
            if bound is not None:
                entry[end] = int(bound) if spec.type == "int" and bound == int(bound) else bound
        fields.append(entry)
    names = {f["name"] for f in fields}
    rules = [{"name": r.name, "check": r.check} for r in contract.rules
             if set(contract.rule_columns(r)) <= names]
    out = {"id": contract.id, "fields": fields, "rules": rules,
           "unknown_category": unknown_category}
    if example is not None:
        out["example"] = example
    return out


def example_record(frame: pd.DataFrame, contract: Contract) -> dict:
    """A valid request for documentation and smoke tests: the first training row's features
    under a made-up id (no real identifier leaves the training data)."""
    row = frame.sort_values(contract.id, kind="stable").iloc[0]
    record = {contract.id: "example-0001"}
    for name in contract.feature_columns:
        record[name] = _py(row[name])
    return record


def _round(value: float) -> float:
    return float(f"{value:.10g}")


def numeric_profile(values: np.ndarray, bins: int) -> dict:
    """Quantile bin edges and the share of values per bin, plus mean, std, range and null share.
    Bin i holds values in (edges[i-1], edges[i]]; the first and last bins are open-ended."""
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    out = {"type": "number", "rows": len(values),
           "null_share": _round(1 - len(present) / len(values)) if len(values) else 0.0}
    if not len(present):
        return {**out, "edges": [], "counts": [], "shares": []}
    quantiles = np.quantile(present, np.arange(1, bins) / bins)
    edges = sorted({_round(q) for q in quantiles})
    counts = histogram(present, edges)
    return {**out, "mean": _round(present.mean()), "std": _round(present.std(ddof=1))
            if len(present) > 1 else 0.0, "min": _round(present.min()),
            "max": _round(present.max()), "edges": edges, "counts": counts.tolist(),
            "shares": [_round(c / len(present)) for c in counts]}


def histogram(values, edges: list[float]) -> np.ndarray:
    """Counts of non-null values in the reference bins of `numeric_profile`."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return np.bincount(np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left"),
                       minlength=len(edges) + 1)


def category_profile(values: pd.Series) -> dict:
    """Share of each category (most frequent first) and the null share."""
    counts = values.astype("string").value_counts(dropna=True)
    counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
    n = len(values)
    return {"type": "category", "rows": n,
            "null_share": _round(values.isna().sum() / n) if n else 0.0,
            "counts": {str(k): int(v) for k, v in counts.items()},
            "shares": {str(k): _round(v / n) for k, v in counts.items()}}


def reference_stats(train: pd.DataFrame, contract: Contract, predictions: pd.DataFrame,
                    task: str, bins: int, prediction_source: str) -> dict:
    """Training-data statistics per input feature and the distribution of the model's output,
    the reference that drift checks compare live traffic with."""
    columns = {}
    for name in contract.feature_columns:
        spec = contract.columns[name]
        if spec.type in NUMBER_TYPES:
            values = pd.to_numeric(train[name], errors="coerce").astype("float64").to_numpy()
            columns[name] = numeric_profile(values, bins)
        else:
            columns[name] = category_profile(train[name])
    if task == "regression":
        output = {"kind": "predicted value",
                  **numeric_profile(predictions["prediction"].to_numpy(), bins)}
    else:
        kind = "probability of the positive class" if task == "binary" else \
            "probability of the predicted class"
        output = {"kind": kind, **numeric_profile(predictions["probability"].to_numpy(), bins),
                  "predicted_classes": category_profile(predictions["prediction"])["shares"]}
    return {"features_from": "train split", "rows": len(train), "bins": bins,
            "binning": "bin i holds values in (edges[i-1], edges[i]]; first/last bins open",
            "features": columns, "prediction": {"from": prediction_source, **output}}


# --- lineage from dvc.lock --------------------------------------------------------------------
def md5_file(path: str | Path) -> str:
    """The md5 DVC records for a file (DVC 3: md5 of its bytes)."""
    digest = hashlib.md5()  # DVC's content hash, not a security measure
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lineage(lock: dict, inputs: dict[str, str], code: dict[str, str], params: dict) -> dict:
    """The data, params and code behind the bundle, from dvc.lock: every stage upstream of the
    package's `inputs` ({path: md5}), with its deps, params and the outs that lead to the
    bundle, as DVC recorded them.

    Fails if dvc.lock records an input with another hash than the file has (a stale lock: the
    bundle would claim a lineage it does not have)."""
    stages = lock.get("stages", {})
    outs = {o["path"]: name for name, s in stages.items() for o in s.get("outs", [])}
    recorded = {o["path"]: o.get("md5") for s in stages.values() for o in s.get("outs", [])}
    for path, md5 in inputs.items():
        if path in recorded and recorded[path] != md5:
            raise StageError(f"dvc.lock records {path} as md5 {recorded[path]} but the file has "
                             f"{md5}: dvc.lock is stale, run the DAG with `dvc repro`")

    def producers(path: str) -> list[str]:
        """The stages whose outs are this path, a folder holding it, or inside it (a folder
        dep such as data/external holds another stage's out)."""
        return [name for out, name in outs.items()
                if out == path or path.startswith(f"{out}/") or out.startswith(f"{path}/")]

    upstream, todo = [], [name for p in inputs for name in producers(p)]
    while todo:
        name = todo.pop()
        if name in upstream:
            continue
        upstream.append(name)
        todo += [n for d in stages[name].get("deps", []) for n in producers(d["path"])]
    ordered = [name for name in stages if name in upstream]  # dvc.lock keeps the DAG's order
    # Only the outs that flow on to the bundle: a side output (a metrics file with a timing,
    # a figure) is not part of what the bundle was made from, and must not change its version.
    consumed = {*inputs, *(d["path"] for name in ordered for d in stages[name].get("deps", []))}

    def flows_on(path: str) -> bool:
        return any(c == path or c.startswith(f"{path}/") or path.startswith(f"{c}/")
                   for c in consumed)

    detail = {name: {"deps": {d["path"]: d.get("md5") for d in stages[name].get("deps", [])},
                     "outs": {o["path"]: o.get("md5") for o in stages[name].get("outs", [])
                              if flows_on(o["path"])},
                     "params": stages[name].get("params", {})} for name in ordered}
    data, all_code, all_params = {}, {}, {}
    for entry in detail.values():
        for path, md5 in {**entry["deps"], **entry["outs"]}.items():
            (all_code if path.endswith(".py") else data)[path] = md5
        for per_file in entry["params"].values():
            all_params.update(per_file)
    all_code.update(code)
    data.update({p: m for p, m in inputs.items() if not p.endswith(".py")})
    return {"stages": detail, "data": dict(sorted(data.items())),
            "code": dict(sorted(all_code.items())),
            "params": {k: all_params[k] for k in sorted(all_params)},
            "package": {"inputs": inputs, "code": code, "params": params}}


# --- the model card ---------------------------------------------------------------------------
def model_card(*, name: str, task: str, contract: Contract, inference: dict, scores: dict,
               split_summary: dict, lineage_info: dict, card: dict, tolerance: float) -> str:
    """model_card.md: intended use, data, metrics with intervals, params, limitations and
    ethical notes. Built only from deterministic inputs (no dates of the run)."""
    target = contract.target.column
    lines = [f"# Model card: {name}", "",
             "Version and file hashes: `manifest.json` (the bundle's `version`).", "",
             "## Intended use", "", card["intended_use"].strip(), "",
             f"Out of scope: {card['out_of_scope'].strip()}", "", "## Model", ""]
    if task == "binary":
        lines.append(f"- Task: binary classification of `{target}`; positive class "
                     f"\"{inference['positive_class']}\", decision threshold "
                     f"{inference['threshold']} (chosen on the validation split by evaluate).")
    elif task == "multiclass":
        lines.append(f"- Task: multiclass classification of `{target}` "
                     f"({len(inference['classes'])} classes); prediction = most probable class.")
    else:
        lines.append(f"- Task: regression of `{target}`.")
    family = lineage_info.get("params", {}).get("train", {}).get("model")
    chosen = f" (`train.model: {family}`)" if family else ""
    lines += [
        f"- Estimator: {inference['estimator']}{chosen}, over "
        f"{len(inference['feature_names'])} model features built from "
        f"{len(contract.feature_columns)} input columns.",
        f"- Inputs: `signature.json` (id `{contract.id}` for logging and sticky routing only, "
        "never a feature); rows are cleaned with the contract's rules (`contract.yaml`).",
        f"- Files: `model.skops` (the sklearn Pipeline, the reference) and `model.onnx` (the "
        f"serving fast path, opsets {inference['onnx']['opset_import']}, double precision); "
        f"package checked that they agree within "
        f"{tolerance:g} on the validation split and synthetic edge rows.", "",
        "## Data", ""]
    splits = split_summary.get("splits", {})
    sizes = ", ".join(f"{s} {info.get('rows')}" for s, info in splits.items())
    lines.append(f"- Dataset `{contract.dataset}`: {split_summary.get('rows_out', '?')} clean "
                 f"rows, `{split_summary.get('method', '?')}` split: {sizes}.")
    for split_name, info in splits.items():
        extras = []
        if info.get("time_range"):
            extras.append(f"{contract.event_time} {info['time_range'][0]} to "
                          f"{info['time_range'][1]}")
        if info.get("class_balance"):
            extras.append("classes " + ", ".join(f"{k} {v:.1%}" for k, v
                                                 in info["class_balance"].items()))
        if extras:
            lines.append(f"- {split_name}: " + "; ".join(extras) + ".")
    lines += ["- Reference statistics for drift checks: `reference_stats.json` (inputs from the "
              "train split, predictions on the validation split).", "",
              f"## Metrics (test split, {scores.get('test_rows', '?')} rows, by evaluate)", "",
              *_metrics_lines(scores), "", "## Parameters", "",
              "The modelling params as dvc.lock recorded them (every upstream param: "
              "`manifest.json`, `lineage.params`):", "", "```yaml",
              yaml.safe_dump(_modelling_params(lineage_info.get("params", {})),
                             sort_keys=True).strip(), "```", "", "## Limitations", ""]
    lines += [f"- {item.strip()}" for item in card["limitations"]]
    lines += ["- Categories outside the training data are " + (
        "accepted; the encoder ignores them, so such rows are scored from their other fields."
        if inference["unknown_category"] == "accept" else "rejected by the row checks."),
        "- Performance holds only while live inputs resemble the training data: compare them "
        "with `reference_stats.json`.", "", "## Ethical considerations and personal data", ""]
    personal = ", ".join(f"`{c}`" for c in contract.personal_data) or "none declared"
    lines.append(f"- Personal data in the contract: {personal}. None of it is a model feature; "
                 f"`{contract.id}` is accepted only to correlate logs and route requests, and is "
                 "masked (`contract.mask`) wherever rows are logged or reported.")
    if card["sensitive_features"]:
        lines.append("- Sensitive attributes used as features: " + ", ".join(
            f"`{c}`" for c in card["sensitive_features"]) + ". Check error rates per group "
            "before acting on predictions that affect people.")
    lines += ["- The test split was read only by evaluate; package read the train split "
              "(reference statistics) and the validation split (the ONNX check).", ""]
    return "\n".join(lines)


def _modelling_params(params: dict) -> dict:
    """task, split, featurize and train params, train trimmed to the chosen family's section."""
    shown = {k: params[k] for k in ("task", "split", "featurize") if k in params}
    train = params.get("train")
    if isinstance(train, dict):
        family = train.get("model")
        shown["train"] = {k: v for k, v in train.items()
                          if not isinstance(v, dict) or k == family
                          or (k == "search" and v.get("method", "none") != "none")}
    return shown


def _metrics_lines(scores: dict) -> list[str]:
    """The test-split metrics evaluate wrote, with their intervals and the naive baseline."""
    intervals = next((scores[k] for k in ("ci", "intervals", "confidence_intervals")
                      if isinstance(scores.get(k), dict)), {})
    baseline = scores.get("baseline") if isinstance(scores.get("baseline"), dict) else {}
    confidence = next((v["confidence"] for v in intervals.values()
                       if isinstance(v, dict) and "confidence" in v), None)
    interval = f"{confidence:.0%} interval" if confidence else "interval"
    rows = [f"| metric | value | {interval} | naive baseline |", "|---|---|---|---|"]
    for key, value in scores.items():
        if key in ("threshold", "test_rows") or isinstance(value, bool) \
                or not isinstance(value, int | float):
            continue
        rows.append(f"| {key} | {_fmt(value)} | {_interval(intervals.get(key))} | "
                    f"{_fmt(baseline.get(key))} |")
    for key in ("business_value", "business"):
        if isinstance(scores.get(key), dict):
            rows += ["", "Business value: " + ", ".join(
                f"{k} {_fmt(v)}" for k, v in scores[key].items()
                if isinstance(v, int | float | str)) + "."]
    return rows if len(rows) > 2 else ["No metrics in metrics/scores.json."]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return "" if value is None else str(value)


def _interval(value) -> str:
    if isinstance(value, dict):
        value = [value.get("low", value.get("lower")), value.get("high", value.get("upper"))]
    if isinstance(value, list | tuple) and len(value) == 2 and None not in value:
        return f"[{_fmt(value[0])}, {_fmt(value[1])}]"
    return ""


# --- writing and reading the bundle -----------------------------------------------------------
def manifest_for(files: dict[str, bytes], lineage_info: dict) -> dict:
    """{files: {name: sha256}, version, lineage}; the version hashes the files and the lineage,
    so no byte of the bundle can change without the loader noticing."""
    hashes = {name: _sha256(files[name]) for name in sorted(files)}
    return {"version": _version(hashes, lineage_info), "files": hashes, "lineage": lineage_info}


def _version(hashes: dict, lineage_info: dict) -> str:
    return _sha256(canonical_json({"files": hashes, "lineage": lineage_info}))[:12]


def write_bundle(dest: str | Path, files: dict[str, bytes], lineage_info: dict) -> dict:
    """Write the bundle files and their manifest; the folder is replaced as a whole."""
    dest = Path(dest)
    unexpected = set(files) ^ set(BUNDLE_FILES)
    if unexpected:
        raise BundleError(f"bundle files must be exactly {list(BUNDLE_FILES)}, "
                          f"not {sorted(files)}")
    if dest.exists() and any(dest.iterdir()) and not (dest / MANIFEST).exists():
        raise BundleError(f"{dest} exists and is not a bundle: refusing to replace it")
    manifest = manifest_for(files, lineage_info)
    staging = dest.parent / f".{dest.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, data in files.items():
        (staging / name).write_bytes(data)
    (staging / MANIFEST).write_bytes(canonical_json(manifest))
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return manifest


def remove_bundle(dest: str | Path) -> None:
    """Delete a bundle that failed its checks, so nothing can load it by mistake."""
    dest = Path(dest)
    if (dest / MANIFEST).exists():
        shutil.rmtree(dest)


def load_bundle(path: str | Path, threads: int | None = None) -> Bundle:
    """Open a bundle after checking every file against its manifest.

    Raises BundleError naming the file when a file is missing, unexpected, or differs from the
    sha256 its manifest records. `threads` caps ONNX runtime's intra-op threads (None: all
    cores; 1 gives the lowest single-row latency when requests run in parallel)."""
    path = Path(path)
    data = _verified_files(path)
    return Bundle(path, data, threads)


def _verified_files(path: Path) -> dict[str, bytes]:
    if not (path / MANIFEST).is_file():
        raise BundleError(f"{path}: no {MANIFEST}, not a bundle (run the package stage)")
    raw = (path / MANIFEST).read_bytes()
    try:
        manifest = json.loads(raw)
        hashes, lineage_info = manifest["files"], manifest["lineage"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path / MANIFEST}: unreadable or incomplete manifest ({exc})") from exc
    if canonical_json(manifest) != raw:
        raise BundleError(f"{path / MANIFEST}: its bytes differ from the manifest it encodes "
                          "(edited after packaging)")
    listed = set(hashes)
    if listed != set(BUNDLE_FILES):
        raise BundleError(f"{path / MANIFEST}: lists {sorted(listed)}, "
                          f"a bundle holds exactly {sorted(BUNDLE_FILES)}")
    present = {p.name for p in path.iterdir()} - {MANIFEST}
    extra, missing = sorted(present - listed), sorted(listed - present)
    if extra:
        raise BundleError(f"{path}: unexpected file(s) not in the manifest: {', '.join(extra)}")
    if missing:
        raise BundleError(f"{path}: file(s) listed in the manifest are missing: "
                          f"{', '.join(missing)}")
    data = {}
    for name in BUNDLE_FILES:
        file = path / name
        if not file.is_file():
            raise BundleError(f"{file}: not a regular file")
        content = file.read_bytes()
        actual = _sha256(content)
        if actual != hashes[name]:
            raise BundleError(f"{file}: sha256 mismatch (manifest {hashes[name][:12]}, file "
                              f"{actual[:12]}): the file changed after packaging")
        data[name] = content
    if _version(hashes, lineage_info) != manifest.get("version"):
        raise BundleError(f"{path / MANIFEST}: version {manifest.get('version')!r} does not "
                          "match its files and lineage (edited after packaging)")
    data[MANIFEST] = raw
    return data


_SIMPLE_TEXT = re.compile(r"[ -~\t\n\r]*\Z")  # printable ASCII: every whitespace rule agrees


@dataclass
class _Field:
    name: str
    type: str
    nullable: bool
    allowed: list[str] | None
    min: float | None
    max: float | None
    canonical: dict[str, str] = field(default_factory=dict)  # spelling -> allowed category
    verbatim: frozenset = frozenset()  # texts make_coherent leaves as they are (fast check)

    def __post_init__(self):
        if self.type == "category" and self.allowed:
            self.canonical = {spelling_key(a): a for a in self.allowed}
            self.verbatim = frozenset(
                a for a in self.allowed if self.canonical[spelling_key(a)] == a
                and _SIMPLE_TEXT.match(a) and a == " ".join(a.split()))


class Bundle:
    """A verified bundle: row checks and predictions with the ONNX or the sklearn engine.

    The ONNX session and the feed plan are built once; the sklearn Pipeline is loaded on first
    use (skops + sklearn imports cost ~2 s, serving never needs them)."""

    def __init__(self, path: Path, files: dict[str, bytes], threads: int | None = None):
        self.path = path
        self._files = files
        self.manifest: dict = json.loads(files[MANIFEST])
        self.version: str = self.manifest["version"]
        self.inference: dict = json.loads(files["inference.json"])
        self.signature: dict = json.loads(files["signature.json"])
        self.contract: Contract = Contract.model_validate(yaml.safe_load(files["contract.yaml"]))
        self.task: str = self.inference["task"]
        self.threshold: float | None = self.inference.get("threshold")
        self.classes: list[str] | None = self.inference.get("classes")
        self._sklearn = None
        self._lock = threading.Lock()
        self._plan()
        self._session = self._onnx_session(threads)

    @property
    def reference_stats(self) -> dict:
        return json.loads(self._files["reference_stats.json"])

    @property
    def model_card(self) -> str:
        return self._files["model_card.md"].decode()

    # -- set-up --
    def _plan(self) -> None:
        contract, derived = self.contract, self.inference["derived"]
        self._fields = [_Field(f["name"], f["type"], f["nullable"], f.get("allowed"),
                               f.get("min"), f.get("max")) for f in self.signature["fields"]]
        self._number_sources = [c for c in contract.feature_columns
                                if contract.columns[c].type in NUMBER_TYPES]
        self._text_sources = features.categorical_columns(contract)
        numeric = set(self._number_sources)
        self._derived = [(name, Expression(expr, numeric)) for name, expr in derived.items()]
        self._indicators = list(features.indicator_columns(contract).items())
        self._inputs = [(i["name"], i["kind"]) for i in self.inference["model_inputs"]]
        numbers = {f.name for f in self._fields if f.type in NUMBER_TYPES}
        self._rules = [(r["name"], Expression(r["check"], numbers))
                       for r in self.signature["rules"]]
        self._rule_columns = {r.name: self.contract.rule_columns(r) for r in contract.rules}
        self._reject_unknown = self.signature["unknown_category"] == "reject"
        self._value_columns = {c for _, used in self._rule_columns.items() for c in used} | (
            {f.name for f in self._fields if f.allowed is not None} if self._reject_unknown
            else set())

    def _onnx_session(self, threads: int | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(self._files["model.onnx"], options,
                                       providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        strangers = sorted(names - {n for n, _ in self._inputs})
        if strangers:
            raise BundleError(f"{self.path}/model.onnx: inputs {strangers} are not in "
                              "inference.json model_inputs")
        # skl2onnx leaves out inputs no transformer reads (a column without frequent category)
        self._inputs = [(n, kind) for n, kind in self._inputs if n in names]
        self._output = session.get_outputs()[-1].name  # probabilities, or the regression value
        return session

    @property
    def pipeline(self):
        """The sklearn Pipeline (features + model) from model.skops, loaded on first use."""
        with self._lock:
            if self._sklearn is None:
                try:
                    self._sklearn = features.loads(self._files["model.skops"])
                except ValueError as exc:
                    raise BundleError(f"{self.path}/model.skops: {exc}") from exc
        return self._sklearn

    # -- row checks --
    def check_rows(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Split input rows into coherent rows that meet the contract and rejected rows (as
        received) with a `reason` ("; "-joined, e.g. `wrong_type:tenure; rule:...`).

        Signature fields absent from `frame` count as null; other columns pass through."""
        absent = [f.name for f in self._fields if f.name not in frame.columns]
        if absent:
            frame = frame.assign(**{name: pd.Series(None, index=frame.index, dtype=object)
                                    for name in absent})
        names = [f.name for f in self._fields]
        coherent, unreadable = coherent_columns(frame[names], self.contract)
        columns = {f.name: _arrays(coherent[f.name], f.type, f.name in self._value_columns)
                   for f in self._fields}
        bad, reasons = self._reasons(
            columns, {n: unreadable[n].to_numpy(dtype=bool) for n in names}, len(frame))
        ok = frame.assign(**{n: coherent[n] for n in names})
        if bad.any():
            return ok[~bad], frame[bad].assign(reason=reasons)
        return ok, frame.iloc[:0].assign(reason=pd.Series([], dtype=object))

    def check_records(self, records: list[dict]) -> tuple[list[dict], dict[int, str]]:
        """`check_rows` for a few dict records without pandas' per-call overhead: the coherent
        records that meet the contract (input order, rejected ones left out) and the reasons
        of the rejected ones by position.

        Each value is read by its own type, as `check_rows` reads a column of Python objects
        (so `true` is no number, and a record's verdict never depends on the others): the
        result equals `check_rows(pd.DataFrame(records, dtype=object))`. Plain JSON values are
        checked here in Python; records with others (numbers sent as text...) go through
        `check_rows` itself."""
        done: dict[int, dict] = {}
        reasons: dict[int, str] = {}
        slow = []
        for i, record in enumerate(records):
            values, unreadable = {}, set()
            for f in self._fields:
                value, readable = _coherent_value(f, record.get(f.name))
                if readable is None:
                    break
                values[f.name] = value
                if not readable:
                    unreadable.add(f.name)
            else:
                reason = self._record_reason(values, unreadable)
                if reason is None:
                    done[i] = {**record, **values}
                else:
                    reasons[i] = reason
                continue
            slow.append(i)
        if slow:
            ok, rejected = self.check_rows(pd.DataFrame([records[i] for i in slow], dtype=object))
            for j, row in zip(ok.index, ok.to_dict("records"), strict=True):
                done[slow[j]] = {**records[slow[j]],
                                 **{f.name: _py(row[f.name]) for f in self._fields}}
            reasons.update({slow[j]: reason for j, reason in rejected["reason"].items()})
        return [done[i] for i in sorted(done)], dict(sorted(reasons.items()))

    def _record_reason(self, values: dict, unreadable: set[str]) -> str | None:
        """`_reasons` for one coherent record, in plain Python (the same checks, same order)."""
        found = []
        for f in self._fields:
            value = values[f.name]
            if f.name in unreadable:
                found.append(f"wrong_type:{f.name}")
            elif value is None and not f.nullable:
                found.append(f"missing_required:{f.name}")
            if value is not None and f.type in ("int", "float") and (
                    (f.min is not None and value < f.min) or (f.max is not None and value > f.max)):
                found.append(f"out_of_range:{f.name}")
            if self._reject_unknown and f.allowed is not None and value is not None \
                    and value not in f.allowed:
                found.append(f"unknown_category:{f.name}")
        for name, expression in self._rules:
            used = self._rule_columns[name]
            if any(values[c] is None for c in used):
                continue
            if not bool(expression.scalar({c: values[c] for c in used})):
                found.append(f"rule:{name}")
        return "; ".join(found) if found else None

    def _reasons(self, columns: dict[str, tuple[np.ndarray, np.ndarray]],
                 unreadable: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, list[str]]:
        """Which rows fail a contract check, and for those every check they fail ("; "-joined;
        signature order, then rules). `columns`: per field (null mask, values)."""
        failures: list[tuple[str, np.ndarray]] = []
        for f in self._fields:
            null, values = columns[f.name]
            failures.append((f"wrong_type:{f.name}", unreadable[f.name]))
            if not f.nullable:
                failures.append((f"missing_required:{f.name}", null & ~unreadable[f.name]))
            if f.type in ("int", "float") and (f.min is not None or f.max is not None):
                outside = np.zeros(n, dtype=bool)
                with np.errstate(invalid="ignore"):
                    if f.min is not None:
                        outside |= values < f.min
                    if f.max is not None:
                        outside |= values > f.max
                failures.append((f"out_of_range:{f.name}", outside))
            if self._reject_unknown and f.allowed is not None:
                allowed = set(f.allowed)
                unknown = np.fromiter((v not in allowed for v in values), dtype=bool, count=n)
                failures.append((f"unknown_category:{f.name}", unknown & ~null))
        for name, expression in self._rules:
            used = self._rule_columns[name]
            judged = np.ones(n, dtype=bool)
            for c in used:
                judged &= ~columns[c][0]
            holds = np.asarray(expression({c: columns[c][1] for c in used}, n)).astype(bool)
            failures.append((f"rule:{name}", judged & ~holds))
        failures = [(label, rows) for label, rows in failures if rows.any()]
        bad = np.zeros(n, dtype=bool)
        for _, rows in failures:
            bad |= rows
        reasons = ["; ".join(label for label, rows in failures if rows[i])
                   for i in np.flatnonzero(bad)]
        return bad, reasons

    # -- predictions --
    def predict(self, frame: pd.DataFrame, engine: str = "onnx") -> pd.DataFrame:
        """Predictions for coherent rows (the `ok` rows of `check_rows`): `prediction`, and
        `probability` for classification (binary: of the positive class, and prediction =
        positive label when probability >= threshold; multiclass: of the predicted class)."""
        scores = self.scores(frame, engine)
        return pd.DataFrame(self._decide(scores), index=frame.index)

    def predict_records(self, records: list[dict]) -> list[dict]:
        """The serving fast path: ONNX predictions for coherent dict records (the `ok` output
        of `check_records`), as [{"prediction": ..., "probability": ...}]."""
        if not records:
            return []
        scores = self._run_onnx(self._columns_from_records(records), len(records))
        decided = self._decide(scores)
        keys = list(decided)
        return [dict(zip(keys, values, strict=True))
                for values in zip(*(decided[k].tolist() for k in keys), strict=True)]

    def scores(self, frame: pd.DataFrame, engine: str = "onnx") -> np.ndarray:
        """Raw model output: class probabilities [n, classes], or predicted values [n]."""
        if engine == "onnx":
            return self._run_onnx(self._columns_from_frame(frame), len(frame))
        if engine == "sklearn":
            model_input = features.model_frame(frame, self.contract, self.inference["derived"])
            if self.task == "regression":
                return np.asarray(self.pipeline.predict(model_input), dtype=np.float64)
            return np.asarray(self.pipeline.predict_proba(model_input), dtype=np.float64)
        raise ValueError(f"engine must be 'onnx' or 'sklearn', not {engine!r}")

    def _decide(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        if self.task == "regression":
            return {"prediction": np.asarray(scores, dtype=np.float64).reshape(-1)}
        labels = np.asarray(self.classes, dtype=object)
        if self.task == "binary":
            probability = scores[:, 1]
            return {"prediction": np.where(probability >= self.threshold, labels[1], labels[0]),
                    "probability": probability}
        best = scores.argmax(axis=1)
        return {"prediction": labels[best], "probability": scores[np.arange(len(best)), best]}

    def _run_onnx(self, columns: tuple[dict, dict], n: int) -> np.ndarray:
        if n == 0:
            width = len(self.classes) if self.classes else 0
            return np.zeros((0, width)) if width else np.zeros(0)
        numbers, texts = columns
        for name, expression in self._derived:
            if expression.compiled:
                numbers[name] = np.ascontiguousarray(expression(numbers, n), dtype=np.float64)
            else:
                numbers[name] = self._derive_with_pandas(name, numbers, texts)
        for name, source in self._indicators:
            numbers[name] = np.isnan(numbers[source]).astype(np.float64)
        feed = {}
        for name, kind in self._inputs:
            if kind == "number":
                feed[name] = numbers[name].reshape(n, 1)
            else:
                feed[name] = texts[name].reshape(n, 1)
        out = self._session.run([self._output], feed)[0]
        return np.asarray(out, dtype=np.float64).reshape(n) if self.task == "regression" \
            else np.asarray(out, dtype=np.float64)

    def _derive_with_pandas(self, name: str, numbers: dict, texts: dict) -> np.ndarray:
        frame = pd.DataFrame({**{k: numbers[k] for k in self._number_sources},
                              **{k: pd.array(texts[k], dtype="string") for k in texts}})
        frame = frame.replace({k: {features.MISSING: pd.NA} for k in texts})
        return features.derive(frame, {name: self.inference["derived"][name]})[name].to_numpy()

    def _columns_from_frame(self, frame: pd.DataFrame) -> tuple[dict, dict]:
        numbers = {}
        for name in self._number_sources:
            column = frame[name]
            if column.dtype == np.float64:
                numbers[name] = column.to_numpy()
            elif column.dtype.kind in "iufb" or str(column.dtype) in ("Int64", "boolean",
                                                                      "Float64"):
                numbers[name] = column.to_numpy(dtype=np.float64, na_value=np.nan)
            else:  # as features.model_frame does with anything else
                numbers[name] = pd.to_numeric(column, errors="coerce").astype("float64").to_numpy()
        texts = {}
        for name in self._text_sources:
            column = frame[name]
            if not isinstance(column.dtype, pd.StringDtype):
                column = column.astype("string")
            # Few distinct categories: one Python string per distinct value, not per row.
            codes, uniques = pd.factorize(column, use_na_sentinel=True)
            labels = np.empty(len(uniques) + 1, dtype=object)
            labels[:-1], labels[-1] = uniques.to_numpy(dtype=object), features.MISSING
            texts[name] = labels[codes]
        return numbers, texts

    def _columns_from_records(self, records: list[dict]) -> tuple[dict, dict]:
        # One array per kind, then a contiguous row per column: fewer numpy calls per request.
        numbers = np.array([[_nan_if_none(r.get(c)) for c in self._number_sources]
                            for r in records], dtype=np.float64).T.copy()
        texts = np.empty((len(records), len(self._text_sources)), dtype=object)
        texts[:] = [[_token_if_none(r.get(c)) for c in self._text_sources] for r in records]
        texts = texts.T.copy()
        return (dict(zip(self._number_sources, numbers, strict=True)),
                dict(zip(self._text_sources, texts, strict=True)))


def _nan_if_none(value):
    return np.nan if value is None else value


def _token_if_none(value):
    return features.MISSING if value is None else value


def _py(value):
    """A plain Python value for a record (None for any missing marker)."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _arrays(column, type_: str, values_needed: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A coherent column (Series or list) as (null mask, values): float64 with NaN for
    numbers, objects with None otherwise (text values only when a check reads them: turning
    Arrow strings into Python objects is the slowest step of a batch check)."""
    number = type_ in NUMBER_TYPES
    if isinstance(column, pd.Series):
        null = column.isna().to_numpy()
        if number:
            return null, column.to_numpy(dtype=np.float64, na_value=np.nan)
        if not values_needed:
            return null, None
        return null, column.to_numpy(dtype=object, na_value=None)
    null = np.fromiter((v is None for v in column), dtype=bool, count=len(column))
    if number:
        return null, np.array([np.nan if v is None else v for v in column], dtype=np.float64)
    values = np.empty(len(column), dtype=object)
    values[:] = column
    return null, values


def _coherent_value(f: _Field, value) -> tuple[object, bool | None]:
    """What make_coherent gives for one plain JSON value: (value, readable). readable is None
    when the value is not one of the plain cases handled here (check_rows decides)."""
    if value is None:
        return None, True
    kind = type(value)
    if kind is float and value != value:
        return None, True
    if kind is bool and f.type in ("int", "float"):
        return None, False  # "True" is not a number
    if f.type == "int":
        if kind is int and abs(value) < 2**53:
            return value, True
        if kind is float and abs(value) < 2**53:
            return (int(value), True) if value == round(value) else (None, False)
        return None, None
    if f.type == "float":
        if kind in (int, float) and abs(value) < 2**53:
            return float(value), True
        return None, None
    if f.type in TEXT_TYPES and kind is str:
        if value in f.verbatim:
            return value, True
        if not _SIMPLE_TEXT.match(value):
            return None, None
        text = " ".join(value.split())
        if not text:
            return None, True
        if f.type == "category" and f.canonical:
            text = f.canonical.get(spelling_key(text), text)
        return text, True
    return None, None


def coherent_columns(frame: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`cleaning.make_coherent`, run on each text column's distinct values and spread back.

    make_coherent treats every cell on its own, so the result is identical; a batch whose
    categories repeat is cleaned ~50x faster (its per-value string work dominates). The
    unreadable marks come back as plain bool columns."""
    direct = [c for c in frame.columns if frame[c].dtype.kind in "biufcmM"
              or len(frame) < 256 or c not in contract.columns]
    parts, flags = {}, {}
    if direct:
        coherent, unreadable = make_coherent(frame[direct], contract)
        parts.update(coherent.items())
        flags.update(unreadable.items())
    for name in frame.columns:
        if name in parts:
            continue
        if contract.columns[name].type == "string" and _already_tidy(frame[name]):
            parts[name] = frame[name].astype("string")
            flags[name] = pd.Series(False, index=frame.index, name=name)
            continue
        codes, uniques = pd.factorize(frame[name], use_na_sentinel=True)
        if len(uniques) == 0 or len(uniques) > len(frame) // 4:
            coherent, unreadable = make_coherent(frame[[name]], contract)
            parts[name], flags[name] = coherent[name], unreadable[name]
            continue
        distinct = pd.DataFrame({name: pd.Series(np.asarray(uniques, dtype=object),
                                                 dtype=frame[name].dtype)})
        coherent, unreadable = make_coherent(distinct, contract)
        parts[name] = pd.Series(pd.api.extensions.take(coherent[name].array, codes,
                                                       allow_fill=True),
                                index=frame.index, name=name)
        flags[name] = pd.Series(np.where(codes >= 0, unreadable[name].to_numpy(dtype=bool)
                                         [np.maximum(codes, 0)], False),
                                index=frame.index, name=name)
    columns = list(frame.columns)
    return (pd.DataFrame({c: parts[c] for c in columns}, index=frame.index),
            pd.DataFrame({c: flags[c].to_numpy(dtype=bool) for c in columns}, index=frame.index))


def _already_tidy(values: pd.Series) -> bool:
    """Whether make_coherent would leave this text column as it is: ASCII, no empty string,
    no whitespace but single inner spaces (Python's whitespace: tab to carriage return and
    \\x1c-\\x1f). Checked in Arrow, ~10x faster than tidying: ids are unique, so cleaning only
    their distinct values would not help."""
    if not (isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow"):
        return False
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.array(values.array)
    ascii_only = pc.all(pc.string_is_ascii(text)).as_py()
    untidy = pc.any(pc.match_substring_regex(
        text, r"^[ \t-\r\x1c-\x1f]|[ \t-\r\x1c-\x1f]$|  |[\t-\r\x1c-\x1f]|^$")).as_py()
    return ascii_only is not False and not untidy


# --- checks run by the package stage ----------------------------------------------------------
def edge_rows(base: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    """Synthetic rows the ONNX export must score like sklearn: unseen categories, missing
    values (also where the contract forbids them: the imputer must still agree), and numbers
    at the ends of their declared ranges. Built from the first row of `base`."""
    row = base.iloc[[0]].reset_index(drop=True)
    rows = []
    categorical = features.categorical_columns(contract)
    numeric = [c for c in contract.feature_columns if contract.columns[c].type in NUMBER_TYPES]
    for name in categorical:
        rows.append(row.assign(**{name: "__unseen_category__"}))
    rows.append(row.assign(**{c: "__unseen_category__" for c in categorical}))
    rows.append(row.assign(**{c: None for c in contract.feature_columns
                              if contract.columns[c].nullable}))
    rows.append(row.assign(**{c: None for c in numeric}))
    rows.append(row.assign(**{c: None for c in contract.feature_columns}))
    for end in ("min", "max"):
        values = {c: getattr(contract.columns[c], end) for c in numeric
                  if getattr(contract.columns[c], end) is not None}
        if values:
            rows.append(row.assign(**values))
    out = pd.concat(rows, ignore_index=True)
    for name in contract.feature_columns:
        out[name] = out[name].astype(base[name].dtype)
    return out


def compare_engines(bundle: Bundle, frame: pd.DataFrame, tolerance: float) -> dict:
    """ONNX against sklearn on the same rows. Classification: largest absolute probability
    difference, and rows whose label differs although sklearn's probability is further than
    `tolerance` from the threshold (binary) or its top two classes are further apart than
    `tolerance` (multiclass). Regression: largest difference relative to max(1, |value|)."""
    reference, fast = bundle.scores(frame, "sklearn"), bundle.scores(frame, "onnx")
    if bundle.task == "regression":
        diff = np.abs(fast - reference) / np.maximum(1.0, np.abs(reference))
        return {"rows": len(frame), "max_difference": float(diff.max(initial=0)),
                "label_mismatches": 0, "tolerance": tolerance,
                "ok": bool(diff.max(initial=0) <= tolerance)}
    diff = float(np.abs(fast - reference).max(initial=0))
    a, b = bundle._decide(reference)["prediction"], bundle._decide(fast)["prediction"]
    differ = a != b
    if bundle.task == "binary":
        near = np.abs(reference[:, 1] - bundle.threshold) <= tolerance
    else:
        top2 = np.sort(reference, axis=1)[:, -2:]
        near = (top2[:, 1] - top2[:, 0]) <= tolerance
    return {"rows": len(frame), "max_difference": diff,
            "label_mismatches": int((differ & ~near).sum()),
            "label_mismatches_near_threshold": int((differ & near).sum()),
            "tolerance": tolerance, "ok": bool(diff <= tolerance and not (differ & ~near).any())}


def compare_paths(bundle: Bundle, frame: pd.DataFrame) -> dict:
    """The serving fast path against the frame path on the same rows: `check_records` must
    accept the rows `check_rows` accepts, and `predict_records` must match `predict`."""
    ok, _ = bundle.check_rows(frame)
    records = [{k: _py(v) for k, v in row.items()} for row in frame.to_dict("records")]
    ok_records, _ = bundle.check_records(records)
    if len(ok_records) != len(ok):
        return {"rows": len(frame), "accepted": len(ok), "accepted_as_records": len(ok_records),
                "max_difference": None, "ok": False}
    expected = bundle.scores(ok, "onnx")
    got = bundle.predict_records(ok_records)
    key = "prediction" if bundle.task == "regression" else "probability"
    reference = expected if bundle.task == "regression" else bundle._decide(expected)[key]
    diff = float(np.abs(np.array([r[key] for r in got], dtype=np.float64) - reference)
                 .max(initial=0))
    return {"rows": len(frame), "accepted": len(ok), "accepted_as_records": len(ok_records),
            "max_difference": diff, "ok": diff == 0.0}


def imported_code(root: str | Path, packages: tuple[str, ...] = ("lifecycle", "stages")) -> dict:
    """{path: md5} of this project's modules loaded in this process: the code that ran."""
    import sys

    root = Path(root).resolve()
    out = {}
    for module in list(sys.modules.values()):
        name, file = getattr(module, "__name__", ""), getattr(module, "__file__", None)
        if not file or name.split(".")[0] not in packages:
            continue
        path = Path(file).resolve()
        if not path.is_relative_to(root):
            raise StageError(f"module {name} was imported from {path}, outside the project "
                             f"{root}: its hash would not describe the code DVC tracks")
        out[path.relative_to(root).as_posix()] = md5_file(path)
    return dict(sorted(out.items()))


def build_files(*, name: str, task: str, contract_text: bytes, featurizer, model,
                derived: dict[str, str], threshold: float | None, train: pd.DataFrame,
                validation: pd.DataFrame, scores: dict, split_summary: dict,
                lineage_info: dict, card: dict, opset: int, tolerance: float,
                unknown_category: str, bins: int) -> dict[str, bytes]:
    """Every bundle file but the manifest, as bytes (deterministic for identical inputs)."""
    from sklearn.pipeline import Pipeline

    contract = Contract.model_validate(yaml.safe_load(contract_text))
    pipeline = Pipeline([("features", featurizer), ("model", model)])
    inputs = model_inputs(contract, derived)
    classes = class_labels(contract, task, model)
    if task == "binary" and threshold is None:
        raise StageError("a binary model needs a decision threshold (metrics/scores.json "
                         "`threshold`, written by evaluate)")
    onnx_model = onnx_bytes(pipeline, inputs, name, opset)
    inference = {
        "name": name, "task": task, "target": contract.target.column,
        "classes": classes, "positive_class": contract.target.positive if task == "binary"
        else None, "threshold": threshold if task == "binary" else None,
        "derived": dict(derived), "missing_token": features.MISSING,
        "model_inputs": inputs, "estimator": type(model).__name__,
        "model_family": lineage_info.get("params", {}).get("train", {}).get("model"),
        "feature_names": [str(f) for f in featurizer.get_feature_names_out()],
        "unknown_category": unknown_category,
        "onnx": {"opset_import": _opsets(onnx_model), "max_opset": opset,
                 "tolerance": tolerance,
                 "inputs": "one [n, 1] tensor per model input: double numbers, string text",
                 "outputs": "probabilities [n, classes]" if task != "regression"
                 else "variable [n, 1]"},
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
    return {
        "model.skops": features.dumps(pipeline),
        "model.onnx": onnx_model,
        "contract.yaml": contract_text,
        "inference.json": canonical_json(inference),
        "signature.json": canonical_json(sig),
        "reference_stats.json": canonical_json(stats),
        "model_card.md": card_text.encode(),
    }


def _opsets(model: bytes) -> dict[str, int]:
    import onnx

    return {o.domain or "ai.onnx": o.version for o in onnx.load_from_string(model).opset_import}


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
