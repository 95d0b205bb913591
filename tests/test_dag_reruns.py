"""What a change reruns, through the real `dvc exp run -S`: a train hyperparameter reruns train
and what follows it, never featurize or before; a feature param reruns featurize onwards, never
split. (Data-stage params are covered in test_data_dag.py.)"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import run

AFTER_TRAIN = ["evaluate", "explain", "package"]


@pytest.fixture
def copy(reproduced: Path, tmp_path: Path) -> Path:
    """A private copy of the reproduced project (everything up to date)."""
    dest = tmp_path / "project"
    shutil.copytree(reproduced, dest, symlinks=True)
    return dest


def stages_run(copy: Path, *overrides: str) -> list[str]:
    args = [a for o in overrides for a in ("-S", o)]
    out = run(["dvc", "exp", "run", *args], copy)
    return re.findall(r"Running stage '([\w-]+)'", out.stdout + out.stderr)


def test_a_train_hyperparameter_reruns_train_onwards_only(copy: Path):
    ran = stages_run(copy, "train.logistic_regression.C=0.5")
    assert ran[0] == "train"
    assert set(ran) == {"train", *AFTER_TRAIN}


def test_a_feature_param_reruns_featurize_onwards_never_split(copy: Path):
    ran = stages_run(copy, "featurize.scale=robust")
    assert ran[0] == "featurize"
    assert set(ran) == {"featurize", "train", *AFTER_TRAIN}
