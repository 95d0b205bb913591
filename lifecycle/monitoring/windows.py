"""Cutting the registry into windows: by count (every `size` answers) or by time (`every`).

Windows never mix model versions: each is judged against the bundle that served it, so rows of
other versions are set aside (and counted) before cutting.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass
class Window:
    index: int
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    rows: pd.DataFrame
    model_version: str

    def header(self) -> dict:
        def iso(t):
            return None if t is None or pd.isna(t) else pd.Timestamp(t).isoformat()

        return {"index": self.index, "start": iso(self.start), "end": iso(self.end),
                "n": len(self.rows), "model_version": self.model_version}


def cut(rows: pd.DataFrame, by: str, size: int, every: str, version: str) -> list[Window]:
    """Windows of `rows` (sorted by created_at) served by `version`."""
    rows = rows[rows["model_version"] == version]
    if by == "count":
        parts = [rows.iloc[i:i + size] for i in range(0, len(rows), size)]
    else:
        times = pd.to_datetime(rows["created_at"], utc=True)
        parts = [part for _, part in rows.groupby(times.dt.floor(every), sort=True)]
    out = []
    for i, part in enumerate(parts):
        times = pd.to_datetime(part["created_at"], utc=True)
        out.append(Window(i, times.min() if len(part) else None,
                          times.max() if len(part) else None,
                          part.reset_index(drop=True), version))
    return out
