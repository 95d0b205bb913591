"""Alert rules over judged windows, and their delivery to real webhook receivers on 127.0.0.1
(one that answers, one that fails then recovers, one that never answers in time)."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lifecycle.errors import ParamsError
from lifecycle.monitoring.alerts import at_least, deliver, evaluate_rules, exposition
from lifecycle.params import AlertRule, AlertsParams, Section, Webhook, load
from tests.conftest import ROOT
from tests.helpers_monitoring import check, window
from tests.helpers_process import InThread


def rule(**kw) -> AlertRule:
    return AlertRule.model_validate({"name": "r", "severity": "warning", **kw})


WINDOWS = [
    window(0, [check("data_drift", "tenure", 0.02), check("data_drift", "monthly_charges", 0.03),
               check("performance", "roc_auc", 0.84, statistic="roc_auc", threshold=0.8)]),
    window(1, [check("data_drift", "tenure", 0.31, "drift", p_value=1e-6),
               check("data_drift", "monthly_charges", 0.04),
               check("performance", "roc_auc", 0.71, "drift", statistic="roc_auc",
                     threshold=0.8)]),
    window(2, [check("data_drift", "tenure", 0.5, "insufficient", n_window=40),
               check("performance", "roc_auc", 0.6, "ok", statistic="roc_auc", threshold=0.8,
                     n_window=90)], n=90),
]


def test_a_rule_fires_on_the_checks_verdict_for_any_target_by_default() -> None:
    alerts = evaluate_rules(WINDOWS, [rule(name="drift", check="data_drift")])
    assert [(a["window"], a["target"]) for a in alerts] == [(1, "tenure")]  # not "insufficient"
    alert = alerts[0]
    assert alert == {**alert, "rule": "drift", "check": "data_drift", "severity": "warning",
                     "value": 0.31, "threshold": 0.1}
    assert "tenure" in alert["message"] and "p = 1e-06" in alert["message"]
    json.dumps(alerts)  # plain JSON, as results.json and the webhooks get it


def test_a_threshold_below_with_a_minimum_window_and_a_target() -> None:
    low_auc = rule(name="auc", check="performance", target="roc_auc", threshold=0.75,
                   when="below", severity="critical", min_window=100)
    alerts = evaluate_rules(WINDOWS, [low_auc])
    assert [(a["window"], a["value"], a["threshold"]) for a in alerts] == [(1, 0.71, 0.75)]
    # window 2 (0.6 on 90 rows) is below too, but smaller than min_window
    assert evaluate_rules(WINDOWS, [rule(name="auc", check="performance", threshold=0.75,
                                         when="below")])[-1]["window"] == 2
    assert evaluate_rules(WINDOWS, [rule(name="t", check="data_drift", target="contract",
                                         threshold=0)]) == []


def test_severity_floor_for_the_exit_code() -> None:
    alerts = [{"severity": s} for s in ("info", "warning", "critical")]
    assert len(at_least(alerts, "info")) == 3
    assert at_least(alerts, "critical") == [{"severity": "critical"}]
    assert at_least(alerts, "never") == []


def test_the_shipped_params_are_valid_and_name_checks_that_exist() -> None:
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    alerts = AlertsParams.model_validate(params["monitor"]["alerts"])
    assert alerts.rules and {r.severity for r in alerts.rules} <= {"info", "warning", "critical"}


@pytest.mark.parametrize(("edit", "words"), [
    ({"check": "vibes"}, "monitor.alerts.rules.0.check"),
    ({"severity": "urgent"}, "monitor.alerts.rules.0.severity"),
    ({"min_window": 0}, "monitor.alerts.rules.0.min_window"),
    ({"treshold": 0.1}, "monitor.alerts.rules.0.treshold"),
])
def test_a_bad_rule_is_one_line_naming_the_key(tmp_path, edit, words) -> None:
    import yaml

    bad = {"monitor": {"alerts": {"fail_on": "warning", "webhooks": [], "rules": [
        {"name": "r", "check": "data_drift", "severity": "warning", **edit}]}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ParamsError) as error:
        load("monitor", tmp_path / "params.yaml", model=_MonitorAlertsOnly)
    assert words in str(error.value) and "\n" not in str(error.value)


class _MonitorAlertsOnly(Section):  # the monitor section's alerts part
    alerts: AlertsParams


# --- delivery to real receivers ------------------------------------------------------------
class Receiver(InThread):
    """An HTTP server on 127.0.0.1 recording every POST body per path. /ok answers 200;
    /flaky answers 503 to its first two requests, then 200; /slow answers after `slow` s;
    /gone answers 404 (not worth a retry)."""

    def __init__(self, slow: float = 2.0):
        self.bodies: dict[str, list[dict]] = {}
        self.hits: dict[str, int] = {}
        self.queries: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                path, _, query = self.path.partition("?")
                receiver.queries.append(query)
                n = receiver.hits[path] = receiver.hits.get(path, 0) + 1
                status = {"/ok": 200, "/gone": 404}.get(path, 200)
                if path == "/flaky" and n <= 2:
                    status = 503
                if path == "/slow":
                    time.sleep(slow)
                if status == 200:
                    receiver.bodies.setdefault(path, []).append(body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the /slow case)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def hook(url: str, **kw) -> Webhook:
    return Webhook.model_validate({"url": url, "backoff_seconds": 0.01, **kw})


ALERTS = evaluate_rules(WINDOWS, [rule(name="drift", check="data_drift"),
                                  rule(name="auc", check="performance", threshold=0.75,
                                       when="below")])


def test_each_alert_reaches_each_webhook_as_json_with_retries_after_5xx() -> None:
    assert len(ALERTS) == 3
    with Receiver() as receiver:
        report = deliver(ALERTS, [hook(f"{receiver.url}/ok"), hook(f"{receiver.url}/flaky")])
    assert report.ok, report.summary()
    assert receiver.bodies["/ok"] == ALERTS and receiver.bodies["/flaky"] == ALERTS
    flaky = [d for d in report.deliveries if d.webhook.endswith("/flaky")]
    assert [d.attempts for d in flaky] == [3, 1, 1] and receiver.hits["/flaky"] == 5
    assert report.as_dict()["delivered"] == 6 and "6 of 6" in report.summary()


def test_failed_deliveries_are_reported_never_dropped(monkeypatch) -> None:
    monkeypatch.delenv("ALERT_TOKEN", raising=False)
    with Receiver(slow=2.0) as receiver:
        slow = hook(f"{receiver.url}/slow", timeout_seconds=0.3, retries=1)
        report = deliver(ALERTS, [slow, hook(f"{receiver.url}/gone"),
                                  hook(f"{receiver.url}/ok?token=${{ALERT_TOKEN}}"),
                                  hook(f"{receiver.url}/ok")])
    by_hook = {}
    for d in report.deliveries:
        by_hook.setdefault(d.webhook.split("/")[-1], []).append(d)
    # /slow: the first alert times out twice (1 retry); the webhook is then given up for the run
    first, *rest = by_hook["slow"]
    assert (first.delivered, first.attempts, first.status) == (False, 2, None)
    assert "no answer within 0.3 s" in first.error
    assert all(d.attempts == 0 and "not attempted" in d.error for d in rest) and len(rest) == 2
    assert receiver.hits["/slow"] == 2
    # /gone: 404 is not retried, each alert is tried once and reported with its status
    assert [(d.delivered, d.attempts, d.status) for d in by_hook["gone"]] == [(False, 1, 404)] * 3
    # an unset ${VAR} is a reported failure naming it, and the url stays unexpanded
    unset = by_hook["ok?token=${ALERT_TOKEN}"]
    assert len(unset) == 3 and all("ALERT_TOKEN is not set" in d.error for d in unset)
    assert [d.delivered for d in by_hook["ok"]] == [True] * 3
    assert len(report.failed) == 9 and "9 FAILED" in report.summary()
    assert json.loads(json.dumps(report.as_dict()))["failed"] == 9


def test_a_webhook_token_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("ALERT_TOKEN", "s3cret")
    with Receiver() as receiver:
        report = deliver(ALERTS[:1], [hook(f"{receiver.url}/ok?token=${{ALERT_TOKEN}}")])
    assert report.ok and receiver.bodies["/ok"] == ALERTS[:1]
    assert receiver.queries == ["token=s3cret"]
    assert report.deliveries[0].webhook.endswith("${ALERT_TOKEN}")  # no secret in the report


def test_two_rules_with_one_name_are_refused(tmp_path) -> None:
    import yaml

    twice = {"name": "r", "check": "data_drift", "severity": "info"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"monitor": {"alerts": {
        "fail_on": "never", "webhooks": [], "rules": [twice, twice]}}}))
    with pytest.raises(ParamsError, match=r"monitor\.alerts: .*rule names repeat: \['r'\]"):
        load("monitor", tmp_path / "params.yaml", model=_MonitorAlertsOnly)


def test_the_run_for_prometheus_holds_the_latest_window_and_its_alerts() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = exposition({"windows": WINDOWS, "alerts": ALERTS}).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    # the newest window's end (2026-01-01 03:00 UTC), not the clock: runs reproduce
    assert samples[("monitoring_latest_answer_timestamp_seconds", ())] == 1_767_236_400
    assert exposition({"windows": WINDOWS, "alerts": ALERTS}).decode() == text
    assert samples[("monitoring_windows_judged", ())] == 3
    assert samples[("monitoring_alerts_fired", (("severity", "warning"),))] == 3
    assert samples[("monitoring_alerts_fired", (("severity", "critical"),))] == 0
    latest = WINDOWS[-1]["checks"]
    assert samples[("monitoring_check_value", (("check", "performance"),
                                               ("statistic", "roc_auc"),
                                               ("target", "roc_auc")))] == latest[1]["value"]
    assert samples[("monitoring_check_drift", (("check", "data_drift"),
                                               ("target", "tenure")))] == 0  # insufficient
    active = [dict(ls) for (n, ls), v in samples.items() if n == "monitoring_alert" and v == 1]
    assert active == [{"rule": "auc", "check": "performance", "target": "roc_auc",
                       "severity": "warning"}]  # window 2's alert; window 1's are history
    empty = exposition({"windows": [], "alerts": []}).decode()
    assert "monitoring_windows_judged 0.0" in empty
