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



def opsets(model: bytes) -> dict[str, int]:
    """{domain: version} the exported model imports (ai.onnx for the default domain)."""
    import onnx

    return {o.domain or "ai.onnx": o.version for o in onnx.load_from_string(model).opset_import}
