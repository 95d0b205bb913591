"""engine: dask against engine: pandas, on a real LocalCluster (2 worker processes, 1 thread
each) and a real S3 server (moto, 127.0.0.1): the same bytes, the same metrics, the same
bundle version; partitioned Parquet on S3; rows accounted for across partitions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import BIN, make_workspace, run, s3_client
from tests.helpers_stages import run_stages, set_params, stage_dir

DATA_STAGES = ("collect", "validate", "preprocess", "split")


@pytest.fixture(scope="module")
def s3(s3_server: dict) -> dict:
    """The S3 server with a bucket `lake`; the env that reaches it."""
    s3_client(s3_server).create_bucket(Bucket="lake")
    return s3_server


@pytest.fixture(scope="module")
def scheduler(s3: dict) -> Iterator[str]:
    """A LocalCluster of 2 worker processes, 1 thread each, whose workers reach the S3 server
    (as a real cluster's workers hold their own credentials); its scheduler's address."""
    from distributed import LocalCluster

    from lifecycle.scale.cluster import configure

    configure()
    with pytest.MonkeyPatch.context() as env:
        for key, value in s3.items():
            env.setenv(key, value)
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               scheduler_port=0, dashboard_address=":0", memory_limit="2GB")
    with cluster:
        yield cluster.scheduler_address


@pytest.fixture
def on_cluster(monkeypatch, scheduler: str, s3: dict) -> str:
    """Stages run in this process reach the cluster and the S3 server."""
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", scheduler)
    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    return scheduler


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lock_outs(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}


# --- 1. the real DAG, both engines --------------------------------------------------------------
@pytest.fixture(scope="module")
def dags(tmp_path_factory, scheduler: str, s3: dict) -> tuple[Path, Path, dict]:
    """The demo DAG reproduced by `dvc repro` twice, in two temporary git repos: engine pandas,
    and engine dask on the LocalCluster (partitions of 1,000 rows). (shared; do not modify)"""
    where = tmp_path_factory.mktemp("dags")
    pandas_repo = make_workspace(where / "pandas")
    dask_repo = make_workspace(where / "dask")
    set_params(dask_repo, {"engine.kind": "dask", "engine.partition_rows": 1000})
    run("git add -A && git -c user.name=t -c user.email=t@t commit -qm dask", dask_repo)
    run(["dvc", "repro", "--quiet"], pandas_repo)
    env = {**s3, "DASK_SCHEDULER_ADDRESS": scheduler, "HOME": str(where)}
    log = run(["dvc", "repro"], dask_repo, env=env)
    return pandas_repo, dask_repo, {"env": env, "log": log.stdout + log.stderr}


def test_dask_engine_gives_the_pandas_engines_dag(dags) -> None:
    pandas_repo, dask_repo, ran = dags
    assert "dask, 8 partitions" in ran["log"]   # 7,043 rows in partitions of 1,000: spread

    # every output is the same bytes: snapshot, quarantine, clean, splits, features, model...
    assert lock_outs(pandas_repo) == lock_outs(dask_repo)
    for name in ("train", "validation", "test"):
        for folder in ("data/processed", "data/features"):
            if name == "test" and folder == "data/features":
                continue
            table = Path(folder) / f"{name}.parquet"
            assert sha(pandas_repo / table) == sha(dask_repo / table), table
    for metrics in ("validate", "preprocess", "split", "data_quality", "features", "train"):
        file = Path("metrics") / f"{metrics}.json"
        assert json.loads((pandas_repo / file).read_text()) == \
            json.loads((dask_repo / file).read_text()), file
    scores = [json.loads((repo / "metrics/scores.json").read_text())
              for repo in (pandas_repo, dask_repo)]
    assert_close(scores[0], scores[1])
    versions = [json.loads((repo / "models/bundle/manifest.json").read_text())["version"]
                for repo in (pandas_repo, dask_repo)]
    assert versions[0] == versions[1]


def test_dvc_tracks_the_dask_engines_outputs_on_s3(dags, tmp_path: Path) -> None:
    """Outputs in the workspace, pushed to an S3 remote and pulled into a fresh clone."""
    pandas_repo, dask_repo, ran = dags
    run(["dvc", "remote", "modify", "--local", "storage", "url", "s3://lake/dvc"], dask_repo)
    run(["dvc", "push", "--quiet"], dask_repo, env=ran["env"])
    run("git add -A && git -c user.name=t -c user.email=t@t commit -qm reproduced", dask_repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(dask_repo), str(clone)], tmp_path)
    run(["dvc", "remote", "modify", "--local", "storage", "url", "s3://lake/dvc"], clone)
    run(["dvc", "pull", "split"], clone, env=ran["env"])
    for name in ("train", "validation", "test"):
        table = Path("data/processed") / f"{name}.parquet"
        assert sha(clone / table) == sha(pandas_repo / table), table


def test_batch_scoring_on_the_cluster_reads_and_writes_s3(dags, s3: dict, on_cluster: str,
                                                          tmp_path: Path) -> None:
    """Partitioned Parquet from S3 scored on the cluster equals the serving code's batch
    scoring of the same rows in one file: the same scores, rejects and reasons, row numbers."""
    from lifecycle import io
    from lifecycle.scale import EngineParams
    from lifecycle.scale.batch import score

    _, dask_repo, ran = dags
    rows = pd.read_parquet(dask_repo / "data/processed/validation.parquet").drop(
        columns=["churn"])
    rows.loc[rows.index[[5, 700, 1300]], "tenure"] = -1      # out of range: rejected
    local = tmp_path / "customers.parquet"
    io.write_parquet(rows, local)
    s3c = s3_client(s3)
    for i, start in enumerate(range(0, len(rows), 600)):
        io.write_parquet(rows.iloc[start:start + 600], tmp_path / f"p{i}.parquet")
        s3c.upload_file(str(tmp_path / f"p{i}.parquet"), "lake", f"customers/p{i}.parquet")

    line = score(str(dask_repo / "models/bundle"), "s3://lake/customers/",
                 "s3://lake/scores", None, EngineParams(kind="dask", partition_rows=250))
    assert f"{len(rows)} rows in" in line and "rejected 3 rows" in line

    run([str(BIN / "python"), "-m", "lifecycle.serving", "predict", "--bundle",
         str(dask_repo / "models/bundle"), "--input", str(local), "--output",
         str(tmp_path / "scores.parquet")], dask_repo)
    for cluster_url, one_file in (("s3://lake/scores", "scores.parquet"),
                                  ("s3://lake/scores-rejects", "scores.rejects.parquet")):
        got = pd.read_parquet(cluster_url + "/", storage_options=sio_options(cluster_url))
        expected = pd.read_parquet(tmp_path / one_file)
        pd.testing.assert_frame_equal(got.sort_values("row").reset_index(drop=True),
                                      expected.reset_index(drop=True))


def sio_options(url: str) -> dict:
    from lifecycle.scale.io import storage_options

    return storage_options(url)


def assert_close(a, b, where="scores") -> None:
    """Equal, numbers to 1e-9."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= 1e-9, (where, a, b)
    else:
        assert a == b, (where, a, b)


# --- 2. partitioned Parquet on S3; duplicates and versions spread across partitions ------------
@pytest.fixture(scope="module")
def demo_snapshot(tmp_path_factory) -> pd.DataFrame:
    """The demo CRM's raw snapshot (pandas engine), as collect writes it."""
    where = stage_dir(tmp_path_factory.mktemp("snapshot"))
    run_stages(where, "seed_demo_source", "collect")
    return pd.read_parquet(where / "data/raw/snapshot.parquet")


def spread_table(snapshot: pd.DataFrame) -> pd.DataFrame:
    """The snapshot with what only a cross-partition pass catches, far from its originals:
    records repeated under new ids, older versions of ids, conflicting ids, broken rows."""
    head = snapshot.iloc[:300]
    copies = head.iloc[:40].assign(customer_id=[f"COPY-{i}" for i in range(40)])
    older = head.iloc[40:80].copy()
    older["updated_at"] = pd.to_datetime(older["updated_at"]) - pd.Timedelta(days=3)
    older["updated_at"] = older["updated_at"].astype(snapshot["updated_at"].dtype) \
        if snapshot["updated_at"].dtype != object else older["updated_at"].astype(str)
    broken = head.iloc[80:90].assign(tenure="many")   # wrong_type: quarantined with its reason
    table = pd.concat([snapshot, copies, older, broken], ignore_index=True)
    table["tenure"] = table["tenure"].map(str).astype("string")   # text, as a CSV holds it
    return table.astype({c: snapshot[c].dtype for c in snapshot.columns if c != "tenure"})


def test_partitioned_parquet_on_s3_gives_the_pandas_engines_outputs(
        tmp_path: Path, demo_snapshot: pd.DataFrame, on_cluster: str, s3: dict) -> None:
    from lifecycle import io

    table = spread_table(demo_snapshot)
    parts = [table.iloc[i:i + 2500] for i in range(0, len(table), 2500)]   # 3 files
    local = tmp_path / "lake"
    s3c = s3_client(s3)
    for i, part in enumerate(parts):
        io.write_parquet(part, local / f"part-{i}.parquet")
        s3c.upload_file(str(local / f"part-{i}.parquet"), "lake", f"crm/part-{i}.parquet")

    pandas_dir = stage_dir(tmp_path / "pandas", {
        "collect.source": {"kind": "files", "path": str(local / "*.parquet")}})
    dask_dir = stage_dir(tmp_path / "dask", {
        "collect.source": {"kind": "files", "path": "s3://lake/crm/*.parquet"},
        "engine.kind": "dask", "engine.partition_rows": 700})
    run_stages(pandas_dir, *DATA_STAGES)
    run_stages(dask_dir, *DATA_STAGES)

    for out in ("data/raw/snapshot.parquet", "data/interim/validated.parquet",
                "data/interim/quarantine.parquet", "data/interim/clean.parquet",
                "data/interim/removed.parquet", "data/processed/train.parquet",
                "data/processed/validation.parquet", "data/processed/test.parquet"):
        assert sha(pandas_dir / out) == sha(dask_dir / out), out
    for metrics in ("validate", "preprocess", "split", "data_quality"):
        file = Path("metrics") / f"{metrics}.json"
        assert json.loads((pandas_dir / file).read_text()) == \
            json.loads((dask_dir / file).read_text()), file

    # what the spread rows test, stated on the dask engine's own outputs
    removed = pd.read_parquet(dask_dir / "data/interim/removed.parquet")
    reasons = removed["reason"].value_counts()
    assert reasons["duplicate_record"] >= 40 and reasons["older_version_of_id"] >= 40
    quarantine = pd.read_parquet(dask_dir / "data/interim/quarantine.parquet")
    assert (quarantine["failed_checks"].str.contains("wrong_type:tenure")).sum() >= 10
    report = json.loads((dask_dir / "metrics/preprocess.json").read_text())
    assert report["rows_in"] == report["rows_out"] + sum(report["rows_dropped"].values())
    validate = json.loads((dask_dir / "metrics/validate.json").read_text())
    assert validate["rows_in"] == len(table)
    splits = {n: pd.read_parquet(dask_dir / f"data/processed/{n}.parquet")
              for n in ("train", "validation", "test")}
    ids = [set(f["customer_id"]) for f in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    content = [c for c in table.columns if c not in ("customer_id", "updated_at")]
    records = pd.concat([f[content].assign(split=n) for n, f in splits.items()])
    assert not records.duplicated(subset=content).any()   # no record in two splits (or twice)
    assert sum(len(f) for f in splits.values()) == report["rows_out"]


def test_a_file_with_other_columns_is_one_clear_error(tmp_path: Path, demo_snapshot,
                                                      on_cluster: str) -> None:
    from lifecycle import io
    from tests.helpers_stages import run_stage

    io.write_parquet(demo_snapshot.iloc[:100], tmp_path / "lake" / "a.parquet")
    io.write_parquet(demo_snapshot.iloc[100:200].drop(columns=["tenure"]),
                     tmp_path / "lake" / "b.parquet")
    where = stage_dir(tmp_path / "stage", {
        "collect.source": {"kind": "files", "path": str(tmp_path / "lake" / "*.parquet")},
        "engine.kind": "dask"})
    code, err = run_stage(where, "collect")
    assert code != 0
    assert "b.parquet does not have the columns of" in err and "Traceback" not in err
