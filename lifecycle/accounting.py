"""Row accounting: every stage says where each of its input rows went."""

from __future__ import annotations

from collections import Counter


def row_report(rows_in: int, rows_out: int, dropped: Counter | dict, **extra) -> dict:
    """The `rows_in / rows_out / rows_dropped` block of a stage's metrics, checked to add up."""
    dropped = {reason: int(n) for reason, n in sorted(dict(dropped).items()) if n}
    if rows_in != rows_out + sum(dropped.values()):
        raise AssertionError(
            f"row accounting broken: {rows_in} in != {rows_out} out + {sum(dropped.values())} "
            f"dropped {dropped}"
        )
    return {"rows_in": int(rows_in), "rows_out": int(rows_out), "rows_dropped": dropped, **extra}
