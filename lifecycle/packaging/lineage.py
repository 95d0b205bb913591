"""Lineage: the data, params and code behind a bundle, from dvc.lock and the modules that ran."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lifecycle.errors import StageError


def md5_file(path: str | Path) -> str:
    """The md5 DVC records for a file (DVC 3: md5 of its bytes)."""
    digest = hashlib.md5()  # DVC's content hash, not a security measure
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lineage(lock: dict, inputs: dict[str, str], code: dict[str, str], params: dict) -> dict:
    """The data, params and code behind the bundle, from dvc.lock: every stage upstream of the
    package's `inputs` ({path: md5}), with its deps, params and the outs that lead to the
    bundle, as DVC recorded them.

    Fails if dvc.lock records an input with another hash than the file has (a stale lock: the
    bundle would claim a lineage it does not have)."""
    stages = lock.get("stages", {})
    outs = {o["path"]: name for name, s in stages.items() for o in s.get("outs", [])}
    recorded = {o["path"]: o.get("md5") for s in stages.values() for o in s.get("outs", [])}
    for path, md5 in inputs.items():
        if path in recorded and recorded[path] != md5:
            raise StageError(f"dvc.lock records {path} as md5 {recorded[path]} but the file has "
                             f"{md5}: dvc.lock is stale, run the DAG with `dvc repro`")

    def producers(path: str) -> list[str]:
        """The stages whose outs are this path, a folder holding it, or inside it (a folder
        dep such as data/external holds another stage's out)."""
        return [name for out, name in outs.items()
                if out == path or path.startswith(f"{out}/") or out.startswith(f"{path}/")]

    upstream, todo = [], [name for p in inputs for name in producers(p)]
    while todo:
        name = todo.pop()
        if name in upstream:
            continue
        upstream.append(name)
        todo += [n for d in stages[name].get("deps", []) for n in producers(d["path"])]
    ordered = [name for name in stages if name in upstream]  # dvc.lock keeps the DAG's order
    # Only the outs that flow on to the bundle: a side output (a metrics file with a timing,
    # a figure) is not part of what the bundle was made from, and must not change its version.
    consumed = {*inputs, *(d["path"] for name in ordered for d in stages[name].get("deps", []))}

    def flows_on(path: str) -> bool:
        return any(c == path or c.startswith(f"{path}/") or path.startswith(f"{c}/")
                   for c in consumed)

    detail = {name: {"deps": {d["path"]: d.get("md5") for d in stages[name].get("deps", [])},
                     "outs": {o["path"]: o.get("md5") for o in stages[name].get("outs", [])
                              if flows_on(o["path"])},
                     "params": _what_not_where(stages[name].get("params", {}))}
              for name in ordered}
    data, all_code, all_params = {}, {}, {}
    for entry in detail.values():
        for path, md5 in {**entry["deps"], **entry["outs"]}.items():
            (all_code if path.endswith(".py") else data)[path] = md5
        for per_file in entry["params"].values():
            all_params.update(per_file)
    all_code.update(code)
    data.update({p: m for p, m in inputs.items() if not p.endswith(".py")})
    return {"stages": detail, "data": dict(sorted(data.items())),
            "code": dict(sorted(all_code.items())),
            "params": {k: all_params[k] for k in sorted(all_params)},
            "package": {"inputs": inputs, "code": code, "params": params}}



def _what_not_where(params: dict) -> dict:
    """A stage's params without `engine.*`: where the work ran (pandas or a Dask cluster) does
    not change what it made (tests/test_dask_engine.py), so it does not change the version."""
    return {f: {k: v for k, v in keys.items() if not k.startswith("engine.")}
            for f, keys in params.items()}


def imported_code(root: str | Path, packages: tuple[str, ...] = ("lifecycle", "stages")) -> dict:
    """{path: md5} of this project's modules loaded in this process: the code that ran."""
    import sys

    root = Path(root).resolve()
    out = {}
    for module in list(sys.modules.values()):
        name, file = getattr(module, "__name__", ""), getattr(module, "__file__", None)
        if not file or name.split(".")[0] not in packages:
            continue
        path = Path(file).resolve()
        if not path.is_relative_to(root):
            raise StageError(f"module {name} was imported from {path}, outside the project "
                             f"{root}: its hash would not describe the code DVC tracks")
        out[path.relative_to(root).as_posix()] = md5_file(path)
    return dict(sorted(out.items()))

