"""The monitoring dashboard: one self-contained HTML page from a monitoring run's results.

Nothing on the page is fetched: the charts are inline SVG drawn here, the style is inline, and
there is no script. So it opens offline, from a CI artifact or an e-mail attachment alike.
One section per check, a small chart per target over the windows (value, threshold, verdict),
and the alerts on top. The input is results.json's format (docs/monitoring.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

# the order the sections appear in, and what each check asks (unknown checks follow, by name)
CHECKS = {
    "data_drift": "Does each input column still look like training? (per-column test, "
                  "effect-size floor, false discoveries controlled across columns)",
    "multivariate_drift": "Can a classifier tell the window's rows from the reference rows? "
                          "(a joint shift with unchanged marginals)",
    "prediction_drift": "Do the model's scores still look like its validation scores?",
    "data_quality": "Rejected requests, nulls, unknown categories and out-of-range values, "
                    "against training.",
    "performance": "Realized metrics from joined feedback, with 95% intervals.",
    "performance_estimate": "Metrics estimated without labels (confidence-based), for windows "
                            "whose outcomes have not arrived.",
    "concept_drift": "Realized performance falls while the label-free estimate holds.",
}
COLORS = {"ok": "#3b7dd8", "drift": "#d63b3b", "insufficient": "#9aa3ad"}
SEVERITY_COLORS = {"critical": "#d63b3b", "warning": "#e08a00", "info": "#3b7dd8"}
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 300, 110, 44, 10, 8, 20  # one chart's box, in px


def render(results: Mapping, title: str = "Model monitoring") -> str:
    """The page for results = {"windows": [...], "alerts": [...], ...}."""
    windows = sorted(results.get("windows", []), key=lambda w: w["index"])
    alerts = list(results.get("alerts", []))
    by_check: dict[str, dict[str, list]] = {}
    for window in windows:
        for result in window["checks"]:
            by_check.setdefault(result["check"], {}).setdefault(result["target"], []).append(
                (window, result))
    order = [c for c in CHECKS if c in by_check] + sorted(set(by_check) - set(CHECKS))
    changes = _version_changes(windows)
    body = [_header(results, windows, alerts, title), _alerts(alerts)]
    body += [_section(check, by_check[check], changes, alerts) for check in order]
    if not windows:
        body.append('<p class="empty">No windows were judged in this run.</p>')
    return PAGE.format(title=escape(title), style=STYLE, body="\n".join(body))


def _header(results: Mapping, windows: list, alerts: list, title: str) -> str:
    versions = sorted({w.get("model_version", "?") for w in windows})
    span = (f"{_day(windows[0]['start'])} to {_day(windows[-1]['end'])}" if windows else "")
    counts = {s: sum(a["severity"] == s for a in alerts) for s in SEVERITY_COLORS}
    badges = " ".join(f'<span class="badge" style="background:{SEVERITY_COLORS[s]}">'
                      f"{n} {s}</span>" for s, n in counts.items() if n)
    facts = [f"{len(windows)} windows", span,
             f"{sum(w.get('n', 0) for w in windows):,} predictions",
             "model " + ", ".join(escape(v) for v in versions) if versions else ""]
    if results.get("bundle_version"):
        facts.append(f"bundle {escape(str(results['bundle_version']))}")
    return (f"<header><h1>{escape(title)}</h1><p>{' · '.join(f for f in facts if f)}</p>"
            f"<p>{badges or '<span class=ok>no alerts</span>'}</p></header>")


def _alerts(alerts: list) -> str:
    """One row per rule and target: the windows it fired in, and its latest message (a shift
    that lasts is one line, not one per window)."""
    if not alerts:
        return '<section id="alerts"><h2>Alerts</h2><p>None fired.</p></section>'
    rank = {s: i for i, s in enumerate(SEVERITY_COLORS)}
    groups: dict[tuple, list] = {}
    for a in alerts:
        groups.setdefault((a["severity"], a["rule"], a["check"], a["target"]), []).append(a)
    rows = "".join(
        f'<tr class="alert"><td><span class="badge" style="background:'
        f'{SEVERITY_COLORS.get(severity, "#666")}">{escape(severity)}</span></td>'
        f"<td>{escape(rule)}</td><td>{escape(check)}</td><td>{escape(target)}</td>"
        f"<td class=nowrap>{_ranges([a['window'] for a in group])} ({len(group)})</td>"
        f"<td>{escape(max(group, key=lambda a: a['window'])['message'])}</td></tr>"
        for (severity, rule, check, target), group in sorted(
            groups.items(), key=lambda g: (rank.get(g[0][0], 9), g[0][1:])))
    return (f'<section id="alerts"><h2>Alerts ({len(alerts)})</h2><table><thead><tr>'
            "<th>severity</th><th>rule</th><th>check</th><th>target</th><th>windows</th>"
            f"<th>latest</th></tr></thead><tbody>{rows}</tbody></table></section>")


def _ranges(indexes: list[int]) -> str:
    """[3, 4, 5, 9] -> "3–5, 9"."""
    out, run = [], []
    for i in sorted(set(indexes)):
        if run and i != run[-1] + 1:
            out.append(run)
            run = []
        run.append(i)
    out.append(run)
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in out)


def _section(check: str, targets: dict[str, list], changes: list, alerts: list) -> str:
    alerted = {(a["check"], a["target"]) for a in alerts}

    def worst_first(item):  # drifting targets on top, then by name
        target, series = item
        return (-sum(r["verdict"] == "drift" for _, r in series), target)

    cards = []
    for target, series in sorted(targets.items(), key=worst_first):
        last = series[-1][1]
        drifts = sum(r["verdict"] == "drift" for _, r in series)
        flag = ' <span class="badge" style="background:#d63b3b">alert</span>' if (
            check, target) in alerted else ""
        cards.append(
            f'<figure class="chart" data-target="{escape(target, quote=True)}">'
            f"<figcaption><b>{escape(target)}</b>{flag}<br><small>{escape(last['statistic'])}"
            f" = {_num(last['value'])} (threshold {_num(last['threshold'])}), "
            f"{drifts} of {len(series)} windows drift</small></figcaption>"
            f"{_chart(series, changes)}</figure>")
    about = escape(CHECKS.get(check, ""))
    return (f'<section class="check" id="check-{escape(check, quote=True)}"><h2>'
            f"{escape(check.replace('_', ' '))}</h2><p class='about'>{about}</p>"
            f'<div class="grid">{"".join(cards)}</div></section>')


def _chart(series: Sequence[tuple[Mapping, Mapping]], changes: list) -> str:
    """Value per window (points coloured by verdict), the threshold dashed, model changes as
    vertical lines; hover a point for its numbers."""
    xs = [w["index"] for w, _ in series]
    values = [float(r["value"]) for _, r in series]
    thresholds = [float(r["threshold"]) for _, r in series if r.get("threshold") is not None]
    lo, hi = min([*values, *thresholds]), max([*values, *thresholds])
    if 0 < lo < hi - lo:  # near zero: show it (distances, rates); far: zoom (an AUC of 0.8)
        lo = 0.0
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    lo, hi = (lo if lo == 0 else lo - pad), hi + pad
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)

    def x(i: float) -> float:
        return PAD_L + (i - x0) / (x1 - x0) * (W - PAD_L - PAD_R)

    def y(v: float) -> float:
        return PAD_T + (hi - v) / (hi - lo) * (H - PAD_T - PAD_B)

    parts = [f'<svg viewBox="0 0 {W} {H}" width="100%" role="img">',
             f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" '
             f'height="{H - PAD_T - PAD_B}" class="plot"/>']
    for tick in (lo, (lo + hi) / 2, hi):
        parts.append(f'<text x="{PAD_L - 4}" y="{y(tick) + 3:.1f}" class="tick" '
                     f'text-anchor="end">{_num(tick)}</text>')
    for i in sorted({x0, x1}):
        parts.append(f'<text x="{x(i):.1f}" y="{H - 5}" class="tick" text-anchor="middle">'
                     f"{i}</text>")
    for index, version in changes:
        if x0 < index <= x1:
            parts.append(f'<line x1="{x(index - 0.5):.1f}" x2="{x(index - 0.5):.1f}" '
                         f'y1="{PAD_T}" y2="{H - PAD_B}" class="version"><title>model '
                         f"{escape(version)} from window {index}</title></line>"
                         f'<text x="{x(index - 0.5) + 2:.1f}" y="{PAD_T + 9}" class="tick">'
                         f"{escape(version[:12])}</text>")
    if thresholds:
        t = thresholds[-1]
        parts.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
                     f'class="threshold"><title>threshold {_num(t)}</title></line>')
    if len(series) > 1:
        path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in zip(xs, values, strict=True))
        parts.append(f'<polyline points="{path}" class="line"/>')
    for (window, result), i, v in zip(series, xs, values, strict=True):
        verdict = result["verdict"]
        p = f", p = {_num(result['p_value'])}" if result.get("p_value") is not None else ""
        tip = (f"window {i} ({_day(window['start'])}): {result['statistic']} = {_num(v)}{p}, "
               f"{verdict}; {result['n_window']} rows vs {result['n_reference']} reference")
        fill = "white" if verdict == "insufficient" else COLORS.get(verdict, "#666")
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{fill}" '
                     f'stroke="{COLORS.get(verdict, "#666")}" class="{escape(verdict)}">'
                     f"<title>{escape(tip)}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def _version_changes(windows: list) -> list[tuple[int, str]]:
    """(first window index, version) wherever the serving model version changes."""
    changes, previous = [], None
    for w in windows:
        version = w.get("model_version")
        if previous is not None and version != previous:
            changes.append((w["index"], str(version)))
        previous = version
    return changes


def _num(value) -> str:
    if value is None:
        return "–"
    value = float(value)
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def _day(iso: str) -> str:
    return escape(str(iso)[:16].replace("T", " "))


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{style}</style></head>
<body>
{body}
<footer>Made by <code>make monitor</code>. Self-contained: no scripts, nothing fetched.
Hover a point for its numbers; dashed: the threshold; grey vertical lines: a new model
version.</footer>
</body></html>
"""

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d232a;
       margin: 0 auto; padding: 24px; max-width: 1280px; background: #f6f7f9; }
header h1 { margin: 0 0 4px; font-size: 24px; }
header p { margin: 4px 0; color: #4a5561; }
section { background: white; border: 1px solid #e1e5ea; border-radius: 8px; padding: 16px;
          margin: 16px 0; }
h2 { margin: 0 0 4px; font-size: 18px; text-transform: capitalize; }
.about { margin: 0 0 12px; color: #4a5561; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(310px, 1fr)); gap: 12px; }
figure.chart { margin: 0; padding: 8px; border: 1px solid #eef0f3; border-radius: 6px; }
figcaption { margin-bottom: 4px; }
figcaption small { color: #4a5561; }
svg .plot { fill: #fafbfc; stroke: #e1e5ea; }
svg .tick { font-size: 10px; fill: #6b7682; }
svg .line { fill: none; stroke: #8fa9c9; stroke-width: 1.5; }
svg .threshold { stroke: #d63b3b; stroke-dasharray: 4 3; stroke-width: 1; }
svg .version { stroke: #9aa3ad; stroke-width: 1; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef0f3;
         vertical-align: top; }
th { color: #4a5561; font-weight: 600; }
.badge { color: white; border-radius: 10px; padding: 1px 8px; font-size: 12px; }
.ok { color: #2f7d32; }
.empty { color: #4a5561; }
.nowrap { white-space: nowrap; }
footer { color: #6b7682; font-size: 12px; margin-top: 24px; }
"""
