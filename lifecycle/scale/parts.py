"""The partitions of a Parquet table and the per-partition work on them, wherever it runs:

- `InProcess` (the pandas engine): one partition in memory at a time, in this process; each
  output streamed into its file (`io.FrameWriter`), so memory is bounded by a partition and a
  row group, not by the table;
- `OnCluster` (the dask engine): the partitions on a Dask cluster's workers.

The stages' per-partition functions and their decisions across partitions are written once
(lifecycle/scale/<stage>.py) against these two, so both engines run the same code. A
per-partition function takes the partition first, then (with `each`) its own item of a
per-partition list, then the shared arguments."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

from lifecycle.scale import EngineParams
from lifecycle.scale import io as sio


def offsets(parts: list[sio.Slice]) -> np.ndarray:
    """Where each partition starts in the whole table, and the total at the end."""
    return np.concatenate([[0], np.cumsum([p.stop - p.start for p in parts], dtype="int64")])


class InProcess:
    """A Parquet table's partitions, read and processed one at a time in this process."""

    def __init__(self, url: str, partition_rows: int):
        self.slices = sio.slices(url, partition_rows)
        self.starts = offsets(self.slices)
        self._only = None   # a table of one partition is read once, not once per pass

    def __len__(self) -> int:
        return len(self.slices)

    def read(self, i: int, columns: list[str] | None = None) -> pd.DataFrame:
        if len(self.slices) > 1:
            return sio.read_slice(self.slices[i], columns)
        if self._only is None:
            self._only = sio.read_slice(self.slices[0])
        return self._only[columns] if columns is not None else self._only

    def _calls(self, fn: Callable, args: tuple, each, columns) -> Iterator:
        for i in range(len(self.slices)):
            own = () if each is None else (each[i],)
            yield fn(self.read(i, columns), *own, *args)

    def map(self, fn: Callable, *args, each: list | None = None,
            columns: list[str] | None = None) -> list:
        """`fn` on every partition (only `columns` read, when given); its results, in order."""
        return list(self._calls(fn, args, each, columns))

    def frame(self, fn: Callable, *args, meta=None, columns: list[str] | None = None):
        """The frames `fn` makes of every partition, as one frame."""
        return pd.concat(self.map(fn, *args, columns=columns), ignore_index=True)

    @staticmethod
    def compute(value):
        return value

    def write(self, fn: Callable, paths: list, *args, each: list | None = None) -> list:
        """`fn` on every partition returns (frames, small): frame k goes to paths[k] (one
        Parquet file each, the bytes `lifecycle.io.write_parquet` gives the whole table);
        returns the smalls, in order."""
        writers = [sio.FrameWriter(path) for path in paths]
        smalls = []
        for frames, small in self._calls(fn, args, each, None):
            for writer, frame in zip(writers, frames, strict=True):
                writer.add(frame)
            smalls.append(small)
        for writer in writers:
            writer.close()
        return smalls


class OnCluster:
    """A Parquet table's partitions on a Dask cluster: the same calls as `InProcess`."""

    def __init__(self, url: str, partition_rows: int, client):
        self.slices = sio.slices(url, partition_rows)
        self.starts = offsets(self.slices)
        self.ddf, self.client = sio.read(url, partition_rows), client

    def __len__(self) -> int:
        return len(self.slices)

    def _tasks(self, fn: Callable, args: tuple, each, columns) -> list:
        from dask import delayed

        ddf = self.ddf[columns] if columns is not None else self.ddf
        own = [()] * len(self.slices) if each is None else \
            [(self.client.scatter(item, hash=False),) for item in each]
        return [delayed(fn)(part, *mine, *args)
                for part, mine in zip(ddf.to_delayed(), own, strict=True)]

    def map(self, fn: Callable, *args, each: list | None = None,
            columns: list[str] | None = None) -> list:
        return self.client.compute(self._tasks(fn, args, each, columns), sync=True)

    def frame(self, fn: Callable, *args, meta=None, columns: list[str] | None = None):
        """A Dask DataFrame of what `fn` makes of each partition (reduce it, then `compute`)."""
        ddf = self.ddf[columns] if columns is not None else self.ddf
        return ddf.map_partitions(fn, *args, meta=fn(ddf._meta, *args) if meta is None else meta)

    @staticmethod
    def compute(value):
        return value.compute()

    def write(self, fn: Callable, paths: list, *args, each: list | None = None) -> list:
        import dask.dataframe as dd
        from dask import delayed

        done = self.client.persist(self._tasks(fn, args, each, None))  # each partition once
        for k, path in enumerate(paths):
            frames = [delayed(_frame)(d, k) for d in done]
            sio.write_file(dd.from_delayed(frames, verify_meta=False), path, self.client)
        return self.client.compute([delayed(_small)(d) for d in done], sync=True)


def _frame(result: tuple, k: int) -> pd.DataFrame:
    return result[0][k]


def _small(result: tuple):
    return result[1]


@contextmanager
def opened(engine: EngineParams) -> Iterator[Callable[[str], InProcess | OnCluster]]:
    """For the stage's lifetime: a function giving the partitions of a Parquet table on the
    engine's runner (a cluster connected once, shut down after)."""
    if engine.kind != "dask":
        yield lambda url: InProcess(str(url), engine.partition_rows)
        return
    from lifecycle.scale import cluster

    with cluster.connect(engine) as client:
        yield lambda url: OnCluster(str(url), engine.partition_rows, client)
