"""Bad params stop a stage before it touches data: exit 2, one line naming the key."""

from __future__ import annotations

import pytest

from tests.helpers_stages import (
    DELETE,
    assert_one_error_line,
    run_stage,
    run_stage_process,
    stage_dir,
)

# (stage, the params edit, the key the message must name)
CASES = {
    "split": [
        ({"split.test_size": DELETE}, "split.test_size", "Field required"),
        ({"split.test_size": "a fifth"}, "split.test_size", "valid number"),
        ({"split.method": "by_coin_flip"}, "split.method", "'stratified', 'random' or 'time'"),
        ({"split.shuffle": True}, "split.shuffle", "Extra inputs"),
        ({"split.test_size": 0.5, "split.validation_size": 0.5}, "split", "below 1"),
    ],
    "collect": [
        ({"collect.source.query": DELETE}, "collect.source.query", "Field required"),
        ({"collect.source.url": ["not", "a", "url"]}, "collect.source.url", "valid string"),
        ({"collect.source.kind": "ftp"}, "collect.source", "'sql', 'files', 'http'"),
        ({"collect.source.password": "x"}, "collect.source.password", "Extra inputs"),
        ({"collect.source": {"kind": "files", "path": "x.csv", "format": "xls"}},
         "collect.source.format", "'auto', 'csv', 'parquet' or 'jsonl'"),
        ({"collect.source": {"kind": "http", "url": "http://127.0.0.1:9/x", "page_size": 0}},
         "collect.source.page_size", "greater than 0"),
    ],
    "validate": [
        ({"validate.min_scores.timeliness": DELETE}, "validate.min_scores.timeliness",
         "Field required"),
        ({"validate.max_quarantine_share": "5%"}, "validate.max_quarantine_share", "valid number"),
        ({"validate.min_scores.accuracy": 1.5}, "validate.min_scores.accuracy",
         "less than or equal to 1"),
        ({"validate.as_of": "yesterday"}, "validate.as_of", "datetime"),
        ({"validate.min_scores.freshness": 0.9}, "validate.min_scores.freshness",
         "Extra inputs"),
    ],
    "preprocess": [
        ({"preprocess.drop_missing_target": DELETE}, "preprocess.drop_missing_target",
         "Field required"),
        ({"preprocess.drop_duplicate_records": "sometimes"}, "preprocess.drop_duplicate_records",
         "valid boolean"),
        ({"preprocess.impute": "mean"}, "preprocess.impute", "Extra inputs"),
    ],
    "train": [
        ({"train.mode": "online", "train.champion": "models/champion"}, "train",
         "train.mode is online but train.online names no checkpoint"),
        ({"train.mode": "online_ish"}, "train.mode", "'full', 'incremental' or 'online'"),
    ],
    "seed_demo_source": [
        ({"seed_demo_source.rows": DELETE}, "seed_demo_source.rows", "Field required"),
        ({"seed_demo_source.rows": "many"}, "seed_demo_source.rows", "valid integer"),
        ({"seed_demo_source.snapshot_date": "soon"}, "seed_demo_source.snapshot_date", "date"),
        ({"seed_demo_source.rows": 0}, "seed_demo_source.rows", "greater than 0"),
        ({"seed_demo_source.table": "x"}, "seed_demo_source.table", "Extra inputs"),
    ],
}
PARAMS = [(stage, edit, key, words) for stage, cases in CASES.items()
          for edit, key, words in cases]


def _id(case) -> str:
    stage, edit, key, words = case
    return f"{key}:{words.split()[0]}"


@pytest.mark.parametrize("stage, edit, key, words", PARAMS, ids=[_id(c) for c in PARAMS])
def test_bad_param_is_one_line_naming_the_key(stage, edit, key, words, tmp_path):
    code, err = run_stage(stage_dir(tmp_path, edit), stage)
    assert code == 2, err
    assert_one_error_line(err, stage, f"params.yaml: {key}: ", words)


def test_missing_section_names_it(tmp_path):
    where = stage_dir(tmp_path)
    params = where / "params.yaml"
    params.write_text(params.read_text().replace("split:", "splitting:"))
    code, err = run_stage(where, "split")
    assert code == 2
    assert_one_error_line(err, "split", "section 'split' is missing")


@pytest.mark.parametrize("stage, edit, key", [
    ("collect", {"collect.source.kind": "ftp"}, "collect.source"),
    ("split", {"split.test_size": DELETE}, "split.test_size"),
    ("validate", {"validate.min_scores.accuracy": "high"}, "validate.min_scores.accuracy"),
])
def test_bad_param_as_a_process(stage, edit, key, tmp_path):
    """What `dvc repro` shows: exit 2 and one line on stderr, nothing on stdout."""
    proc = run_stage_process(stage_dir(tmp_path, edit), stage)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert_one_error_line(proc.stderr, stage, f"params.yaml: {key}: ")
