"""Sending request events: one event per record, field `data` = the record as JSON, added with
pipelined XADD (one round trip per chunk, not per event)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from lifecycle.events.worker import DATA


def payloads_of(records: Iterable[dict]) -> Iterator[bytes]:
    """JSON payloads of records; NaN (a missing value in a DataFrame) becomes null."""
    for record in records:
        yield orjson.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                            for k, v in record.items()},
                           option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NAIVE_UTC)


def add(client, stream: str, payloads: Iterable[bytes], chunk: int = 1000) -> list[str]:
    """XADD each payload to `stream`; returns the event ids, in order."""
    ids: list[str] = []
    pipe = client.pipeline(transaction=False)
    for payload in payloads:
        pipe.xadd(stream, {DATA: payload})
        if len(pipe) >= chunk:
            ids += [i.decode() for i in pipe.execute()]
    if len(pipe):
        ids += [i.decode() for i in pipe.execute()]
    return ids


def produce_file(client, stream: str, path: str | Path, bundle: str | Path | None) -> int:
    """Send every row of a CSV/Parquet/JSON Lines file; with `bundle`, only the columns its
    signature names (and the contract's id). Returns the number of events sent."""
    import json

    from lifecycle.serving.batch import read_chunks
    from lifecycle.serving.schema import signature_fields

    keep = None
    if bundle:
        signature = json.loads((Path(bundle) / "signature.json").read_text())
        keep = [f["name"] for f in signature_fields(signature)]
    sent = 0
    for chunk in read_chunks(path, 10_000):
        if keep is not None:
            chunk = chunk[[c for c in keep if c in chunk.columns]]
        chunk = chunk.astype(object).where(chunk.notna(), None)
        sent += len(add(client, stream, payloads_of(chunk.to_dict("records"))))
    return sent
