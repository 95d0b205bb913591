"""Where the Dask work runs: a scheduler named in params or the environment, else a
`LocalCluster` of worker processes on this machine."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from lifecycle.scale import EngineParams

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"


def configure() -> None:
    """Dask settings the engine's equality with pandas depends on, for this process and the
    worker processes it starts: text columns keep pandas' own dtypes (dask would turn them
    into pyarrow strings)."""
    import dask

    os.environ["DASK_DATAFRAME__CONVERT_STRING"] = "False"
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")   # a stage logs one line
    dask.config.set({"dataframe.convert-string": False})
    logging.getLogger("distributed").setLevel(logging.WARNING)


@contextmanager
def connect(p: EngineParams) -> Iterator:
    """A `distributed.Client` for the stage's lifetime; a local cluster is shut down after.
    A task failing on a worker (unreadable S3 object, lost worker) ends the stage with one
    line naming it, as any stage error does."""
    from distributed import Client, LocalCluster

    from lifecycle.errors import ParamsError, StageError

    configure()
    address = p.scheduler or os.environ.get(SCHEDULER_ENV)
    try:
        if address:
            with Client(address) as client:
                yield client
            return
        with LocalCluster(n_workers=p.workers, threads_per_worker=p.threads_per_worker,
                          processes=True, memory_limit=p.memory_per_worker,
                          dashboard_address=":0", host="127.0.0.1") as cluster, \
                Client(cluster) as client:
            yield client
    except (StageError, ParamsError, FileNotFoundError, AssertionError):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a worker raised, said in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StageError(f"dask engine ({address or 'LocalCluster'}): "
                         f"{type(exc).__name__}: {first[:300]}") from exc
