"""Batch inference through its command line (what `make predict` runs): CSV, Parquet and JSON
Lines in, chunked, bad rows to a rejects file with their reasons, every row accounted for."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from lifecycle.packaging.runtime import load_bundle
from tests.conftest import run
from tests.helpers_serving import ROOT


@pytest.fixture(scope="module")
def raw_rows(reproduced: Path) -> pd.DataFrame:
    """Validation rows as a source would hold them (all contract columns, text for text),
    with three broken rows at known positions."""
    rows = pd.read_parquet(reproduced / "data/processed/validation.parquet").head(450)
    rows = rows.astype({c: "object" for c in rows.columns if rows[c].dtype.kind not in "if"})
    rows["monthly_charges"] = rows["monthly_charges"].astype(object)
    rows.loc[10, "tenure"] = -5  # outside the declared range
    rows.loc[200, "contract"] = None  # a required field missing
    rows.loc[333, "monthly_charges"] = "lots"  # not a number
    return rows.drop(columns=["signup_date", "updated_at"])


def write(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.astype({"monthly_charges": "string"}).to_parquet(path)


def read(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_parquet(path)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_predict_scores_good_rows_and_rejects_bad_ones_with_reasons(
        reproduced: Path, raw_rows: pd.DataFrame, tmp_path: Path, suffix: str):
    bundle = reproduced / "models" / "bundle"
    source, output = tmp_path / f"in{suffix}", tmp_path / f"scores{suffix}"
    write(raw_rows, source)
    proc = run(["python", "-m", "lifecycle.serving", "predict", "--bundle", str(bundle),
                "--input", str(source), "--output", str(output), "--chunk-rows", "100"],
               ROOT)
    summary = proc.stderr.strip().splitlines()[-1]
    assert re.search(r"scored 447 rows .* rejected 3 rows .* 450 rows in", summary), summary

    scores = read(output)
    rejects = read(tmp_path / f"scores.rejects{suffix}")
    assert len(scores) + len(rejects) == len(raw_rows)
    assert sorted(rejects["row"]) == [10, 200, 333]
    reasons = dict(zip(rejects["row"], rejects["reason"], strict=True))
    assert "out_of_range:tenure" in reasons[10]
    assert "missing_required:contract" in reasons[200]
    assert "wrong_type:monthly_charges" in reasons[333]
    assert rejects["customer_id"].str.startswith("masked:").all()  # personal data masked
    assert rejects["email"].dropna().str.startswith("masked:").all()

    # chunked scoring gives what one in-memory pass over the good rows gives
    checked = load_bundle(bundle)
    good = raw_rows.drop(index=[10, 200, 333])
    ok, bad = checked.check_rows(good)
    assert bad.empty
    expected = checked.predict(ok)
    assert scores["row"].tolist() == good.index.tolist()
    assert scores["customer_id"].tolist() == good["customer_id"].tolist()
    assert scores["prediction"].tolist() == expected["prediction"].tolist()
    assert scores["probability"].tolist() == pytest.approx(expected["probability"].tolist())
    assert set(scores["model_version"]) == {checked.version}


def test_a_bad_input_is_one_clear_error(reproduced: Path, tmp_path: Path):
    bundle = reproduced / "models" / "bundle"
    proc = run(["python", "-m", "lifecycle.serving", "predict", "--bundle", str(bundle),
                "--input", str(tmp_path / "missing.csv"), "--output",
                str(tmp_path / "out.csv")], ROOT, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"predict: error: input file not found: {tmp_path / 'missing.csv'}")
