"""A real Prometheus server (Debian `prometheus`) on 127.0.0.1 scraping a real API and a
monitoring run, with the shipped rules, until their alerts fire."""

from __future__ import annotations

from pathlib import Path

from lifecycle.monitoring.alerts import evaluate_rules, exposition
from lifecycle.params import AlertRule
from tests.conftest import ROOT
from tests.helpers_monitoring import check, window
from tests.helpers_process import InThread

DEPLOY = ROOT / "deploy" / "prometheus"


def test_prometheus_scrapes_the_api_and_the_monitoring_run_and_alerts_fire(reproduced,
                                                                           tmp_path):
    """The API (uvicorn, the demo bundle) and Prometheus on 127.0.0.1, scraping every second,
    with the shipped rules (their `for:` durations cut to 0 s; the expressions unchanged).
    A second job scrapes a monitoring run's exposition from a file server, as node_exporter's
    textfile collector would serve it."""
    import httpx
    import orjson
    import yaml

    from tests.helpers_prometheus import Prometheus
    from tests.helpers_serving import Server, records_from, signature_of

    bundle = reproduced / "models" / "bundle"
    rows = records_from(reproduced / "data/processed/validation.parquet", signature_of(bundle),
                        n=20)
    version = orjson.loads((bundle / "manifest.json").read_bytes())["version"]
    rules = yaml.safe_load((DEPLOY / "rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("for", None)
    (tmp_path / "prom").mkdir()
    (tmp_path / "prom" / "rules.yml").write_text(yaml.safe_dump(rules))
    shipped = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    job = shipped["scrape_configs"][0]

    run = monitoring_run()
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "metrics").write_bytes(exposition(run))
    with Server("--bundle", str(bundle), cwd=tmp_path / "api",
                registry=f"sqlite:///{tmp_path / 'api' / 'registry.sqlite'}") as api, \
            FileServer(tmp_path / "files") as files:
        config = {**shipped, "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [
                      {**job, "static_configs": [{"targets": [api.url.removeprefix("http://")]}]},
                      {"job_name": "lifecycle-monitoring",
                       "static_configs": [{"targets": [files.address]}]}]}
        with Prometheus(tmp_path / "prom", config) as prom:
            # scraped once with the reject counters at 0, so the rate sees the rejects below
            prom.wait(lambda: prom.query('serving_rejects_total{reason="invalid_json"}'),
                      "scraping the API")
            for row in rows[:10]:
                assert httpx.post(f"{api.url}/predict", json=row).status_code == 200
            bad = [b"{not json", orjson.dumps({**rows[0], "tenure": "long"}),
                   orjson.dumps({**rows[0], "tenure": -5})]
            for body in bad * 2:
                assert httpx.post(f"{api.url}/predict", content=body,
                                  headers={"content-type": "application/json"}
                                  ).status_code == 422

            def firing():
                return [a for a in prom.alerts()
                        if a["labels"]["alertname"] == "ServingHighRejectRate"
                        and a["state"] == "firing"]

            alert = prom.wait(firing, "firing ServingHighRejectRate")[0]
            assert alert["labels"]["severity"] == "warning"
            assert alert["labels"]["job"] == "lifecycle-serving"
            assert "% of /predict requests rejected" in alert["annotations"]["summary"]

            def total(expr: str) -> float:
                return sum(float(s["value"][1]) for s in prom.query(expr))

            def counted() -> tuple:  # the scrape after the last request has them all
                return (total('serving_requests_total{route="/predict", status="200"}'),
                        total('serving_requests_total{route="/predict", status="422"}'),
                        total("serving_rejects_total"),
                        total('serving_score_count{variant="main"}'))

            prom.wait(lambda: counted() == (10, 6, 6, 10), "counting 10 answers and 6 rejects")
            info = prom.query("serving_model_info")
            assert [s["metric"]["model_version"] for s in info] == [version]
            median = prom.query('histogram_quantile(0.5, sum by (le) '
                                '(rate(serving_score_bucket[1m])))')
            assert 0 <= float(median[0]["value"][1]) <= 1
            assert prom.query('up{job="lifecycle-serving"}')[0]["value"][1] == "1"

            # the monitoring run's alert on its latest window, with its params severity
            def monitoring_alert():
                return [a for a in prom.alerts()
                        if a["labels"]["alertname"] == "MonitoringAlert"
                        and a["state"] == "firing"]

            alerts = prom.wait(monitoring_alert, "firing MonitoringAlert")
            assert [(a["labels"]["rule"], a["labels"]["severity"]) for a in alerts] == [
                ("auc_low", "critical")]
            drift = prom.query('monitoring_check_drift{check="performance"}')
            assert drift[0]["value"][1] == "1"


def monitoring_run() -> dict:
    """Two windows; realized ROC AUC falls below the rule's 0.75 in the latest."""
    windows = [window(i, [check("performance", "roc_auc", auc, verdict, statistic="roc_auc",
                                threshold=0.75)])
               for i, (auc, verdict) in enumerate([(0.84, "ok"), (0.7, "drift")])]
    rules = [AlertRule(name="auc_low", check="performance", target="roc_auc", threshold=0.75,
                       when="below", severity="critical")]
    return {"windows": windows, "alerts": evaluate_rules(windows, rules)}


class FileServer(InThread):
    """A directory over HTTP on 127.0.0.1 (what node_exporter's textfile collector does for
    *.prom files, reduced to serving one)."""

    def __init__(self, root: Path):
        import functools
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        class Quiet(SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
