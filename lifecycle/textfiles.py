"""Reading CSV and JSON Lines files strictly, one physical line at a time.

Every value is kept as the text the file holds (numbers, ids and dates are typed later, by the
contract), so `0000001` stays `0000001` and `99999999999999999999` is never squeezed into an
int64 here. Every data line is accounted for: it becomes a row, or a rejected line with the file,
line number and reason (`data_lines == rows + rejected`). A quoted value never runs onto the next
line: an unclosed quote costs its own line, never the lines after it.

Rejection reasons (the part before ":" is what the manifest counts):
  unclosed_quote, bad_quoting, field_count, repeated_header (CSV), not_json, not_an_object,
  duplicate_key (JSON Lines),
  not_<encoding> (bytes that do not decode), no_line_end (the file's last line has no line end:
  the file may have been cut mid-row).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lifecycle.errors import StageError, clip

CHUNK_ROWS = 100_000   # JSON rows held as Python objects at once; each chunk becomes Arrow
BLOCK_LINES = 200_000  # CSV lines parsed by pyarrow at once
MAX_NAME = 128         # longest column name accepted in a header


class _Number(str):
    """A JSON number, kept as its source text."""


class _DuplicateKey(ValueError):
    """A JSON object naming one key twice: which value is meant cannot be told."""


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) < len(pairs):
        seen = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


@dataclass
class TextRead:
    """What one file gave: its rows as text, the lines it rejected, and the line counts."""

    frame: pd.DataFrame
    rejected: list[dict] = field(default_factory=list)   # {file, line, reason, text}
    lines: Counter = field(default_factory=Counter)      # data_lines, rows, rejected, blank


def read_csv(path: Path, encoding: str = "utf-8", delimiter: str = ",") -> TextRead:
    """A CSV file with a header line; each data line must have the header's field count.

    Each line is checked in Python (cheap byte tests for the common case: ASCII, no quote, the
    right number of delimiters); the lines that pass are parsed into Arrow strings by pyarrow in
    blocks, which cannot run a value across lines because every line it sees is whole."""
    import pyarrow as pa

    header, width, header_line, good, tables = None, 0, b"", [], []
    out = _Collector(path, None)
    sep = delimiter.encode()
    with open(path, "rb") as f:
        offset = 0
        for number, raw in enumerate(f, start=1):
            ended = raw.endswith(b"\n")
            body = raw.rstrip(b"\r\n") if ended else raw
            if header is not None and ended and body.count(sep) == width - 1 and \
                    body.isascii() and b'"' not in body and b"\r" not in body \
                    and body != header_line:
                good.append(body)   # the common case: nothing to judge
                if len(good) >= BLOCK_LINES:
                    tables.append(_parse_block(good, header, delimiter))
                    good = []
                offset += len(raw)
                continue
            text, problem = _decode(body, encoding, number, offset)
            offset += len(raw)
            if header is None:
                if problem:
                    raise StageError(f"{path}: header line {number}: {problem}")
                if text.strip():
                    header = _header(path, number, text.removeprefix("\ufeff"), delimiter)
                    width, header_line = len(header), text.removeprefix("\ufeff").encode()
                continue
            fields, reason = ([], problem) if problem else \
                _line_problem(text, ended, delimiter, header)
            if reason == "blank":
                out.lines["blank"] += 1
            elif reason:
                out.reject(number, reason, text)
            else:   # written again the one way pyarrow reads it the same (UTF-8, minimal quotes)
                good.append(_csv_line(fields, delimiter).encode())
    if header is None:
        raise StageError(f"{path}: no header line (the file is empty)")
    if good:
        tables.append(_parse_block(good, header, delimiter))
    table = pa.concat_tables(tables) if tables else pa.table(
        {name: pa.array([], type=pa.string()) for name in header})
    frame = table.to_pandas(types_mapper=lambda t: pd.StringDtype("pyarrow")
                            if t == pa.string() else None)
    out.lines["rows"] = len(frame)
    out.lines["data_lines"] = out.lines["rows"] + out.lines["rejected"]
    return TextRead(frame, out.rejected, out.lines)


def _decode(body: bytes, encoding: str, number: int, offset: int) -> tuple[str, str | None]:
    """The line as text, and the reason when its bytes are not in `encoding` (with the byte's
    offset in the file, so the user can find it)."""
    try:
        return body.decode(encoding), None
    except UnicodeDecodeError as exc:
        return body.decode(encoding, errors="replace"), (
            f"not_{encoding}: byte 0x{body[exc.start]:02x} at byte offset {offset + exc.start} "
            f"of the file (line {number}, byte {exc.start + 1} of the line)")


def _line_problem(text: str, ended: bool, delimiter: str,
                  header: list[str]) -> tuple[list[str], str | None]:
    """The fields of a CSV data line, or why it is not one well-formed row ("blank" for an
    empty line)."""
    if not text.strip():
        return [], "blank"
    if not ended:
        return [], "no_line_end: the last line has no line end (file cut mid-row?)"
    if "\r" in text:
        return [], "bad_quoting: a carriage return inside the line"
    fields, problem = _fields(text, delimiter)
    if problem:
        return [], problem
    if len(fields) != len(header):
        return [], f"field_count: {len(fields)} fields, the header has {len(header)}"
    if [f.strip() for f in fields] == header:
        return [], "repeated_header: the header line again (files joined together?)"
    return fields, None


def _csv_line(fields: list[str], delimiter: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="").writerow(fields)
    return buffer.getvalue()


def _parse_block(lines: list[bytes], header: list[str], delimiter: str):
    """Whole, well-formed CSV lines (UTF-8) as an Arrow table of strings; "" is null."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    table = pcsv.read_csv(
        io.BytesIO(b"\n".join(lines) + b"\n"),
        read_options=pcsv.ReadOptions(column_names=header, block_size=1 << 24),
        parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
        convert_options=pcsv.ConvertOptions(
            column_types={name: pa.string() for name in header}, null_values=[""],
            strings_can_be_null=True, quoted_strings_can_be_null=True))
    if table.num_rows != len(lines):
        raise AssertionError(f"CSV block: {table.num_rows} rows from {len(lines)} lines")
    return table


def read_jsonl(path: Path, encoding: str = "utf-8") -> TextRead:
    """A JSON Lines file: one object per line. Numbers keep their source text; true/false
    become 'true'/'false'; nested values become their JSON text (the contract judges them)."""
    records, keys = [], {}
    out = _Collector(path, None)
    for number, text, problem, last in _lines(path, encoding):
        if problem:
            out.reject(number, problem, text)
            continue
        if not text.strip():
            out.lines["blank"] += 1
            continue
        try:
            value = json.loads(text, parse_int=_Number, parse_float=_Number,
                               parse_constant=_Number, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateKey as exc:
            out.reject(number, f"duplicate_key: {clip(exc, 40)!r} twice in one object", text)
            continue
        except json.JSONDecodeError as exc:
            reason = "no_line_end: the last line is not complete JSON (file cut mid-row?)" \
                if last else f"not_json: {exc.msg} at column {exc.colno}"
            out.reject(number, reason, text)
            continue
        if not isinstance(value, dict):
            out.reject(number, f"not_an_object: expected a JSON object, got "
                               f"{_json_kind(value)}", text)
            continue
        records.append({k: _json_text(v) for k, v in value.items()})
        keys.update(dict.fromkeys(value))
    out.header = list(keys)
    for record in records:
        out.add([record.get(k) for k in out.header])
    return out.result()


class _Collector:
    """Rows gathered chunk by chunk into Arrow-backed string columns (compact at 10M rows)."""

    def __init__(self, path: Path, header: list[str] | None):
        self.path, self.header = path, header
        self.rows: list[list] = []
        self.chunks: list[pd.DataFrame] = []
        self.rejected: list[dict] = []
        self.lines: Counter = Counter()

    def add(self, row: list) -> None:
        self.rows.append(row)
        self.lines["rows"] += 1
        if len(self.rows) >= CHUNK_ROWS:
            self._flush()

    def reject(self, number: int, reason: str, text: str) -> None:
        self.rejected.append({"file": str(self.path), "line": number, "reason": reason,
                              "text": text[:1000]})
        self.lines["rejected"] += 1

    def _flush(self) -> None:
        if self.rows:
            import pyarrow as pa

            columns = zip(*self.rows, strict=True)
            self.chunks.append(pd.DataFrame(
                {name: pd.arrays.ArrowStringArray(pa.array(values, type=pa.string()))
                 for name, values in zip(self.header, columns, strict=True)}))
            self.rows = []

    def result(self) -> TextRead:
        self._flush()
        empty = pd.DataFrame({name: pd.array([], dtype="string[pyarrow]")
                              for name in self.header or []})
        frame = pd.concat(self.chunks, ignore_index=True) if self.chunks else empty
        self.lines["data_lines"] = self.lines["rows"] + self.lines["rejected"]
        return TextRead(frame, self.rejected, self.lines)


def _lines(path: Path, encoding: str):
    """(line number, text, problem or None, is the last line without a line end) per line."""
    offset = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            ended = raw.endswith(b"\n")
            body = raw.rstrip(b"\r\n") if ended else raw
            text, problem = _decode(body, encoding, number, offset)
            yield number, text.removeprefix("\ufeff") if number == 1 else text, problem, \
                not ended
            offset += len(raw)


def _fields(text: str, delimiter: str) -> tuple[list[str], str | None]:
    """The fields of one CSV line, or the reason it cannot be split into fields."""
    if '"' not in text:
        return text.split(delimiter), None
    if text.count('"') % 2:
        return [], "unclosed_quote: a quote is opened and never closed on this line"
    try:
        return next(csv.reader([text], delimiter=delimiter, strict=True)), None
    except csv.Error as exc:
        return [], f"bad_quoting: {exc}"


def _header(path: Path, number: int, text: str, delimiter: str) -> list[str]:
    fields, problem = _fields(text, delimiter)
    names = [name.strip() for name in fields]
    bad = ("has no names" if not names else
           problem or next((f"an empty column name (column {i + 1})"
                            for i, n in enumerate(names) if not n), None)
           or next((f"a column name longer than {MAX_NAME} characters (column {i + 1})"
                    for i, n in enumerate(names) if len(n) > MAX_NAME), None)
           or next((f"a column name with control characters (column {i + 1})"
                    for i, n in enumerate(names) if not n.isprintable()), None)
           or next((f"the column name {clip(n)!r} twice" for i, n in enumerate(names)
                    if n in names[:i]), None))
    if bad:
        raise StageError(f"{path}: bad header on line {number}: {bad} "
                         f"(header starts {clip(text)!r})")
    return names


def _json_text(value):
    """A JSON value as text: numbers keep their source spelling (parse_int/float=str)."""
    if value is None or isinstance(value, str):
        return None if value is None else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"))


def _json_kind(value) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "null"
    if isinstance(value, _Number):
        return "a number"
    return "a string" if isinstance(value, str) else f"{type(value).__name__}"
