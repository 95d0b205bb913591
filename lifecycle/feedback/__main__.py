"""`python -m lifecycle.feedback {retrain,judge,promote,watch,loop}`: the feedback loop.

  retrain  export the registry, run the DAG as a DVC experiment on the refreshed data, judge
           the challenger against the champion (stage prod) -> metrics/promotion.json;
           --mode incremental: the champion continues on the new train rows only
  judge    only the judgement (the experiment already in the workspace)
  promote  register the judged challenger as the next version in prod; --server: the running
           blue/green server loads it into its idle slot and switches to it (no restart)
  online   the river learner in shadow over the registry (prequential, resumed from its
           checkpoint), judged by the gate against the served model on the judge window
           -> metrics/online.json; --promote: when it wins, package it as a bundle (the DAG
           in train.mode online), judge the bundle by the whole gate, register and deploy it
  watch    judge the promoted version's first labelled window; roll back when it is worse
           than the old version on the same rows (paired interval below 0; exit 3)
  loop     for cron / CI: monitor first (--trigger alert: stop unless an alert fired), then
           retrain, judge and promote when the gate says so

Exit codes: 0 done (promoted, or nothing to do), 1 an error (one line), 2 the gate kept the
champion, 3 rolled back. Admin calls read the token from $SERVING_ADMIN_TOKEN.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lifecycle.errors import ParamsError, StageError
from lifecycle.feedback import loop, online_bundle, shadow

KEPT, ROLLED_BACK = 2, 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lifecycle.feedback", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".")
    parser.add_argument("--model", default="churn-model")
    parser.add_argument("--registry", default=os.environ.get(
        "REGISTRY_URL", "sqlite:///data/registry/inference.sqlite"))
    parser.add_argument("--server", help="a running blue/green (or canary) server that takes a "
                        "promoted version up (http://host:port)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("retrain", "loop"):
        s = sub.add_parser(name)
        s.add_argument("--train-on", choices=["production", "both"], default="both")
        s.add_argument("--name", help="the experiment's name")
        s.add_argument("--mode", choices=["full", "incremental"], default="full",
                       help="incremental: continue the champion (stage prod) on the new train "
                       "rows only (train.mode; docs/feedback.md)")
        if name == "loop":
            s.add_argument("--trigger", choices=["alert", "always"], default="alert",
                           help="alert: retrain only when monitoring raised an alert")
            s.add_argument("--promote", action="store_true", help="register + switch if it wins")
    sub.add_parser("judge")
    o = sub.add_parser("online", help="the online learner in shadow over the registry, judged")
    o.add_argument("--promote", action="store_true", help="package, judge, register, switch")
    o.add_argument("--name", help="the packaging experiment's name")
    o.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a param of the packaging experiment (dvc exp run -S), e.g. "
                   "evaluate.gate.worst_acceptable=0.6")
    sub.add_parser("promote")
    w = sub.add_parser("watch")
    w.add_argument("--new", required=True, help="the promoted version (v1.1.0)")
    w.add_argument("--old", required=True, help="the version before it")
    args = parser.parse_args(argv)
    token = os.environ.get("SERVING_ADMIN_TOKEN")
    try:
        return _run(args, token)
    except (StageError, ParamsError) as exc:
        print(f"feedback: error: {exc}", file=sys.stderr)
        return 1


def _run(args, token: str | None) -> int:
    from lifecycle import params

    repo = args.repo
    export = params.load("collect", Path(repo) / "params.yaml").production.export
    if args.command == "loop" and args.trigger == "alert":
        if not loop.monitor(args.registry, export, repo):
            loop.log("no monitoring alert: nothing to retrain")
            return 0
        loop.log("monitoring raised an alert: retraining")
    if args.command in ("retrain", "loop"):
        rows = loop.export(args.registry, os.path.join(repo, export))
        until = loop.newest_labelled(os.path.join(repo, export))
        loop.log(f"{rows} recorded answers -> {export}; retraining ({args.mode}) on "
                 f"{args.train_on} up to {until.isoformat()}")
        loop.retrain(args.train_on, until, args.name, repo, args.mode, args.model)
    if args.command == "online":
        loop.export(args.registry, Path(repo) / export)
        out = shadow.run(repo, args.model)
        d = out["decision"]["primary"]
        auc, loss = out["prequential_roc_auc"], out["prequential_log_loss"]
        loop.log(f"online {out['learner']}: {out['events_this_run']} new events learned "
                 f"(prequential ROC AUC {'-' if auc is None else f'{auc:.4f}'}), "
                 f"{out['events_learned']} in all ({out['checkpoint']['how']}; prequential log "
                 f"loss {'-' if loss is None else f'{loss:.4f}'}); on the judge window "
                 f"{d['challenger']:.4f} vs served {d['champion']:.4f}: "
                 + ("PROMOTABLE" if out["promote"] else "; ".join(out["decision"]["reasons"])))
        if not args.promote:
            return 0 if out["promote"] else KEPT
        sets = dict(item.split("=", 1) for item in args.set if "=" in item)
        if len(sets) != len(args.set):
            raise StageError(f"--set: give KEY=VALUE, got {args.set}")
        result = online_bundle.promote(repo, args.model, args.server, token, args.name, sets)
        loop.log(loop.evidence_message(result).replace("\n", "\n  "))
        if "promoted" not in result:
            return KEPT
        done = result["promoted"]
        loop.log(f"registered {done['version']} (the online learner) in prod (was "
                 f"{done['previous']})" + (f"; server live slot {done['server']['live']}"
                                           if "server" in done else ""))
        return 0
    if args.command in ("retrain", "loop", "judge"):
        result = loop.judge(repo, model=args.model)
        loop.log(loop.evidence_message(result).replace("\n", "\n  "))
        if not result["promote"]:
            return KEPT
        if args.command != "loop" or not args.promote:
            return 0
    if args.command in ("promote", "loop"):
        out = loop.promote(loop.read_result(repo), repo, args.model, args.server, token)
        loop.log(f"registered {out['version']} in prod (was {out['previous']})"
                 + (f"; server live slot {out['server']['live']}" if "server" in out else ""))
        return 0
    loop.export(args.registry, Path(repo) / export)  # the answers given since the promotion
    verdict = loop.watch(args.new, args.old, repo, args.model, args.server, token)
    if verdict is None:
        loop.log(f"{args.new}: fewer labelled answers than feedback.rollback.window_rows yet")
        return 0
    low, high = verdict["difference_interval"]
    loop.log(f"{args.new} realized {verdict['metric']} {verdict['new']:.4f} vs {args.old} "
             f"{verdict['old']:.4f} on the same {verdict['rows']} rows, difference "
             f"[{low:+.4f}, {high:+.4f}]: "
             + ("ROLLED BACK" if verdict["rollback"] else "kept"))
    return ROLLED_BACK if verdict["rollback"] else 0


if __name__ == "__main__":
    sys.exit(main())
