"""Production labels as training rows: answers recorded by the real serving core in a real
registry, joined with their feedback, exported, turned into source rows and held to the
contract by validate's own judge (personal data stays masked, a bad outcome is quarantined
with its reason, the newest labelled answers are kept out for the gate)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lifecycle import quality
from lifecycle.contract import load_contract
from lifecycle.errors import StageError
from lifecycle.feedback import production
from lifecycle.serving.core import PredictionService, load_variants
from lifecycle.serving.deploy import single
from lifecycle.serving.registry import Registry, export_parquet
from tests.helpers_serving import records_from, signature_of


@pytest.fixture(scope="module")
def export(reproduced: Path, tmp_path_factory) -> tuple[Path, list[dict]]:
    """300 answers of the demo bundle in a SQLite registry, 250 with feedback (one of them an
    outcome outside the labels), a shadow-free single deployment; exported to Parquet."""
    tmp = tmp_path_factory.mktemp("production")
    bundle = reproduced / "models" / "bundle"
    records = records_from(reproduced / "data/processed/test.parquet", signature_of(bundle),
                           300)
    truth = pd.read_parquet(reproduced / "data/processed/test.parquet")["churn"].astype(str)
    deployment = single(bundle)
    url = f"sqlite:///{tmp / 'registry.sqlite'}"
    with Registry(url) as registry:
        service = PredictionService(deployment, load_variants(deployment), registry)
        answers = []
        for i in range(0, 300, 50):  # six submissions: six distinct answer times
            answers += service.submit_sync(records[i:i + 50]).answers
        feedback = [{"request_id": a["request_id"], "received_at": 0.0,
                     "outcome": truth.iloc[i]} for i, a in enumerate(answers[:250])]
        feedback[3]["outcome"] = "Maybe"  # no such label: validate must quarantine it
        registry.record_sync(feedback_rows=feedback)
    out = tmp / "predictions.parquet"
    assert export_parquet(url, out) == 300
    return out, records


def test_labelled_answers_become_contract_rows_with_personal_data_masked(export, reproduced):
    path, records = export
    contract = load_contract(reproduced / "contract.yaml")
    answers = production.labelled_answers(path)
    assert len(answers) == 250  # the 50 without feedback are not training rows
    train, judge = production.split_judge(answers, 50)
    assert len(train) == 200 and len(judge) == 50
    assert train["created_at"].max() <= judge["created_at"].min()  # the judge window is newest
    rows = production.as_source_rows(train, contract)
    assert list(rows.columns) == list(contract.columns)
    assert rows["customer_id"].str.startswith("masked:").all()  # never the plain id
    assert not set(rows["customer_id"]) & {r.get("customer_id") for r in records}
    assert rows["email"].isna().all()
    verdict = quality.judge(rows, contract, pd.Timestamp.now("UTC").tz_localize(None)
                            + pd.Timedelta(hours=1))
    assert len(verdict.valid) == 199 and len(verdict.quarantine) == 1
    assert "churn" in verdict.first_reason.iloc[0]  # the bad outcome, with its reason
    assert (rows.loc[rows["churn"] != "Maybe", "churn"].isin(["Yes", "No"])).all()


def test_time_window_and_a_too_small_window_say_so(export):
    path, _ = export
    answers = production.labelled_answers(path)
    newest = answers["created_at"].iloc[-1]
    assert len(production.labelled_answers(path, until=newest)) == 250
    first = answers["created_at"].iloc[0]
    early = production.labelled_answers(path, until=first)
    assert 0 < len(early) < 250 and (early["created_at"] <= first).all()
    with pytest.raises(StageError, match="judge window alone needs 300"):
        production.split_judge(answers, 300)
    with pytest.raises(StageError, match="registry export not found"):
        production.labelled_answers(path.parent / "missing.parquet")
