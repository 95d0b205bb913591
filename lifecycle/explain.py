"""Why the model predicts what it does, in terms of its input columns (not one-hot columns).

- Global: permutation importance of each model-frame column, pushed through the whole
  featurizer + model pipeline (how much the score drops when that column is shuffled).
- SHAP where it is exact and cheap: linear models in closed form (coef * (x - mean) in feature
  space, against the explained rows' mean: no dependency), tree models with shap's TreeExplainer
  when the optional `shap` package is installed. Contributions of a column's one-hot features are
  summed (SHAP values add up), so every contribution names an input column.
- Local: the top contributions for a few sample rows, with the prediction; models without exact
  SHAP (e.g. the MLP) get occlusion instead: the change in prediction when one column is set to
  its typical value. With `explain.lime`, each of those rows also gets LIME's explanation
  (lime.lime_tabular over the input columns, any model family). Ids are masked; personal-data
  columns are never model inputs.

Pure functions; `stages/explain.py` does the reading and writing.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd

SCORING = {"binary": "roc_auc", "multiclass": "neg_log_loss",
           "regression": "neg_root_mean_squared_error"}
LOGIT_UNITS = {"binary": "log-odds", "multiclass": "logit (before softmax)"}
# The `top` largest weights of one weighted ridge fit per explained row. (LIME's default for up
# to 6 features is forward selection: about columns x top ridge fits per row, most of the cost.)
LIME_SELECTION = "highest_weights"
TREE_MODELS = ("DecisionTree", "ExtraTree", "RandomForest", "ExtraTrees", "GradientBoosting",
               "HistGradientBoosting")


# --- tracing featurizer outputs back to input columns -----------------------------------------
def input_groups(featurizer, columns: list[str]) -> list[np.ndarray] | None:
    """For each input column, the featurizer outputs built from it, read from the output names
    (`<step>__<column>` or `<step>__<column>_<category>`). None when an output cannot be traced.
    An input with no output (dropped by feature selection) gets an empty group."""
    transformer = _column_transformer(featurizer)
    if transformer is None:
        return None
    sources = {}
    for name, _, cols in transformer.transformers_:
        picked = [cols] if isinstance(cols, str) else list(np.atleast_1d(cols))
        sources[name] = [transformer.feature_names_in_[c] if isinstance(c, int | np.integer)
                         else str(c) for c in picked]
    groups: dict[str, list[int]] = {c: [] for c in columns}
    for j, out in enumerate(featurizer.get_feature_names_out()):
        step, sep, rest = str(out).partition("__")
        candidates, rest = (sources[step], rest) if sep and step in sources else (columns, out)
        source = rest if rest in candidates else max(
            (c for c in candidates if rest.startswith(f"{c}_")), key=len, default=None)
        if source not in groups:
            return None
        groups[source].append(j)
    return [np.array(groups[c], dtype=int) for c in columns]


def _column_transformer(featurizer):
    from sklearn.compose import ColumnTransformer

    if isinstance(featurizer, ColumnTransformer):
        return featurizer
    steps = getattr(featurizer, "steps", [])
    return next((s for _, s in steps if isinstance(s, ColumnTransformer)), None)


def separable(featurizer, frame: pd.DataFrame, transformed: np.ndarray,
              groups: list[np.ndarray], seed: int) -> bool:
    """Does each output depend on its own input column only? Checked on the data: shuffle every
    column independently, transform once, and compare each group with its shuffled original.
    When true, shuffling a column equals shuffling its group's rows in feature space."""
    covered = np.sort(np.concatenate(groups)) if groups else np.array([], dtype=int)
    if not np.array_equal(covered, np.arange(transformed.shape[1])):
        return False
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(len(frame)) for _ in frame.columns]
    shuffled = frame.copy()
    for column, perm in zip(frame.columns, perms, strict=True):
        shuffled[column] = frame[column].iloc[perm].set_axis(frame.index)
    out = np.asarray(featurizer.transform(shuffled), dtype=float)
    return all(np.allclose(out[:, g], transformed[perm][:, g], equal_nan=True)
               for g, perm in zip(groups, perms, strict=True) if len(g))


# --- global: permutation importance ------------------------------------------------------------
def permutation_importance(featurizer, model, frame: pd.DataFrame, y: np.ndarray, task: str,
                           n_repeats: int, seed: int) -> dict:
    """Score drop when each input column is shuffled (mean and std over `n_repeats` seeded
    shuffles). Fast path: transform once, shuffle each column's block of features, and predict
    all of a column's shuffles in one call; used only when `separable` confirms it is the same
    thing. Otherwise sklearn's permutation_importance over the whole pipeline."""
    columns = list(frame.columns)
    transformed = np.asarray(featurizer.transform(frame), dtype=float)
    groups = input_groups(featurizer, columns)
    if groups is not None and separable(featurizer, frame, transformed, groups, seed):
        method = "feature_blocks"
        n = len(frame)
        predict, score = _predict_and_score(model, task, y)
        baseline = score(predict(transformed))
        rng = np.random.default_rng(seed)
        drops = np.zeros((len(columns), n_repeats))
        per_call = max(1, min(n_repeats, 20_000_000 // max(transformed.size, 1)))  # memory bound
        for j, group in enumerate(groups):
            if not len(group):
                continue  # not used by the model: shuffling it changes nothing
            for first in range(0, n_repeats, per_call):
                repeats = range(first, min(first + per_call, n_repeats))
                stacked = np.tile(transformed, (len(repeats), 1))
                for k in range(len(repeats)):
                    stacked[k * n:(k + 1) * n, group] = transformed[
                        np.ix_(rng.permutation(n), group)]
                out = predict(stacked)
                for k, r in enumerate(repeats):
                    drops[j, r] = baseline - score(out[k * n:(k + 1) * n])
    else:
        from sklearn.inspection import permutation_importance as sklearn_importance
        from sklearn.metrics import get_scorer
        from sklearn.pipeline import Pipeline

        method = "pipeline"
        pipeline = Pipeline([("features", featurizer), ("model", model)])
        baseline = get_scorer(SCORING[task])(pipeline, frame, y)
        drops = sklearn_importance(pipeline, frame, y, scoring=SCORING[task],
                                   n_repeats=n_repeats, random_state=seed).importances
    order = np.argsort(-drops.mean(axis=1), kind="stable")
    return {"scoring": SCORING[task], "baseline_score": float(baseline), "n_repeats": n_repeats,
            "rows": len(frame), "method": method,
            "mean": {columns[j]: float(drops[j].mean()) for j in order},
            "std": {columns[j]: float(drops[j].std()) for j in order}}


def _predict_and_score(model, task: str, y: np.ndarray):
    """predict(feature matrix) -> model output; score(output for the rows of y) -> the SCORING
    metric, higher is better, as sklearn's scorer of that name gives it."""
    from sklearn import metrics

    names = getattr(model, "feature_names_in_", None)  # fitted on a DataFrame: keep its names

    def predict(matrix: np.ndarray) -> np.ndarray:
        X = matrix if names is None else pd.DataFrame(matrix, columns=names)
        return model.predict(X) if task == "regression" else model.predict_proba(X)

    def score(out: np.ndarray) -> float:
        if task == "binary":
            return metrics.roc_auc_score(y, out[:, list(model.classes_).index(1)])
        if task == "multiclass":
            return -metrics.log_loss(y, out, labels=model.classes_)
        return -metrics.root_mean_squared_error(y, out)

    return predict, score


# --- SHAP ------------------------------------------------------------------------------------
def shap_installed() -> bool:
    return importlib.util.find_spec("shap") is not None


def shap_method(model, shap_available: bool, traits=frozenset()) -> str | None:
    """linear (closed form) | tree (shap's TreeExplainer, if installed) | None (no exact SHAP).
    `traits`: the model family's (lifecycle/models.py); sklearn's own classes are recognised
    without them."""
    linear = "linear" in traits or type(model).__module__.startswith("sklearn.linear_model")
    if linear and hasattr(model, "coef_"):
        return "linear"
    if shap_available and ("tree" in traits or type(model).__name__.startswith(TREE_MODELS)):
        return "tree"
    return None


def shap_values(model, matrix: np.ndarray, background: np.ndarray, task: str,
                method: str, traits=frozenset()) -> tuple[np.ndarray, np.ndarray, str]:
    """SHAP values in feature space, shape (rows, features, outputs), the base value per output
    and their units. Outputs: the positive class (binary), every class (multiclass), the
    prediction (regression)."""
    if method == "linear":
        coef = np.atleast_2d(model.coef_)                       # (outputs, features)
        mean = background.mean(axis=0)
        values = (matrix - mean)[:, :, None] * coef.T[None, :, :]
        base = mean @ coef.T + np.atleast_1d(model.intercept_)
        return values, base, LOGIT_UNITS.get(task, "target")
    import shap

    explainer = shap.TreeExplainer(model)
    raw = explainer.shap_values(matrix)
    values = np.stack(raw, axis=-1) if isinstance(raw, list) else np.asarray(raw)
    if values.ndim == 2:
        values = values[:, :, None]
    base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=float))
    if task == "binary" and values.shape[2] == 2:  # one column per class: keep the positive one
        positive = list(model.classes_).index(1)
        values, base = values[:, :, [positive]], base[[positive]]
    if task == "regression":
        return values, base, "target"
    boosted = "boosted" in traits or type(model).__name__.startswith(
        ("GradientBoosting", "HistGradientBoosting"))
    return values, base, LOGIT_UNITS[task] if boosted else "probability"


def by_column(values: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Sum feature-space contributions per input column (rows, columns, outputs)."""
    return np.stack([values[:, g, :].sum(axis=1) for g in groups], axis=1)


# --- local explanations ------------------------------------------------------------------------
def occlusion(predict_output, frame: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """For each row and input column: prediction minus the prediction with that column set to
    its typical value in `frame` (median, or most frequent category). Model-agnostic, one
    batched prediction; not additive like SHAP."""
    typical = {c: (frame[c].median() if pd.api.types.is_numeric_dtype(frame[c])
                   else frame[c].mode(dropna=False).iloc[0]) for c in frame.columns}
    variants = [rows]
    for column in frame.columns:
        variants.append(rows.assign(**{column: typical[column]}).astype(rows.dtypes))
    outputs = predict_output(pd.concat(variants, ignore_index=True))
    outputs = outputs.reshape(len(frame.columns) + 1, len(rows))
    return (outputs[0][None, :] - outputs[1:]).T                  # (rows, columns)


def explain(featurizer, model, frame: pd.DataFrame, y: np.ndarray, ids: list, task: str, p,
            names: dict, shap_available: bool, traits=frozenset()) -> dict:
    """explain.json: permutation importance, mean |SHAP| per input column where SHAP is exact,
    and local explanations for `p.samples` seeded validation rows. `p`: the explain params."""
    from sklearn.pipeline import Pipeline

    pipeline = Pipeline([("features", featurizer), ("model", model)])
    columns = list(frame.columns)
    importance = permutation_importance(featurizer, model, frame, y, task, p.n_repeats, p.seed)
    rng = np.random.default_rng(p.seed)
    picked = np.sort(rng.choice(len(frame), size=min(p.samples, len(frame)), replace=False))
    sample = frame.iloc[picked]
    classes = list(getattr(model, "classes_", []))

    if task == "regression":
        predicted = pipeline.predict(sample).astype(float)
        chosen_output = np.zeros(len(sample), dtype=int)
    else:
        proba = pipeline.predict_proba(sample)
        chosen_output = (np.zeros(len(sample), dtype=int) if task == "binary"
                         else proba.argmax(axis=1))
        positive = classes.index(1) if task == "binary" else None

    method = shap_method(model, shap_available, traits)
    groups = input_groups(featurizer, columns) if method else None
    result = {"task": task, "model": type(model).__name__, "rows": len(frame),
              "importance": importance["mean"], "importance_std": importance["std"],
              "permutation": {k: importance[k]
                              for k in ("scoring", "baseline_score", "n_repeats", "method")}}
    if method and groups is not None:
        matrix = np.asarray(featurizer.transform(frame), dtype=float)
        shown = np.sort(rng.choice(len(frame), size=min(p.shap_rows, len(frame)), replace=False))
        values, base, units = shap_values(model, matrix[shown], matrix, task, method, traits)
        mean_abs = np.abs(by_column(values, groups)).mean(axis=(0, 2))
        order = np.argsort(-mean_abs, kind="stable")
        result["shap"] = {"method": method, "units": units, "rows": len(shown),
                          "mean_abs": {columns[j]: float(mean_abs[j]) for j in order}}
        values, base, _ = shap_values(model, matrix[picked], matrix, task, method, traits)
        contributions = by_column(values, groups)[np.arange(len(sample)), :, chosen_output]
        local_base = base[chosen_output]
        local_method = f"shap_{method}"
    else:
        if method is not None:
            reason = "featurizer outputs cannot be traced to input columns"
        elif shap_method(model, True, traits) == "tree":
            reason = "TreeSHAP needs the optional `shap` package: pip install 'lifecycle[shap]'"
        else:
            reason = f"no exact, fast SHAP for {type(model).__name__}"
        result["shap"] = {"method": None, "reason": reason}

        def predict_output(rows: pd.DataFrame) -> np.ndarray:
            if task == "regression":
                return pipeline.predict(rows).astype(float)
            out = pipeline.predict_proba(rows)
            column = (np.full(len(rows), positive) if task == "binary"
                      else np.tile(chosen_output, len(rows) // len(sample)))
            return out[np.arange(len(rows)), column]

        contributions = occlusion(predict_output, frame, sample) if len(sample) else \
            np.zeros((0, len(columns)))
        local_base, units = None, "target" if task == "regression" else "probability"
        local_method = "occlusion"

    samples = []
    for i in range(len(sample)):
        row = sample.iloc[i]
        top = np.argsort(-np.abs(contributions[i]), kind="stable")[:p.top_features]
        entry = {"customer": ids[picked[i]], "actual": _shown(y[picked[i]], names)}
        if task == "regression":
            entry["prediction"] = float(predicted[i])
        elif task == "binary":
            entry["probability"] = float(proba[i, positive])
        else:
            entry["prediction"] = _shown(classes[chosen_output[i]], names)
            entry["probability"] = float(proba[i, chosen_output[i]])
        if local_base is not None:
            entry["base_value"] = float(local_base[i])
            entry["output"] = float(local_base[i] + contributions[i].sum())
        entry["top_features"] = [{"feature": columns[j], "value": _value(row[columns[j]]),
                                  "contribution": float(contributions[i, j])} for j in top]
        entry["other_features"] = float(np.delete(contributions[i], top).sum())
        samples.append(entry)
    if getattr(p, "lime", False) and len(sample):
        if lime_installed():
            positive_output = np.full(len(sample), positive) if task == "binary" else chosen_output
            found = lime_explanations(pipeline, frame, sample, task, positive_output,
                                      p.top_features, p.lime_samples, p.seed)
            for entry, lime in zip(samples, found, strict=True):
                entry["lime"] = lime
            result["lime"] = {"method": "lime_tabular", "samples": p.lime_samples,
                              "feature_selection": LIME_SELECTION,
                              "units": units if task == "regression" else "probability"}
        else:
            result["lime"] = {"method": None, "reason": "LIME needs the `lime` package: "
                              "pip install 'lifecycle[lime]'"}
    result["local"] = {"method": local_method, "units": units,
                       "explains": {"binary": f"the {names.get(1, 1)} class",
                                    "multiclass": "the predicted class",
                                    "regression": "the prediction"}[task],
                       "samples": samples}
    return result


# --- LIME ----------------------------------------------------------------------------------------
def lime_installed() -> bool:
    return importlib.util.find_spec("lime") is not None


def lime_explanations(pipeline, frame: pd.DataFrame, sample: pd.DataFrame, task: str,
                     outputs: np.ndarray, top: int, samples: int, seed: int) -> list[dict]:
    """LIME (lime.lime_tabular) for each row of `sample`, over the input columns: a weighted
    linear model fitted to `samples` perturbations of the row, scored by the whole pipeline.
    Categories are perturbed among those seen in `frame`; numbers by LIME's quartile bins of
    `frame` (a missing number is explained at the column's median). `outputs`: per row, the
    class explained (binary: the positive class; multiclass: the predicted one)."""
    from lime.lime_tabular import LimeTabularExplainer

    columns = list(frame.columns)
    text = [j for j, c in enumerate(columns) if not pd.api.types.is_numeric_dtype(frame[c])]
    levels = {j: sorted(frame[columns[j]].astype(str).unique()) for j in text}

    def encode(rows: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(rows), len(columns)), dtype=np.float64)
        for j, c in enumerate(columns):
            if j in levels:
                index = {v: k for k, v in enumerate(levels[j])}
                out[:, j] = [index.get(str(v), 0) for v in rows[c]]
            else:
                values = pd.to_numeric(rows[c], errors="coerce").to_numpy(dtype=np.float64)
                out[:, j] = np.where(np.isnan(values), medians[j], values)
        return out

    medians = {j: float(np.nanmedian(pd.to_numeric(frame[c], errors="coerce")))
               if j not in levels else 0.0 for j, c in enumerate(columns)}

    def decode(matrix: np.ndarray) -> pd.DataFrame:
        data = {}
        for j, c in enumerate(columns):
            if j in levels:
                data[c] = pd.Series(np.asarray(levels[j], dtype=object)[
                    np.clip(np.round(matrix[:, j]).astype(int), 0, len(levels[j]) - 1)],
                    dtype=object)
            else:
                data[c] = matrix[:, j]
        return pd.DataFrame(data, columns=columns)

    def predict(matrix: np.ndarray) -> np.ndarray:
        rows = decode(matrix)
        return (pipeline.predict(rows).astype(float) if task == "regression"
                else pipeline.predict_proba(rows))

    explainer = LimeTabularExplainer(
        encode(frame), mode="regression" if task == "regression" else "classification",
        feature_names=columns, categorical_features=text,
        categorical_names={j: levels[j] for j in text}, discretize_continuous=True,
        feature_selection=LIME_SELECTION, random_state=seed)
    out = []
    for i in range(len(sample)):
        label = int(outputs[i])
        found = explainer.explain_instance(
            encode(sample.iloc[[i]])[0], predict, num_features=top, num_samples=samples,
            labels=(label,) if task != "regression" else (1,))
        key = label if task != "regression" else 1
        weights = found.as_map()[key]
        said = dict(found.as_list(label=key))
        out.append({"intercept": float(np.atleast_1d(found.intercept[key])[0]),
                    "score": float(found.score),
                    "top_features": [{"feature": columns[j], "condition": cond,
                                      "weight": float(w)}
                                     for (j, w), cond in zip(weights, said, strict=True)]})
    return out


def plot_data(result: dict) -> dict[str, list[dict]]:
    """The rows behind explain's DVC plots: permutation importance and mean |SHAP| per input
    column (none without SHAP), and each explained row's top contributions, one bar each."""
    def bars(values: dict) -> list[dict]:
        return [{"feature": k, "importance": round(v, 6)} for k, v in values.items()]

    local = [{"contribution": round(f["contribution"], 6),
              "feature": f"{s['customer']}: {f['feature']} = {_label(f['value'])}"}
             for s in result["local"]["samples"] for f in s["top_features"]]
    return {"importance": bars(result["importance"]),
            "shap": bars(result["shap"].get("mean_abs", {})), "local": local}


def _label(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _shown(value, names: dict):
    value = value.item() if hasattr(value, "item") else value
    return names.get(value, value)


def _value(value):
    """An input value as JSON: numbers as floats, missing as None, text as is."""
    if isinstance(value, int | float | np.integer | np.floating):
        return None if pd.isna(value) else float(value)
    return None if value is None else str(value)
