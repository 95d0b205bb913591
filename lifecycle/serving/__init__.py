"""Serving the packaged bundle: batch scoring of files, a real-time HTTP API, the inference
registry that records every prediction, and deployment strategies over bundle variants.

Modules: `scoring` (the lean per-record path over ONNX Runtime, sklearn as fallback),
`schema` (request models built from the bundle's signature), `registry` (SQLite/PostgreSQL
store with a group-commit writer), `deploy` (deployment files, routing, GTO versions),
`app` (FastAPI), `batch` (file scoring).
"""
