"""A fit gives the same bytes on every machine of the kind the project runs on, so a fresh
clone's `make run` leaves `git status` clean (dvc.lock records the model's md5)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from tests.helpers_stages import run_stage_process, stage_dir


def test_a_fit_gives_the_same_bytes_whatever_blas_kernels_the_cpu_would_pick(
        featurized: Path, tmp_path: Path):
    """OpenBLAS picks its kernels by CPU when it loads (OPENBLAS_CORETYPE names that choice:
    Prescott on an old CPU, Sandybridge on one with AVX only); the logistic regression's lbfgs
    on other kernels ends in other last bits. The stages pin the kernels, so whichever CPU
    they run on, model.skops is byte for byte the same."""
    digests = {}
    for cpu in ("as detected", "Prescott", "Sandybridge"):
        where = stage_dir(tmp_path / cpu.replace(" ", "-"))
        shutil.copytree(featurized / "data" / "features", where / "data" / "features")
        env = {} if cpu == "as detected" else {"OPENBLAS_CORETYPE": cpu}
        proc = run_stage_process(where, "train", env)
        assert proc.returncode == 0, proc.stderr
        digests[cpu] = hashlib.md5((where / "models" / "model.skops").read_bytes()).hexdigest()
    assert len(set(digests.values())) == 1, digests
