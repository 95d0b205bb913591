"""A loaded bundle as the API and the router use it: check records, score them, describe it.

The work is the bundle's own (`Bundle.check_records`, `Bundle.predict_records`: the same
contract checks as batch scoring and the ONNX feed built from records with numpy, no pandas
per request), so real-time and batch answers cannot drift apart. `engine="sklearn"` scores
with the bundle's sklearn Pipeline instead (the fallback; tens of ms per request).
"""

from __future__ import annotations

from pathlib import Path


class Scorer:
    """One verified bundle and the engine it answers with."""

    def __init__(self, bundle, engine: str = "onnx"):
        if engine not in ("onnx", "sklearn"):
            raise ValueError(f"engine must be onnx or sklearn, not {engine!r}")
        self.bundle = bundle
        self.engine = engine
        self.path = Path(bundle.path)
        self.version: str = bundle.version
        self.contract = bundle.contract
        self.signature: dict = bundle.signature
        self.inference: dict = bundle.inference
        self.task: str = bundle.task
        self.labels: list = list(bundle.classes or [])
        self.lineage = bundle.manifest.get("lineage", {}).get("package")

    def check(self, records: list[dict]) -> tuple[list[dict], dict[int, str]]:
        """(coherent records that meet the contract, {position: reason} of the others)."""
        return self.bundle.check_records(records)

    def score(self, records: list[dict]) -> list[dict]:
        """[{prediction, probability?}] for checked records, in order."""
        if self.engine == "onnx":
            return self.bundle.predict_records(records)
        import pandas as pd

        frame = pd.DataFrame.from_records(records)
        out = self.bundle.predict(frame, engine="sklearn")
        return [{k: _plain(v) for k, v in row.items()} for row in out.to_dict("records")]

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
    from lifecycle.packaging import load_bundle

    return Scorer(load_bundle(path, threads=1), engine)
