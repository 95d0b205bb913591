"""Alerts: rules from params.yaml (`monitor.alerts`) over judged windows, posted to webhooks.

`evaluate_rules` turns windows of check results into alerts; `deliver` POSTs each alert as JSON
to each webhook, with a timeout, bounded retries and exponential backoff, and returns a report
in which every alert/webhook pair is either delivered or failed with its reason: nothing is
dropped silently. `exposition` gives the run to Prometheus (a textfile for node_exporter, or
any file server it scrapes), where deploy/prometheus/rules.yml alerts on it too. The formats
(window, CheckResult, Alert) are in docs/monitoring.md.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypedDict

import requests

from lifecycle.params import AlertRule, Webhook

log = logging.getLogger("lifecycle.monitoring")

SEVERITIES = ("info", "warning", "critical")
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}  # worth another try; other 4xx are not


class Alert(TypedDict):
    rule: str
    check: str
    target: str
    window: int
    severity: str
    value: float
    threshold: float
    message: str


def evaluate_rules(windows: Iterable[Mapping], rules: Sequence[AlertRule]) -> list[Alert]:
    """The alerts the rules raise over judged windows, in window then rule order.

    A rule matches a check result of its check (and target, if it names one) in a window of at
    least `min_window` rows whose verdict is not "insufficient"; it fires on the check's own
    "drift" verdict, or, when it has a threshold, when the value is above (below) it."""
    alerts: list[Alert] = []
    for window in windows:
        for rule in rules:
            for result in window["checks"]:
                if _fires(rule, result):
                    alerts.append(_alert(rule, result, window["index"]))
    return alerts


def _fires(rule: AlertRule, result: Mapping) -> bool:
    if result["check"] != rule.check or (rule.target and result["target"] != rule.target):
        return False
    if result["verdict"] == "insufficient" or result["n_window"] < rule.min_window:
        return False
    if rule.threshold is None:
        return result["verdict"] == "drift"
    value = result["value"]
    return value > rule.threshold if rule.when == "above" else value < rule.threshold


def _alert(rule: AlertRule, result: Mapping, window: int) -> Alert:
    threshold = result["threshold"] if rule.threshold is None else rule.threshold
    why = ("the check's verdict is drift" if rule.threshold is None
           else f"{rule.when} the rule's threshold {threshold:.4g}")
    p = f", p = {result['p_value']:.3g}" if result.get("p_value") is not None else ""
    message = (f"{result['check']} on {result['target']}, window {window}: "
               f"{result['statistic']} = {result['value']:.4g}{p} ({why}; "
               f"{result['n_window']} rows vs {result['n_reference']} reference rows)")
    return Alert(rule=rule.name, check=result["check"], target=result["target"], window=window,
                 severity=rule.severity, value=float(result["value"]),
                 threshold=float(threshold), message=message)


def at_least(alerts: Iterable[Mapping], severity: str) -> list[Mapping]:
    """The alerts of this severity or worse ("never": none), e.g. for the exit code."""
    if severity == "never":
        return []
    floor = SEVERITIES.index(severity)
    return [a for a in alerts if SEVERITIES.index(a["severity"]) >= floor]


# --- delivery ------------------------------------------------------------------------------
@dataclass
class Delivery:
    """One alert to one webhook: delivered, or failed with the last error."""
    rule: str
    window: int
    webhook: str  # the url as params.yaml writes it (${VAR} unexpanded: no secrets in reports)
    delivered: bool
    attempts: int
    status: int | None = None  # the last HTTP status, if any answer came
    error: str | None = None


@dataclass
class DeliveryReport:
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def failed(self) -> list[Delivery]:
        return [d for d in self.deliveries if not d.delivered]

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict:
        return {"delivered": len(self.deliveries) - len(self.failed),
                "failed": len(self.failed),
                "deliveries": [asdict(d) for d in self.deliveries]}

    def summary(self) -> str:
        line = (f"webhooks: {len(self.deliveries) - len(self.failed)} of "
                f"{len(self.deliveries)} alert deliveries made")
        if self.failed:
            first = self.failed[0]
            line += (f"; {len(self.failed)} FAILED (first: {first.webhook}: {first.error})")
        return line


def deliver(alerts: Sequence[Mapping], webhooks: Sequence[Webhook]) -> DeliveryReport:
    """POST each alert as JSON to each webhook; retry what may pass on a second try (no answer,
    a timeout, 5xx, 408, 429) up to `retries` times with exponential backoff.

    A webhook that still fails after all its retries is not tried again in this run (its
    remaining alerts are reported failed without waiting out more timeouts)."""
    report = DeliveryReport()
    for hook in webhooks:
        try:
            url = _expand_env(hook.url)
        except KeyError as exc:
            report.deliveries += [
                Delivery(a["rule"], a["window"], hook.url, False, 0,
                         error=f"environment variable {exc.args[0]} is not set")
                for a in alerts]
            continue
        down: str | None = None
        with requests.Session() as session:
            for alert in alerts:
                if down:
                    report.deliveries.append(Delivery(
                        alert["rule"], alert["window"], hook.url, False, 0,
                        error=f"not attempted: the webhook failed earlier in this run ({down})"))
                    continue
                delivery = _post(session, url, hook, alert)
                report.deliveries.append(delivery)
                if not delivery.delivered:
                    log.warning("alert %s (window %s) not delivered to %s: %s", alert["rule"],
                                alert["window"], hook.url, delivery.error)
                    if delivery.attempts > hook.retries:
                        down = delivery.error
    return report


def _post(session: requests.Session, url: str, hook: Webhook, alert: Mapping) -> Delivery:
    status, error = None, None
    for attempt in range(1, hook.retries + 2):
        if attempt > 1:
            time.sleep(hook.backoff_seconds * 2 ** (attempt - 2))
        try:
            answer = session.post(url, json=dict(alert), timeout=hook.timeout_seconds,
                                  headers={"User-Agent": "lifecycle-monitoring"})
        except requests.Timeout:
            status, error = None, f"no answer within {hook.timeout_seconds} s"
            continue
        except requests.RequestException as exc:
            status, error = None, f"{type(exc).__name__}: {_first_line(exc)}"
            continue
        status = answer.status_code
        if status < 300:
            return Delivery(alert["rule"], alert["window"], hook.url, True, attempt, status)
        error = f"HTTP {status}: {answer.text[:200].strip()}"
        if status not in RETRY_STATUSES:
            return Delivery(alert["rule"], alert["window"], hook.url, False, attempt, status,
                            error)
    return Delivery(alert["rule"], alert["window"], hook.url, False, hook.retries + 1, status,
                    f"{error} (after {hook.retries + 1} attempts)")


def _expand_env(url: str) -> str:
    """${VAR} / $VAR from the environment (a webhook's token stays out of params.yaml)."""
    for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", url):
        if (a or b) not in os.environ:
            raise KeyError(a or b)
    return os.path.expandvars(url)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else ""


# --- Prometheus ----------------------------------------------------------------------------
def exposition(results: Mapping) -> bytes:
    """A monitoring run in Prometheus' text format: the latest window's check values and
    verdicts, its alerts (severity as a label), alert counts over the run, and the time of the
    newest answer judged.

    Write it where node_exporter's textfile collector reads (`*.prom`) and the rules
    MonitoringAlert / MonitoringStale in deploy/prometheus/rules.yml see it. Every number comes
    from the results, none from the clock: the same registry export and bundle give the same
    bytes (a monitoring run is a DVC stage, and its outputs must reproduce)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry(auto_describe=True)

    def gauge(name: str, help_: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(name, help_, labels, registry=registry)

    windows = sorted(results.get("windows", []), key=lambda w: w["index"])
    alerts = results.get("alerts", [])
    gauge("monitoring_windows_judged", "windows judged in the run").set(len(windows))
    total = gauge("monitoring_alerts_fired", "alerts over all windows of the run",
                  ["severity"])
    for severity in SEVERITIES:
        total.labels(severity).set(sum(a["severity"] == severity for a in alerts))
    if not windows:
        return generate_latest(registry)
    latest = windows[-1]
    ends = [w["end"] for w in windows if w.get("end")]
    if ends:  # by time, not by the run: an unchanged export judged again changes nothing
        import pandas as pd

        gauge("monitoring_latest_answer_timestamp_seconds",
              "when the newest answer judged was recorded (the latest window's end)").set(
            max(pd.Timestamp(e).timestamp() for e in ends))
    gauge("monitoring_latest_window_rows", "rows in the latest window").set(latest.get("n", 0))
    values = gauge("monitoring_check_value", "the latest window's statistic per check/target",
                   ["check", "target", "statistic"])
    drift = gauge("monitoring_check_drift", "1 when the latest window's verdict is drift",
                  ["check", "target"])
    for result in latest["checks"]:
        values.labels(result["check"], result["target"], result["statistic"]).set(
            result["value"])
        drift.labels(result["check"], result["target"]).set(result["verdict"] == "drift")
    active = gauge("monitoring_alert", "1 for each alert on the latest window",
                   ["rule", "check", "target", "severity"])
    for alert in alerts:
        if alert["window"] == latest["index"]:
            active.labels(alert["rule"], alert["check"], alert["target"],
                          alert["severity"]).set(1)
    return generate_latest(registry)
