"""The loop's steps, each callable alone: export the registry, retrain as a DVC experiment,
judge the challenger against the champion, promote (GTO + the server's switch), and watch the
promotion (rollback).

    retrain: registry -> Parquet; `dvc exp run -S collect.train_on=both
             -S collect.production.until=<newest labelled answer> -S validate.as_of=<same>
             -S train.mode=full` (incremental: the prod bundle continued on the new rows)
    judge:   champion (the bundle at stage prod) vs challenger (models/bundle) on the newest
             `collect.production.judge_rows` labelled answers, which neither trained on
             -> metrics/promotion.json
    promote: commit the experiment, register it as the next GTO version in stage prod (the
             evidence in the tag's message); a running blue/green server loads it into its
             idle slot and switches to it (a canary server: as its challenger), no restart
    watch:   the new version's first labelled window vs the old version's interval on the same
             rows -> metrics/rollback.json; rolls back (GTO prod and the server) when worse
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from lifecycle import io, params
from lifecycle.errors import StageError
from lifecycle.feedback import production, rollout
from lifecycle.feedback.settings import FeedbackParams

PROMOTION = Path("metrics/promotion.json")
ROLLBACK = Path("metrics/rollback.json")


def export(registry_url: str, path: str | Path) -> int:
    from lifecycle.serving.registry import export_parquet

    return export_parquet(registry_url, path)


def monitor(registry_url: str, export_path: str | Path, repo: str | Path = ".") -> bool:
    """What `make monitor` runs (export, the monitoring pipeline, its gate): True on an alert
    at `monitor.alerts.fail_on` or worse."""
    export(registry_url, Path(repo) / export_path)
    step = subprocess.run(["dvc", "--cd", "monitoring", "repro"], cwd=repo, capture_output=True,
                          text=True)
    if step.returncode:
        raise StageError("monitoring failed: " + (step.stderr or step.stdout).strip()[-500:])
    gate = subprocess.run([sys.executable, "-m", "lifecycle.monitoring", "gate",
                           "monitoring/out/results.json"], cwd=repo, capture_output=True,
                          text=True)
    for line in gate.stderr.strip().splitlines():
        log(line.removeprefix("monitor: "))
    if gate.returncode not in (0, 1):
        raise StageError(f"monitoring gate failed: {gate.stderr.strip()[-300:]}")
    return gate.returncode == 1


def newest_labelled(path: str | Path) -> pd.Timestamp:
    answers = production.labelled_answers(path)
    if answers.empty:
        raise StageError(f"no labelled answers in {path}: nothing to retrain on yet")
    return answers["created_at"].iloc[-1]


def retrain(train_on: str, until: pd.Timestamp, name: str | None = None,
            repo: str | Path = ".", mode: str = "full", model: str = "churn-model") -> str:
    """Run the DAG as a DVC experiment on the refreshed data; returns dvc's output. `mode`
    incremental: the champion (stage prod) continues on the new train rows
    (`train.champion`: its bundle copied to models/champion/<version>)."""
    # rounded up to the microsecond: the newest answer (nanoseconds) must stay inside `until`
    stamp = until.tz_convert("UTC").ceil("us").strftime("%Y-%m-%dT%H:%M:%S.%f")
    cmd = ["dvc", "exp", "run", "-S", f"collect.train_on={train_on}",
           "-S", f"collect.production.until='{stamp}'", "-S", f"validate.as_of='{stamp}'",
           "-S", f"train.mode={mode}"]
    if mode == "incremental":
        cmd += ["-S", f"train.champion={champion_copy(repo, model)}"]
    if name:
        cmd += ["--name", name]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if proc.returncode:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise StageError(f"retraining failed (dvc exp run exited {proc.returncode}):\n{tail}")
    return proc.stdout


CHAMPIONS = Path("models") / "champion"  # prod bundles incremental retraining continues


def champion_copy(repo: str | Path = ".", model: str = "churn-model") -> str:
    """The bundle at stage prod (fetched at its revision, hash-checked against its dvc.lock)
    copied to models/champion/<version> (git-ignored, outside the DAG's outputs), for
    `train.champion`; the path names the version, so a new champion is a changed param."""
    from lifecycle.serving.deploy import VariantSpec, fetch_bundle

    version = rollout.prod_version(model, repo)
    if version is None:
        raise StageError(f"incremental retraining continues the champion at stage prod: no "
                         f"version of {model} is in prod yet (register one first)")
    source = fetch_bundle(VariantSpec(stage="prod"), model, repo)
    dest = Path(repo) / CHAMPIONS / version
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(source, dest)
    return (CHAMPIONS / version).as_posix()


def judge_window(repo: str | Path = ".") -> tuple[pd.DataFrame, str]:
    """The newest labelled answers (collect.production as params.yaml now says), as source
    rows; and the target column."""
    from lifecycle.contract import load_contract

    p = params.load("collect", Path(repo) / "params.yaml").production
    contract = load_contract(Path(repo) / "contract.yaml")
    answers = production.labelled_answers(Path(repo) / p.export, p.until, p.window_days)
    _, window = production.split_judge(answers, p.judge_rows)
    return production.as_source_rows(window, contract), contract.target.column


def judge(repo: str | Path = ".", challenger: str | Path = "models/bundle",
          model: str = "churn-model") -> dict:
    """Challenger vs the champion at stage prod on the judge window -> metrics/promotion.json."""
    from lifecycle.feedback.judge import judge as run_judge
    from lifecycle.packaging.runtime import load_bundle
    from lifecycle.serving.deploy import VariantSpec, fetch_bundle

    repo = Path(repo)
    fp = params.load("feedback", repo / "params.yaml", model=FeedbackParams)
    metric = fp.gate.metric or params.load("evaluate", repo / "params.yaml").primary_metric
    gate_params = fp.gate.model_copy(update={"metric": metric})
    champion = load_bundle(fetch_bundle(VariantSpec(stage="prod"), model, repo))
    contender = load_bundle(repo / challenger)
    rows, target = judge_window(repo)
    decision, facts = run_judge(champion, contender, rows, target, gate_params,
                                seed=fp.gate.seed)
    out = {"promote": decision.promote, "decision": decision.as_dict(), "window": facts,
           "champion": {"version": rollout.prod_version(model, repo), "bundle": champion.version},
           "challenger": {"bundle": contender.version, "path": str(challenger)}}
    rollout.write_json(out, repo / PROMOTION)
    return out


def evidence_message(result: dict) -> str:
    """The gate's decision in a few lines, for the GTO tag message (the registry's record)."""
    d = result["decision"]
    p = d["primary"]
    lines = [f"gate: {'PROMOTE' if result['promote'] else 'KEEP CHAMPION'} "
             f"({p['metric']} {p['challenger']:.4f} vs {p['champion']:.4f}, difference "
             f"{p['difference']:+.4f}, {p['confidence']:.0%} interval [{p['low']:+.4f}, "
             f"{p['high']:+.4f}], {p['method']}, min effect {d['min_effect']}, "
             f"{result['window']['rows_scored']} rows)"]
    lines += [f"guardrail {g['name']}: {g['champion']} -> {g['challenger']} "
              f"({'ok' if g['passed'] else 'FAIL'}, tolerance {g['tolerance']})"
              for g in d["guardrails"]]
    lines += [f"why not: {r}" for r in d["reasons"]]
    if "online" in result:  # which events the online learner had seen when judged
        o = result["online"]
        lines.append(f"online learner: {o['seen']['warm_rows']} warm rows, then "
                     f"{o['seen']['events']} feedback events up to "
                     f"{o['seen']['last_event']['created_at']}, all before the window's first "
                     f"answer {o['window_first_answer']['created_at']}; checkpoint sha256 "
                     f"{o['sha256'][:16]}" + "".join(f"; -S {k}={v}"
                                                      for k, v in o.get("sets", {}).items()))
    return "\n".join(lines)


def promote(result: dict, repo: str | Path = ".", model: str = "churn-model",
            server: str | None = None, token: str | None = None) -> dict:
    """Commit the experiment's results and register them as the next version; with `server`,
    the running server takes it up first (`rollout.deploy_version`: loaded into its idle slot,
    switched to). Only then is the version assigned to prod. All or nothing: when the server
    step (or the assignment) fails, the version tag and the commit are undone, prod keeps its
    version and a StageError says so in one line (run promote again once the server is
    fixed)."""
    repo = Path(repo)
    if not result["promote"]:
        raise StageError("the gate did not promote the challenger: nothing to register "
                         f"({'; '.join(result['decision']['reasons'])})")
    previous = rollout.prod_version(model, repo)
    before = rollout._git(["rev-parse", "HEAD"], repo)
    rollout._git(["add", "dvc.lock", "params.yaml", "metrics"], repo)
    staged = subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=repo).returncode != 0
    if staged:  # a second run after an undone one commits the same results again
        rollout._git(["-c", "user.name=lifecycle", "-c", "user.email=lifecycle@localhost",
                      "commit", "-q", "-m", "retrain: challenger promoted by the gate\n\n"
                      + evidence_message(result)], repo)
    version = rollout.next_version(model, repo)
    rollout.register(model, version, evidence_message(result), repo, stage=None)
    out = {"version": version, "previous": previous,
           "commit": rollout._git(["rev-parse", "HEAD"], repo)}
    try:
        if server:  # the running server loads the new version into its idle slot, switches
            out["server"] = rollout.deploy_version(server, token or "", version)
        try:
            rollout.assign(model, version, f"prod <- {version}", repo)
        except Exception:
            if out.get("server", {}).get("strategy") == "blue_green":
                rollout.rollback_server(server, token or "")  # the old version live again
            raise
    except Exception as exc:
        rollout.unregister(model, version, repo)
        if staged and rollout._git(["rev-parse", "HEAD"], repo) == out["commit"]:
            rollout._git(["reset", "-q", "--soft", before], repo)
        served = _served(server) if server else ""
        raise StageError(f"{version} NOT promoted ({str(exc).splitlines()[0]}); undone: prod "
                         f"stays {previous or 'unassigned'}, {version} is not registered"
                         + (", the challenger's results are staged, not committed" if staged
                            else "") + served + ": fix it and run promote again") from exc
    return out


def _served(server: str) -> str:
    """", the server at URL serves ... (live slot ...)", or that it could not be asked."""
    try:
        state = rollout.serving_state(server)
    except StageError:
        return f", the server at {server} could not be asked what it serves"
    return (f", the server at {server} serves {state['versions'][state['live']]} "
            f"(live slot {state['live']})")


def watch(new_version: str, old_version: str, repo: str | Path = ".",
          model: str = "churn-model", server: str | None = None,
          token: str | None = None) -> dict | None:
    """Judge the first labelled window of `new_version`'s answers (given since the newest prod
    assignment) against `old_version`
    (None while fewer than `feedback.rollback.window_rows` have arrived); roll back when the
    rule says so: GTO prod back to the old version, the server's previous slot live again."""
    from lifecycle.contract import load_contract
    from lifecycle.packaging.runtime import load_bundle
    from lifecycle.serving.deploy import VariantSpec, fetch_bundle

    repo = Path(repo)
    fp = params.load("feedback", repo / "params.yaml", model=FeedbackParams)
    p = params.load("collect", repo / "params.yaml").production
    metric = fp.gate.metric or params.load("evaluate", repo / "params.yaml").primary_metric
    new = load_bundle(fetch_bundle(VariantSpec(version=new_version), model, repo))
    old = load_bundle(fetch_bundle(VariantSpec(version=old_version), model, repo))
    since = rollout.assigned_at(model, repo)  # the promotion: only answers given after it
    answers = production.labelled_answers(repo / p.export)
    answers = answers[(answers["model_version"] == new.version)
                      & (answers["created_at"] >= since)]
    if len(answers) < fp.rollback.window_rows:
        return None
    window = answers.iloc[:fp.rollback.window_rows]
    contract = load_contract(repo / "contract.yaml")
    rows = production.as_source_rows(window, contract)
    verdict = rollout.rollback_due(new, old, rows, contract.target.column, metric,
                                   fp.gate.confidence, fp.gate.resamples, fp.gate.seed)
    verdict.update({"new_registered": new_version, "old_registered": old_version})
    if verdict["rollback"]:
        rollout.roll_back(model, new_version, old_version,
                          f"rollback: {new_version} realized {verdict['metric']} "
                          f"{verdict['new']:.4f} vs {old_version} {verdict['old']:.4f} on the "
                          f"same {verdict['rows']} rows, difference interval "
                          f"[{verdict['difference_interval'][0]:+.4f}, "
                          f"{verdict['difference_interval'][1]:+.4f}]", repo)
        if server:
            verdict["server"] = rollout.rollback_server(server, token or "")
    rollout.write_json(verdict, repo / ROLLBACK)
    return verdict


def log(message: str) -> None:
    print(f"feedback: {message}", file=sys.stderr, flush=True)


def read_result(repo: str | Path = ".") -> dict:
    return io.read_json(Path(repo) / PROMOTION)
