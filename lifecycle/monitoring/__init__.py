"""Monitoring: judge windows of the inference registry against the bundle, alert, show.

The result format (windows of CheckResults, and Alerts) is shared by the checks, the alerts
(`alerts`) and the dashboard (`dashboard`); see docs/monitoring.md.
"""
