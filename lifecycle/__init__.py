"""The library behind the DVC stages: pure functions by lifecycle area.

sources (collect), contract and quality (validate), cleaning (preprocess), splitting (split),
features, models, evaluation, packaging, and later serving and monitoring. Stage scripts in
`stages/` stay thin: read params and inputs, call these, write outputs and metrics.
"""
