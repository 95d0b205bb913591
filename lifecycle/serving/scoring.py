"""A loaded bundle as the API and the router use it: check records, score them, describe it.

The work is the bundle's own (`inputs.InputCheck` then `Bundle.check_records`,
`Bundle.predict_records`: the same checks as batch scoring and the ONNX feed built from records
with numpy, no pandas per request), so real-time and batch answers cannot drift apart.
`engine="sklearn"` scores with the bundle's sklearn Pipeline instead (the fallback; tens of ms
per request).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from lifecycle.serving.inputs import InputCheck

log = logging.getLogger("lifecycle.serving")


class Scorer:
    """One verified bundle and the engine it answers with."""

    def __init__(self, bundle, engine: str = "onnx"):
        if engine not in ("onnx", "sklearn"):
            raise ValueError(f"engine must be onnx or sklearn, not {engine!r}")
        self.bundle = bundle
        # a bundle whose model has no ONNX converter answers with its sklearn Pipeline
        self.engine = engine if getattr(bundle, "engine", "onnx") == "onnx" else "sklearn"
        self.path = Path(bundle.path)
        self.version: str = bundle.version
        self.contract = bundle.contract
        self.signature: dict = bundle.signature
        self.inference: dict = bundle.inference
        self.task: str = bundle.task
        self.labels: list = list(bundle.classes or [])
        # the data and code hashes behind the bundle (the full lineage is in its manifest)
        self.lineage = bundle.manifest.get("lineage", {}).get("package", {}).get("inputs")
        self.inputs = InputCheck(bundle)

    def check(self, records: list[dict]) -> tuple[list[dict], dict[int, str]]:
        """(coherent records that meet the contract, {position: reason} of the others): the
        input check batch scoring uses too (`inputs.InputCheck`)."""
        return self.inputs.records(records)

    def score(self, records: list[dict]) -> tuple[list[dict], str]:
        """([{prediction, probability?}] for checked records in order, the engine that
        answered). Should ONNX Runtime fail on a call, the sklearn Pipeline answers it."""
        if self.engine == "onnx":
            try:
                return self.bundle.predict_records(records), "onnx"
            except Exception as exc:  # noqa: BLE001 - any ONNX failure: use the fallback
                log.warning("%s: ONNX Runtime failed (%s); sklearn answers this call",
                            self.path, exc)
        import pandas as pd

        frame = pd.DataFrame.from_records(records)
        out = self.bundle.predict(frame, engine="sklearn")
        return [{k: _plain(v) for k, v in row.items()} for row in out.to_dict("records")], \
            "sklearn"

    def outcome_values(self) -> list[str] | None:
        """What /feedback accepts as an outcome: the target's labels; None for numbers."""
        return None if self.task == "regression" else [str(v) for v in self.labels]

    def public_inference(self) -> dict:
        keep = ("name", "task", "target", "classes", "positive_class", "threshold",
                "estimator", "model_family", "unknown_category")
        return {k: self.inference.get(k) for k in keep if k in self.inference}

    def model_card_summary(self, limit: int = 2000) -> str:
        """The model card's title, intended use and model sections."""
        lines, sections = [], 0
        for line in self.bundle.model_card.splitlines():
            if line.startswith("## "):
                sections += 1
                if sections > 2:
                    break
            lines.append(line)
        return "\n".join(lines).strip()[:limit]


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def load_scorer(path: str | Path, engine: str = "onnx") -> Scorer:
    """Load a bundle (every file checked against its manifest: a tampered bundle raises
    BundleError) with one ONNX thread: a request is a few rows, and parallel requests
    already keep the cores busy."""
    from lifecycle.packaging.runtime import load_bundle

    return Scorer(load_bundle(path, threads=1), engine)


class Batcher:
    """Checks and scores, in one bundle call, the records of every request that reaches it in
    the same event-loop turn. Under load, concurrent requests share one ONNX run (its fixed
    cost dominates a one-row call); a lone request is flushed on the very next turn, so it
    does not wait. A record's verdict and answer do not depend on its neighbours."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer
        self._pending: list[tuple[list[dict], asyncio.Future]] = []
        self._scheduled = False
        self.calls = 0
        self.records = 0

    async def run(self, records: list[dict]
                  ) -> tuple[list[dict], dict[int, str], list[dict], str]:
        """(checked records, {position: reason} of the rejected, answers of the checked,
        the engine that answered)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((records, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def run_now(self, records: list[dict]
                ) -> tuple[list[dict], dict[int, str], list[dict], str]:
        """`run` for code outside an event loop: these records alone, at once."""
        return self._score([records])[0]

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        try:
            results = self._score([records for records, _ in batch])
        except Exception:  # noqa: BLE001 - retry alone, so only a culprit request fails
            results = []
            for records, _ in batch:
                try:
                    results.append(self._score([records])[0])
                except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                    results.append(exc)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the client went away
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _score(self, groups: list[list[dict]]) -> list[tuple]:
        records = [r for group in groups for r in group]
        ok, reasons = self.scorer.check(records)
        answers, engine = self.scorer.score(ok) if ok else ([], self.scorer.engine)
        self.calls += 1
        self.records += len(records)
        out, start, done = [], 0, 0
        for group in groups:
            mine = {i - start: reasons[i] for i in range(start, start + len(group))
                    if i in reasons}
            kept = len(group) - len(mine)
            out.append((ok[done:done + kept], mine, answers[done:done + kept], engine))
            start += len(group)
            done += kept
        return out
