"""Promotion and rollback: GTO versions and the `prod` stage, the running server's switch, and
the rule that takes a promotion back.

- `register`: the committed bundle becomes a GTO version of the model (an annotated git tag
  whose message carries the gate's evidence) and is assigned the stage `prod`.
- `deploy_version`: the running server takes a registered version up without a restart: its
  admin API loads the version (fetched at its GTO tag, hash-checked against that revision's
  dvc.lock and the bundle's manifest) into the idle slot, then a blue/green server switches to
  it; a canary server's challenger slot gets it and answers its share of customers, which
  `ramp` raises (to 1.0: the full rollout).
- `switch` / `rollback_server`: a server deployed blue/green (`deploy/*.yaml`) makes its other
  slot live, or the previous one again, through its admin API: both slots are loaded, so no
  request fails during the switch (lifecycle/serving/deploy.py `Router`).
- `rollback_due`: after a promotion, the new version's realized metric on a window of its own
  labelled answers against the old version's on the very same rows (the old bundle scores them
  too), paired as the gate pairs them: the difference's interval below zero: roll back.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from lifecycle.errors import StageError


def _git(args: list[str], repo: str | Path) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode:
        raise StageError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def versions(model: str, repo: str | Path = ".") -> list[str]:
    """The registered versions of `model`, oldest first (GTO's tags `<model>@vX.Y.Z`)."""
    tags = _git(["tag", "-l", f"{model}@v*"], repo).split()
    return sorted((t.split("@", 1)[1] for t in tags), key=_semver)


def _semver(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.lstrip("v").split(".")[:3])


def next_version(model: str, repo: str | Path = ".") -> str:
    have = versions(model, repo)
    if not have:
        return "v1.0.0"
    major, minor, _ = _semver(have[-1])
    return f"v{major}.{minor + 1}.0"


def prod_version(model: str, repo: str | Path = ".", stage: str = "prod") -> str | None:
    """The version in `stage` now, or None."""
    import gto.api

    try:
        found = gto.api.find_versions_in_stage(str(repo), model, stage)
    except Exception as exc:  # noqa: BLE001 - gto raises many types for "nothing registered"
        if "Cannot find artifact" in str(exc):
            return None
        raise StageError(f"cannot read GTO stages of {model}: {exc}") from exc
    return found[0].version if found else None


def register(model: str, version: str, message: str, repo: str | Path = ".",
             stage: str | None = "prod") -> None:
    """Register HEAD as `version` (tag message: `message`) and assign it to `stage` (None: no
    stage yet, `assign` later)."""
    import gto.api

    gto.api.register(str(repo), model, "HEAD", version=version, message=message, push=False)
    if stage:
        assign(model, version, f"{stage} <- {version}", repo, stage)


def unregister(model: str, version: str, repo: str | Path = ".") -> None:
    """Undo a `register` that was never assigned nor pushed: delete its local version tag."""
    _git(["tag", "-d", f"{model}@{version}"], repo)


def assign(model: str, version: str, message: str, repo: str | Path = ".",
           stage: str = "prod") -> None:
    import gto.api

    gto.api.assign(str(repo), model, stage, version=version, message=message, push=False,
                   force=True)


def assigned_at(model: str, repo: str | Path = ".", stage: str = "prod") -> pd.Timestamp:
    """When the newest assignment of `stage` was made (its GTO tag's date, UTC)."""
    out = _git(["for-each-ref", "--sort=-creatordate", "--count=1",
                "--format=%(creatordate:unix)", f"refs/tags/{model}#{stage}#*"], repo)
    if not out:
        raise StageError(f"{model} was never assigned to {stage}")
    return pd.Timestamp(int(out), unit="s", tz="UTC")


def roll_back(model: str, new_version: str, old_version: str, message: str,
              repo: str | Path = ".", stage: str = "prod") -> None:
    """Take `new_version` out of `stage` (GTO keeps every assigned version in a stage and
    serves the highest: unassigning the new one is what makes the old one current again),
    and assign `old_version` again, both with `message`."""
    import gto.api

    gto.api.unassign(str(repo), model, version=new_version, stage=stage, message=message,
                     push=False)
    if prod_version(model, repo, stage) != old_version:
        assign(model, old_version, message, repo, stage)


# --- the running server ----------------------------------------------------------------------
def _admin(url: str, path: str, token: str, body: dict | None = None) -> dict:
    return _call("POST", url, path, token, body)


def _call(method: str, url: str, path: str, token: str = "", body: dict | None = None) -> dict:
    """One admin API call; any failure (no server, a refusal) is a one-line StageError naming
    the call and the server's reason."""
    import httpx

    try:
        response = httpx.request(method, f"{url}{path}", json=body if method == "POST" else None,
                                 timeout=30,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    except httpx.HTTPError as exc:
        raise StageError(f"{url}{path}: cannot reach the server ({type(exc).__name__}: "
                         f"{exc})") from exc
    if response.status_code != 200:
        try:
            reason = response.json()["detail"]
        except (ValueError, KeyError, TypeError):
            reason = response.text
        raise StageError(f"{url}{path}: HTTP {response.status_code}: "
                         f"{str(reason).splitlines()[0][:300] if reason else ''}")
    return response.json()


def serving_state(url: str) -> dict:
    """The running server's deployment (GET /metadata): strategy, live slot, slot versions."""
    meta = _call("GET", url, "/metadata")
    return {**meta["deployment"], "versions": {n: v["source"] for n, v in
                                               meta["variants"].items()}}


def load(url: str, token: str, slot: str, version: str) -> dict:
    """Load registered `version` into `slot` (an idle one) of the running server at `url`."""
    return _admin(url, "/admin/load", token, {"slot": slot, "version": version})


def deploy_version(url: str, token: str, version: str) -> dict:
    """The running server takes `version` up: blue/green loads it into the idle slot and
    switches to it; canary loads it as the challenger. Other strategies cannot (StageError)."""
    state = serving_state(url)
    if state["strategy"] == "blue_green":
        idle = next(n for n in state["variants"] if n != state["live"])
        loaded = load(url, token, idle, version)
        return {**switch(url, token, idle), "loaded": loaded["model_version"]}
    if state["strategy"] == "canary":
        loaded = load(url, token, state["challenger"], version)
        return {**loaded["deployment"], "loaded": loaded["model_version"]}
    raise StageError(f"{url} serves strategy {state['strategy']}: only a blue_green or canary "
                     f"deployment takes a new version while running; restart it with {version}")


def ramp(url: str, token: str, share: float) -> dict:
    """Canary: give the challenger `share` of customers (1.0: the full rollout)."""
    return _admin(url, "/admin/share", token, {"share": share})


def switch(url: str, token: str, to: str | None = None) -> dict:
    """Blue/green: make the idle slot (or `to`) live on the server at `url`."""
    return _admin(url, "/admin/switch", token, {"to": to} if to else {})


def rollback_server(url: str, token: str) -> dict:
    """Blue/green: make the previously live slot live again."""
    return _admin(url, "/admin/rollback", token)


# --- the rollback rule -----------------------------------------------------------------------
def rollback_due(new_bundle, old_bundle, rows: pd.DataFrame, target: str, metric: str,
                 confidence: float, resamples: int, seed: int) -> dict:
    """Judge the new version's first labelled window against the old version on the same rows:
    `rollback` True when the paired difference (new - old, the gate's test: DeLong for ROC AUC)
    has its whole interval below zero, i.e. the new version is worse than the old one's
    performance allows. The old version's own interval is recorded too (an unpaired comparison
    with it misses a 0.04 AUC drop on 300 rows: the intervals are that wide)."""
    from lifecycle.evaluation import bootstrap_ci
    from lifecycle.feedback.gate import paired_difference
    from lifecycle.feedback.judge import common_rows, labelled_rows, predictions

    kept, refused = common_rows(old_bundle, new_bundle, labelled_rows(old_bundle, rows, target))
    new = predictions(new_bundle, kept, target)
    old = predictions(old_bundle, kept, target)
    paired = paired_difference(metric, old, new, (old_bundle.threshold, new_bundle.threshold),
                               confidence, resamples, seed)
    ci = bootstrap_ci(old, metric, old_bundle.threshold, resamples, confidence, seed)
    return {"rollback": bool(paired["high"] < 0), "metric": metric, "rows": len(kept),
            "rows_refused": refused, "new_version": new_bundle.version,
            "old_version": old_bundle.version, "new": paired["challenger"],
            "old": paired["champion"], "difference": paired["difference"],
            "difference_interval": [paired["low"], paired["high"]], "method": paired["method"],
            "old_interval": [ci["low"], ci["high"]], "confidence": confidence,
            "rule": ("roll back when the new version is worse than the old one on the same "
                     "labelled rows: the paired difference's interval lies below zero")}


def write_json(payload: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_plain) + "\n")


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")
