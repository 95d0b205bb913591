"""The feedback loop: production labels as training rows, the promotion gate, promotion and
rollback, incremental and online learning, and the loop's command line (docs/feedback.md).

Modules, one concern each:
- production: the registry's labelled answers as source rows for `collect` (`collect.train_on`)
- gate: the statistics (DeLong, paired bootstrap, guardrails) and the decision rule
- judge: challenger vs champion bundles on one labelled window, through the gate
- settings: the `feedback:` params
"""
