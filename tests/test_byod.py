"""Bring your own data, as the README says it, step for step, on public datasets this template
never saw (offline, from the `palmerpenguins` and `vega_datasets` packages):

- penguins_raw: binary (`Sex`), missing values, no id column, and column names with spaces,
  parentheses and `/` (`Delta 15 N (o/oo)`); a CSV file.
- vega's cars: regression (`Miles_per_Gallon`, itself missing for some cars), no id; Parquet.
- vega's seattle-weather: multiclass (`weather`), with an id (`date`); a CSV file.

Each gets its own copy of the template and exactly the README's commands: `make new ...`,
`dvc repro`, `make predict ...`, `make serve` and the documented request. Nothing else is
edited: no params, no contract, no dvc.yaml by hand.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import httpx
import pandas as pd
import pytest
import yaml

from tests.conftest import BIN, make_workspace, run
from tests.helpers_process import free_port, http_ok, wait_ready

MAKE = ["make", "-o", ".venv/.installed"]  # the copy uses this venv: never install into it


def penguins(ws):
    import palmerpenguins

    palmerpenguins.load_penguins_raw().to_csv(ws / "penguins_raw.csv", index=False)
    return "penguins_raw.csv", ["TARGET=Sex", "POSITIVE=FEMALE"]


def cars(ws):
    from vega_datasets import local_data

    local_data.cars().to_parquet(ws / "cars.parquet", index=False)
    return "cars.parquet", ["TARGET=Miles_per_Gallon"]


def seattle(ws):
    from vega_datasets import local_data

    frame = local_data.seattle_weather()
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
    frame.to_csv(ws / "seattle_weather.csv", index=False)
    return "seattle_weather.csv", ["TARGET=weather", "ID=date"]


DATASETS = {"penguins": (penguins, "binary"), "cars": (cars, "regression"),
            "seattle": (seattle, "multiclass")}


@pytest.mark.parametrize("name", list(DATASETS))
def test_the_readme_steps_alone_take_a_table_to_served_predictions(tmp_path, name):
    ws = make_workspace(tmp_path / "project")
    write, task = DATASETS[name]
    data, args = write(ws)

    # 1. make new DATA=... TARGET=... [ID=...] [POSITIVE=...]
    new = run([*MAKE, "new", f"DATA={data}", *args], ws)
    assert "review:" in new.stdout and "dvc repro" in new.stdout
    assert "seed_demo_source" not in (ws / "dvc.yaml").read_text()
    contract = yaml.safe_load((ws / "contract.yaml").read_text())
    params = yaml.safe_load((ws / "params.yaml").read_text())
    assert params["task"]["type"] == task and params["featurize"]["derived"] == {}
    assert params["package"]["card"]["sensitive_features"] == []
    assert params["package"]["name"] in yaml.safe_load((ws / "dvc.yaml").read_text())["artifacts"]
    ident = contract["columns"][contract["id"]]
    assert "min" not in ident and "max" not in ident        # ids are never range-bounded

    # 2. dvc repro
    run(["dvc", "repro", "--quiet"], ws)
    scores = json.loads((ws / "metrics" / "scores.json").read_text())
    metric = params["evaluate"]["primary_metric"]
    assert metric == {"binary": "roc_auc", "multiclass": "roc_auc", "regression": "rmse"}[task]
    model, baseline = scores[metric], scores["baseline"][metric]
    print(f"{name}: {metric} {model:.4f} vs baseline {baseline:.4f}")
    assert (model < baseline) if metric == "rmse" else (model > baseline)

    bundle = ws / "models" / "bundle"
    signature = json.loads((bundle / "signature.json").read_text())
    inference = json.loads((bundle / "inference.json").read_text())
    assert inference["engine"] == "onnx"
    package = json.loads((ws / "metrics" / "package.json").read_text())
    assert package["onnx_vs_sklearn"]["ok"] and package["records_vs_frame"]["ok"]
    # the data's own names at the edges, safe names inside the model (lifecycle/names.py)
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", i["name"]) for i in inference["model_inputs"])
    if name == "penguins":
        assert contract["id"] == "row_id"                     # no id: a content hash
        assert "Delta 15 N (o/oo)" in [f["name"] for f in signature["fields"]]
        assert "Delta_15_N_o_oo" in [i["name"] for i in inference["model_inputs"]]

    # 3. make predict INPUT=<the file make new wrote under data/external/> OUTPUT=...
    source = params["collect"]["source"]["path"]
    run([*MAKE, "predict", f"INPUT={source}", "OUTPUT=scores.csv"], ws)
    scored = pd.read_csv(ws / "scores.csv")
    rows = len(pd.read_parquet(ws / "data" / "raw" / "snapshot.parquet"))
    assert 0.9 * rows <= len(scored) <= rows and scored["prediction"].notna().all()

    # 4. make serve PORT=..., then POST the documented example to /predict
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ws), "DVC_NO_ANALYTICS": "1"}
    server = subprocess.Popen([*MAKE, "serve", f"PORT={port}"], cwd=ws, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(server, http_ok(f"{url}/health"), "make serve", timeout=120)
        example = signature["example"]
        assert isinstance(example[signature["id"]], int if ident["type"] == "int" else str)
        answer = httpx.post(f"{url}/predict", json=example, timeout=30)
        assert answer.status_code == 200, answer.text
        said = answer.json()
        if task == "regression":
            assert isinstance(said["prediction"], float)
        else:
            assert said["prediction"] in inference["classes"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
