"""What bench/feedback_gate.py and bench/feedback_modes.py share: the reproduced project
(`make run`: models/bundle, contract.yaml, data/processed/*.parquet) and the seeded windows.

Per seed, the held-out test rows (the simulator's pool: lifecycle/monitoring/simulate.py) are
cut into two disjoint halves: `production` labelled production rows are drawn from the first
(the simulator's `draw`, under the shift), a newer judge window from the second.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


@dataclass
class Project:
    bundle: object  # the champion's bundle (lifecycle.packaging.runtime.Bundle)
    contract: object
    feedback: object  # the `feedback:` params (FeedbackParams)
    metric: str  # the gate's primary metric
    train: object  # data/processed/train.parquet
    pool: object  # data/processed/test.parquet: the simulator's pool

    @property
    def target(self) -> str:
        return self.contract.target.column

    @property
    def positive(self) -> str:
        return str(self.contract.target.positive)

    @property
    def negative(self) -> str:
        allowed = self.contract.columns[self.target].allowed
        return next(str(v) for v in allowed if str(v) != self.positive)

    def frame(self, rows):
        """The model's input frame of `rows` (the bundle's derived columns)."""
        from lifecycle import features

        return features.model_frame(rows, self.contract, self.bundle.inference["derived"])

    def labels(self, rows):
        return (rows[self.target].astype(str) == self.positive).to_numpy(int)

    def windows(self, shift: str, seed: int, production: int, judge: int,
                customers: str = "new"):
        """(`production` rows to retrain on, a `judge` window), from disjoint halves; as new
        customers (what `make simulate` sends: `simulate.new_customers`) or `replayed`."""
        import numpy as np

        from lifecycle.monitoring.simulate import draw, new_customers

        order = np.random.default_rng(10_000 + seed).permutation(len(self.pool))
        half = len(self.pool) // 2
        args = (self.target, self.positive, self.negative)
        parts = (draw(self.pool.iloc[order[:half]], shift, production, seed, *args),
                 draw(self.pool.iloc[order[half:]], shift, judge, seed + 1, *args))
        if customers == "replayed":
            return parts
        return tuple(new_customers(rows, self.contract, seed + i)
                     for i, rows in enumerate(parts))


def project() -> Project:
    import pandas as pd

    from lifecycle import params
    from lifecycle.contract import load_contract
    from lifecycle.feedback.settings import FeedbackParams
    from lifecycle.packaging.runtime import load_bundle

    fp = params.load("feedback", ROOT / "params.yaml", model=FeedbackParams)
    metric = fp.gate.metric or params.load("evaluate", ROOT / "params.yaml").primary_metric
    processed = ROOT / "data" / "processed"
    return Project(load_bundle(ROOT / "models" / "bundle"), load_contract(ROOT / "contract.yaml"),
                   fp, metric, pd.read_parquet(processed / "train.parquet"),
                   pd.read_parquet(processed / "test.parquet"))


def write_results(name: str, summary: dict, table: list[str]) -> None:
    """bench/results/<name>.json and .md (gitignored); the table is printed too."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
