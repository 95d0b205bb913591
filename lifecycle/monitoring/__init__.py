"""Monitoring: windows of the inference registry judged against the bundle that served them.

One concern per module: `source` (the registry export), `windows` (cutting it), `reference`
(what the bundle carries for monitoring), `checks` (the registry of checks: `drift`,
`multivariate`, `quality`, `performance`), `result` (the CheckResult format), `run` (a
monitoring run: windows x checks, metrics, plots), `simulate` (the traffic simulator); `alerts`
and `dashboard` turn results into alerts and a page (docs/monitoring.md: the result format).
"""
