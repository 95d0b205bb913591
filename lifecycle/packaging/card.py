"""model_card.md: intended use, data, metrics with intervals, params, limitations, ethics."""

from __future__ import annotations

import yaml

from lifecycle.contract import Contract


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
    train = lineage_info.get("params", {}).get("train", {})
    family = train.get("model")
    chosen = f" (`train.model: {family}`)" if family else ""
    if train.get("mode") == "online":
        chosen += (": the online learner's weights (checkpoint `train.online`, learned over "
                   "the featurizer of the champion `train.champion`), converted exactly; "
                   "nothing fitted by train (its metrics/train.json: events, parity)")
    lines += [
        f"- Estimator: {inference['estimator']}{chosen}, over "
        f"{len(inference['feature_names'])} model features built from "
        f"{len(contract.feature_columns)} input columns.",
        f"- Inputs: `signature.json` (id `{contract.id}` for logging and sticky routing only, "
        "never a feature); rows are cleaned with the contract's rules (`contract.yaml`).",
        (f"- Files: `model.skops` (the sklearn Pipeline, the reference) and `model.onnx` (the "
         f"serving fast path, opsets {inference['onnx']['opset_import']}, double precision); "
         f"package checked that they agree within "
         f"{tolerance:g} on the validation split and synthetic edge rows."
         if inference.get("engine", "onnx") == "onnx" else
         f"- Files: `model.skops` only (no ONNX: {inference['onnx']['unavailable']})."), "",
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
    """task, split, featurize and train params, train trimmed to the chosen family's section
    (and to mode, champion and incremental when the model continued a champion; to mode,
    champion and the checkpoint when it is the online learner, which train fitted nothing of)."""
    shown = {k: params[k] for k in ("task", "split", "featurize") if k in params}
    train = params.get("train")
    if isinstance(train, dict):
        family, mode = train.get("model"), train.get("mode", "full")
        if mode == "online":
            shown["train"] = {k: train.get(k) for k in ("mode", "champion", "online", "model")}
            return shown
        continued = mode == "incremental"
        shown["train"] = {k: v for k, v in train.items()
                          if (not isinstance(v, dict) or k == family
                              or (k == "search" and v.get("method", "none") != "none")
                              or (k == "incremental" and continued))
                          and (continued or k not in ("mode", "champion")) and k != "online"}
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
