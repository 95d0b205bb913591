"""Derived features and contract rules as expressions, evaluated without pandas' overhead.

The bundle evaluates `featurize.derived` and the contract's cross-field rules with these; the
frame path (`features.derive`, pandas `eval`) is the reference, and the package stage's parity
checks (`parity.compare_engines`, `parity.compare_paths`) hold the two to the same values."""

from __future__ import annotations

import ast
import re

import numpy as np
import pandas as pd

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

