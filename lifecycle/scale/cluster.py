"""Where the Dask work runs: a scheduler named in params or the environment, else a
`LocalCluster` of worker processes on this machine."""

from __future__ import annotations

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
    dask.config.set({"dataframe.convert-string": False})


@contextmanager
def connect(p: EngineParams) -> Iterator:
    """A `distributed.Client` for the stage's lifetime; a local cluster is shut down after."""
    from distributed import Client, LocalCluster

    configure()
    address = p.scheduler or os.environ.get(SCHEDULER_ENV)
    if address:
        with Client(address) as client:
            yield client
        return
    with LocalCluster(n_workers=p.workers, threads_per_worker=p.threads_per_worker,
                      processes=True, memory_limit=p.memory_per_worker,
                      dashboard_address=":0", host="127.0.0.1") as cluster, \
            Client(cluster) as client:
        yield client
