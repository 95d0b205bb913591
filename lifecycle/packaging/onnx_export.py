"""The fitted Pipeline in ONNX, double precision end to end (the serving fast path).

The skops Pipeline is the reference: `parity.compare_engines` checks the two agree."""

from __future__ import annotations

import threading

import numpy as np

ML_OPSET = 3  # ai.onnx.ml 3: tree ensembles with double thresholds (`*_as_tensor`)


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
                    "SklearnExtraTreeClassifier", "SklearnExtraTreeRegressor",
                    "SklearnRandomForestClassifier", "SklearnRandomForestRegressor",
                    "SklearnExtraTreesClassifier", "SklearnExtraTreesRegressor",
                    "SklearnGradientBoostingClassifier", "SklearnGradientBoostingRegressor",
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


def _double_trees(convert, op_version: int | None = 3, float32_inputs: bool = False):
    """A tree converter that, for double inputs, writes double thresholds (see above), or
    with `float32_inputs` casts the features to float32 right before the trees."""
    from onnx import TensorProto
    from skl2onnx.common.data_types import guess_proto_type

    def converter(scope, operator, container):
        estimator = operator.raw_operator
        if getattr(estimator, "get_booster", None) and estimator.get_booster().feature_names:
            import copy  # onnxmltools reads XGBoost splits by position (f0, f1, ...)

            estimator = copy.deepcopy(estimator)
            estimator.get_booster().feature_names = None
            operator.raw_operator = estimator
        if guess_proto_type(operator.inputs[0].type) != TensorProto.DOUBLE:
            return convert(scope, operator, container)
        wrapped = _DoubleTreeContainer(container, scope, operator, float32_inputs)
        if op_version is None:
            return convert(scope, operator, wrapped)
        return convert(scope, operator, wrapped, op_version=op_version)

    return converter


_third_party_lock = threading.Lock()


def export(pipeline, inputs: list[dict], name: str, opset: int, onnx_spec) -> tuple[
        bytes | None, str | None]:
    """(`onnx_bytes` of the pipeline, None), or (None, why not) when its estimator has no ONNX
    converter (`onnx_spec` None: the family says so; or skl2onnx knows none for it)."""
    estimator = pipeline.steps[-1][1]
    kind = f"{type(estimator).__module__}.{type(estimator).__name__}"
    if onnx_spec is None:
        return None, f"the model family declares no ONNX converter for {kind}"
    if onnx_spec.converter != "skl2onnx":
        _register_third_party(type(estimator), onnx_spec)
    try:
        model = onnx_bytes(pipeline, inputs, name, opset)
    except RuntimeError as exc:
        if "Unable to find a shape calculator" not in str(exc) \
                and "No proper shape calculator" not in str(exc):
            raise
        return None, f"skl2onnx has no converter for {kind}"
    import onnxruntime as ort

    try:  # a converter may emit operators onnxruntime's CPU build does not have
        ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any refusal means: no ONNX for this model
        return None, f"onnxruntime cannot run the export of {kind} ({str(exc)[:120]})"
    return model, None


def _register_third_party(cls: type, onnx_spec) -> None:
    """Register an onnxmltools converter (`module:function`) for `cls` with skl2onnx, wrapped
    like skl2onnx's own tree converters so numbers stay double."""
    import importlib

    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from sklearn.base import is_classifier

    module, _, function = onnx_spec.converter.partition(":")
    convert = getattr(importlib.import_module(module), function)
    with _third_party_lock:
        if is_classifier(cls()):
            update_registered_converter(
                cls, f"Lifecycle{cls.__name__}", calculate_linear_classifier_output_shapes,
                _double_trees(convert, None, onnx_spec.float32_inputs),
                options={"nocl": [True, False], "zipmap": [True, False, "columns"]})
        else:
            update_registered_converter(
                cls, f"Lifecycle{cls.__name__}", calculate_linear_regressor_output_shapes,
                _double_trees(convert, None, onnx_spec.float32_inputs))


class _DoubleTreeContainer:
    """Passes nodes on to skl2onnx's container, tree ensembles with double tensors."""

    def __init__(self, container, scope, operator, float32_inputs: bool = False):
        self._container, self._scope = container, scope
        self._declared = {v.full_name: v.type for v in operator.outputs}
        self._float32_inputs = float32_inputs

    def __getattr__(self, name):
        return getattr(self._container, name)

    def add_node(self, op_type, inputs, outputs, op_domain="", op_version=None, **attrs):
        if op_type not in ("TreeEnsembleClassifier", "TreeEnsembleRegressor"):
            return self._container.add_node(op_type, inputs, outputs, op_domain=op_domain,
                                            op_version=op_version, **attrs)
        from onnx import TensorProto
        from onnx.numpy_helper import from_array
        from skl2onnx.common.data_types import guess_proto_type

        inputs = list(inputs) if isinstance(inputs, list | tuple) else [inputs]
        if self._float32_inputs:  # compare float32 features, as the estimator itself does
            cast = self._scope.get_unique_variable_name("float32_features")
            self._container.add_node("Cast", [inputs[0]], [cast], to=TensorProto.FLOAT,
                                     name=self._scope.get_unique_operator_name("Cast"))
            inputs[0] = cast
        for key in _TREE_TENSORS:
            value = attrs.get(key)
            if self._float32_inputs:
                continue
            if isinstance(value, list) and value and all(isinstance(v, float | int)
                                                         for v in value):
                value = attrs[key] = np.asarray(value, dtype=np.float64)  # onnxmltools: lists
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



def opsets(model: bytes) -> dict[str, int]:
    """{domain: version} the exported model imports (ai.onnx for the default domain)."""
    import onnx

    return {o.domain or "ai.onnx": o.version for o in onnx.load_from_string(model).opset_import}
