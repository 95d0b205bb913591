"""monitor: judge windows of the inference registry against the bundle that served them
(lifecycle/monitoring), in the monitoring pipeline (monitoring/dvc.yaml, a DVC project of its
own), not the training DAG.

Reads a registry export (`make registry-export`) and the bundle (its monitoring reference is
hash-checked with every other file). Writes the per-window results with the alerts, the summary
DVC tracks as metrics, the plot data, the dashboard, and the run in Prometheus' text format
(monitoring/out/monitoring.prom); posts each alert to the webhooks in params. It exits 0 when
alerts fire (so DVC records the run); `make monitor` then fails through
`python -m lifecycle.monitoring gate`.
"""

from pathlib import Path

from lifecycle import cli, io, params
from lifecycle.monitoring import alerts, dashboard, reference, run, source, windows


def main() -> str:
    args = cli.paths(__doc__, registry="registry export (Parquet)", bundle="bundle folder",
                     results="per-window results and alerts (JSON)",
                     metrics="summary metrics (JSON)", plots="plot data folder",
                     dashboard="dashboard page (HTML)")
    p = params.load("monitor")
    ref = reference.load(args.bundle)
    rows = source.read(args.registry, list(ref.kinds))
    cut = windows.cut(rows, p.window.by, p.window.size, p.window.every, ref.version)
    judged = run.judge(cut, ref, p)
    fired = alerts.evaluate_rules(judged, p.alerts.rules)
    report = alerts.deliver(fired, p.alerts.webhooks)
    results = {"bundle_version": ref.version, "windows": judged, "alerts": fired,
               "deliveries": report.as_dict()}
    counts = {"recorded": len(rows), "judged": int(sum(len(w.rows) for w in cut)),
              "other_versions": int((rows["model_version"] != ref.version).sum())}
    io.write_json(results, args.results)
    io.write_json(run.summary(ref.version, judged, fired, counts), args.metrics)
    Path(args.plots).mkdir(parents=True, exist_ok=True)
    io.write_json(run.timeline(judged), Path(args.plots) / "timeline.json")
    Path(args.dashboard).write_text(dashboard.render(results))
    # for node_exporter's textfile collector (deploy/prometheus: MonitoringAlert, ...Stale)
    (Path(args.results).parent / "monitoring.prom").write_bytes(alerts.exposition(results))
    failing = alerts.at_least(fired, p.alerts.fail_on)
    return (f"{len(judged)} windows of {counts['judged']} answers judged against bundle "
            f"{ref.version} ({counts['other_versions']} answers of other versions set aside); "
            f"{len(fired)} alerts ({len(failing)} at {p.alerts.fail_on} or worse); "
            f"{report.summary()}")


if __name__ == "__main__":
    cli.run("monitor", main)
