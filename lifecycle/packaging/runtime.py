"""The runtime bundle: what batch scoring and the API load (`load_bundle`) and call.

Serving: `check_records` + `predict_records` (plain dict records, ~0.1 ms a row); batch:
`check_rows` + `predict` (DataFrames, chunks of ~100k rows). The ONNX session is the fast path;
the skops Pipeline (`Bundle.pipeline`, loaded on first use) is the reference engine.

Row checks (`Bundle.check_rows`, `Bundle.check_records`) apply the contract to the signature
fields (the id and the feature columns): a row is rejected, with its reasons, for a missing
required field, a value that cannot be read as the declared type, a number outside its declared
range, or a broken cross-field rule. Categories outside the contract's `allowed` list are
accepted by default (`package.unknown_category`): the encoder ignores unseen categories, and
drift monitoring sees them against `reference_stats.json`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lifecycle import features, models, persistence
from lifecycle.contract import Contract
from lifecycle.names import safe
from lifecycle.packaging.expressions import Expression
from lifecycle.packaging.rows import (
    NUMBER_TYPES,
    Field,
    arrays,
    coherent_columns,
    coherent_value,
    plain_value,
)
from lifecycle.packaging.store import MANIFEST, BundleError, verified_files


def load_bundle(path: str | Path, threads: int | None = None) -> Bundle:
    """Open a bundle after checking every file against its manifest.

    Raises BundleError naming the file when a file is missing, unexpected, or differs from the
    sha256 its manifest records. `threads` caps ONNX runtime's intra-op threads (None: all
    cores; 1 gives the lowest single-row latency when requests run in parallel)."""
    path = Path(path)
    return Bundle(path, verified_files(path), threads)


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
        # the estimator's engine: "onnx", or "sklearn" when it has no ONNX converter
        self.engine: str = self.inference.get("engine", "onnx")
        if self.engine == "onnx" and "model.onnx" not in files:
            raise BundleError(f"{path}: inference.json says engine onnx but there is no "
                              "model.onnx")
        self._session = self._onnx_session(threads) if self.engine == "onnx" else None

    def file(self, name: str) -> bytes:
        """The verified bytes of one bundle file (any file its manifest lists)."""
        if name not in self._files:
            raise BundleError(f"{self.path}: the bundle has no {name} (files: "
                              f"{', '.join(sorted(self._files))}); package it again")
        return self._files[name]

    @property
    def reference_stats(self) -> dict:
        return json.loads(self._files["reference_stats.json"])

    @property
    def model_card(self) -> str:
        return self._files["model_card.md"].decode()

    # -- set-up --
    def _plan(self) -> None:
        contract, derived = self.contract, self.inference["derived"]
        self._fields = [Field(f["name"], f["type"], f["nullable"], f.get("allowed"),
                               f.get("min"), f.get("max")) for f in self.signature["fields"]]
        self._number_sources = [c for c in contract.feature_columns
                                if contract.columns[c].type in NUMBER_TYPES]
        self._text_sources = features.categorical_sources(contract)
        # model input (a safe name, lifecycle/names.py) -> the column it is read from
        self._source = {safe(c): c for c in [*self._number_sources, *self._text_sources]}
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
                    self._sklearn = persistence.loads(
                        self._files["model.skops"],
                        models.trusted_prefixes(self.inference.get("model_family")))
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
        columns = {f.name: arrays(coherent[f.name], f.type, f.name in self._value_columns)
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
                value, readable = coherent_value(f, record.get(f.name))
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
                                 **{f.name: plain_value(row[f.name]) for f in self._fields}}
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
        return pd.DataFrame(self.decide(scores), index=frame.index)

    def predict_records(self, records: list[dict]) -> list[dict]:
        """The serving fast path: ONNX predictions for coherent dict records (the `ok` output
        of `check_records`), as [{"prediction": ..., "probability": ...}]. A bundle without
        ONNX (`engine` sklearn) answers with its sklearn Pipeline."""
        if not records:
            return []
        scores = self._record_scores(records)
        decided = self.decide(scores)
        keys = list(decided)
        return [dict(zip(keys, values, strict=True))
                for values in zip(*(decided[k].tolist() for k in keys), strict=True)]

    def reasons(self, records: list[dict], top: int = 3) -> list[dict]:
        """Reason codes: for each coherent record (the `ok` output of `check_records`), its
        `top` input columns by how much the answer moves when that column alone is set to its
        typical training value (mean of a number, most frequent category, from
        reference_stats.json): `contribution` = score - score without it, in the units of
        `units` (the positive class's probability, the predicted class's, or the predicted
        value). Model-agnostic (any family, ONNX or sklearn); one scoring call for all."""
        if not records:
            return []
        typical = self._typical_values()
        columns = [c for c in self.contract.feature_columns if c in typical]
        variants = []
        for record in records:
            variants.append(record)
            variants += [{**record, c: typical[c]} for c in columns]
        raw = self._record_scores(variants)
        width = len(columns) + 1
        units = {"binary": f"probability of {self.classes[1] if self.classes else 'positive'}",
                 "multiclass": "probability of the predicted class",
                 "regression": "predicted value"}[self.task]
        out = []
        for i, record in enumerate(records):
            group = raw[i * width:(i + 1) * width]
            if self.task == "regression":
                values = group
            elif self.task == "binary":
                values = group[:, 1]
            else:  # the predicted class's probability, in every variant
                values = group[:, int(np.argmax(group[0]))]
            drop = values[0] - values[1:]
            order = np.argsort(-np.abs(drop), kind="stable")[:top]
            out.append({"method": "occlusion", "units": units, "baseline": "training typical",
                        "top": [{"feature": columns[j], "value": plain_value(record.get(
                            columns[j])), "contribution": float(drop[j])} for j in order]})
        return out

    def _record_scores(self, records: list[dict]) -> np.ndarray:
        """Raw scores for coherent records: ONNX from the records, else the sklearn Pipeline."""
        if self._session is None:
            return self.scores(pd.DataFrame.from_records(records), "sklearn")
        return self._run_onnx(self._columns_from_records(records), len(records))

    def _typical_values(self) -> dict:
        if getattr(self, "_typical", None) is None:
            stats = self.reference_stats["features"]
            typical = {}
            for name, profile in stats.items():
                if profile.get("type") == "number" and profile.get("mean") is not None:
                    spec = self.contract.columns[name]
                    mean = profile["mean"]
                    typical[name] = round(mean) if spec.type in ("int", "bool") else mean
                elif profile.get("type") == "category" and profile.get("counts"):
                    typical[name] = next(iter(profile["counts"]))
            self._typical = typical
        return self._typical

    def scores(self, frame: pd.DataFrame, engine: str = "onnx") -> np.ndarray:
        """Raw model output: class probabilities [n, classes], or predicted values [n]."""
        if engine == "onnx" and self._session is not None:
            return self._run_onnx(self._columns_from_frame(frame), len(frame))
        if engine in ("sklearn", "onnx"):  # onnx: a bundle without it answers with sklearn
            model_input = features.model_frame(frame, self.contract, self.inference["derived"])
            if self.task == "regression":
                return np.asarray(self.pipeline.predict(model_input), dtype=np.float64)
            return np.asarray(self.pipeline.predict_proba(model_input), dtype=np.float64)
        raise ValueError(f"engine must be 'onnx' or 'sklearn', not {engine!r}")

    def decide(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        """`prediction` (and `probability` for classification) from raw `scores`."""
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
                feed[name] = numbers[self._source.get(name, name)].reshape(n, 1)
            else:
                feed[name] = texts[self._source.get(name, name)].reshape(n, 1)
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


