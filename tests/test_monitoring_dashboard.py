"""The monitoring dashboard: one self-contained page, opened in headless Chromium; it must
make no request beyond its own file, have a section per check and the alerts, and draw."""

from __future__ import annotations

import io
import math

from PIL import Image

from lifecycle.monitoring.alerts import evaluate_rules
from lifecycle.monitoring.dashboard import render
from lifecycle.params import AlertRule
from tests.helpers_chromium import Chromium
from tests.helpers_monitoring import check, window

COLUMNS = ["tenure", "monthly_charges", "contract", "payment_method"]


def sample_results(n_windows: int = 24) -> dict:
    """A run of hourly windows: monthly charges drift from window 12 on, the model version
    changes at window 16, realized ROC AUC sags late, the last window is small."""
    windows = []
    for i in range(n_windows):
        shifted = i >= 12
        n = 60 if i == n_windows - 1 else 1000
        small = "insufficient" if n < 100 else None
        checks = [check("data_drift", c, (0.3 + 0.01 * i) if shifted and c == "monthly_charges"
                        else 0.02 + 0.01 * math.sin(i + k), small or (
                            "drift" if shifted and c == "monthly_charges" else "ok"),
                        statistic="wasserstein" if c in ("tenure", "monthly_charges") else "jsd",
                        p_value=None, n_window=n)
                  for k, c in enumerate(COLUMNS)]
        checks += [
            check("multivariate_drift", "dataset", 0.5 + (0.15 if shifted else 0.01),
                  small or ("drift" if shifted else "ok"), statistic="roc_auc", threshold=0.6,
                  p_value=0.001 if shifted else 0.4, n_window=n),
            check("prediction_drift", "score", 0.03 + (0.05 if shifted else 0), small or "ok",
                  statistic="wasserstein", threshold=0.1, n_window=n),
            check("performance", "roc_auc", 0.84 - (0.12 if i >= 20 else 0), small or (
                "drift" if i >= 20 else "ok"), statistic="roc_auc", threshold=0.75, n_window=n),
        ]
        windows.append(window(i, checks, n=n, version="v2" if i >= 16 else "v1"))
    rules = [AlertRule(name="feature_drift", check="data_drift", severity="info"),
             AlertRule(name="joint_drift", check="multivariate_drift", severity="warning"),
             AlertRule(name="auc_low", check="performance", target="roc_auc", threshold=0.75,
                       when="below", severity="critical", min_window=100)]
    return {"bundle_version": "v2", "windows": windows,
            "alerts": evaluate_rules(windows, rules)}


def test_the_page_renders_offline_in_chromium_with_its_sections_and_alerts(tmp_path) -> None:
    results = sample_results()
    page = tmp_path / "dashboard.html"
    page.write_text(render(results))
    with Chromium(tmp_path / "profile") as browser:
        visit = browser.visit(page.as_uri())
    assert visit.requests == [page.as_uri()], visit.requests  # nothing else was fetched
    for name in ("data_drift", "multivariate_drift", "prediction_drift", "performance"):
        assert f'id="check-{name}"' in visit.dom
    assert visit.dom.count('<figure class="chart"') == len(COLUMNS) + 3
    # 11 + 11 + 3 alerts (windows 12-22 drift, 20-22 low AUC): one row per rule and target
    assert len(results["alerts"]) == 25 and "Alerts (25)" in visit.dom
    assert visit.dom.count('<tr class="alert">') == 3
    assert "12–22 (11)" in visit.dom and "20–22 (3)" in visit.dom
    # the drifting column is drawn first in its section, and its alert is flagged
    drift_section = visit.dom.split('id="check-data_drift"')[1].split("</section>")[0]
    assert drift_section.index('data-target="monthly_charges"') < drift_section.index(
        'data-target="tenure"')

    (tmp_path / "dashboard.png").write_bytes(visit.screenshot)
    image = Image.open(io.BytesIO(visit.screenshot)).convert("RGB")
    assert image.width >= 1000 and image.height >= 900
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 100  # text, charts and badges, not a blank page
    drift_red = sum(n for n, (r, g, b) in colors if r > 180 and g < 90 and b < 90)
    assert drift_red > 200  # drift points, the threshold lines and the critical badges


def test_the_request_recorder_sees_a_page_that_fetches(tmp_path) -> None:
    """The control: the same harness catches a page that does fetch (so an empty list above
    means the dashboard fetched nothing, not that nothing was recorded)."""
    page = tmp_path / "leaky.html"
    page.write_text('<html><body><img src="http://127.0.0.1:9/pixel.png">'
                    '<link rel="stylesheet" href="https://cdn.invalid/x.css"></body></html>')
    with Chromium(tmp_path / "profile") as browser:
        visit = browser.visit(page.as_uri())
    assert "http://127.0.0.1:9/pixel.png" in visit.requests
    assert "https://cdn.invalid/x.css" in visit.requests


def test_text_is_escaped_and_an_empty_run_still_renders() -> None:
    hostile = window(0, [check("data_drift", "<script>alert(1)</script>", 0.5, "drift")])
    page = render({"windows": [hostile], "alerts": evaluate_rules(
        [hostile], [AlertRule(name="d", check="data_drift", severity="warning")])})
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<script" not in render(sample_results())  # no script at all: nothing to fetch
    empty = render({"windows": [], "alerts": []})
    assert "No windows were judged" in empty and "None fired" in empty
