"""Input readers: stream a blob's bytes into records, one per line or row, never holding the file whole."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from shared.domain.errors import InvalidInput, InvalidRecord

if TYPE_CHECKING:
    from _csv import Reader

MAX_LINE_BYTES = 4 * 1024 * 1024
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Record:
    """One record of an input file: its index among records, its 1-based line, and its value or error."""

    index: int
    line: int
    value: Any = None
    error: InvalidRecord | None = None

    @property
    def record_id(self) -> str | None:
        if isinstance(self.value, dict):
            rid = self.value.get("id")
            return None if rid is None else str(rid)
        return None


def iter_lines(chunks: Iterable[bytes], *, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """Splits a byte stream at newlines (a final line without one included); refuses a line over the limit."""
    pending = bytearray()
    first = True
    for chunk in chunks:
        pending += chunk
        if first and len(pending) >= 3:
            if pending.startswith(UTF8_BOM):  # files saved by Notepad and PowerShell start with one
                del pending[:3]
            first = False
        start = 0
        while True:
            end = pending.find(b"\n", start)
            if end < 0:
                break
            if end - start > max_line_bytes:
                raise line_too_long(max_line_bytes)
            yield bytes(pending[start:end])
            start = end + 1
        del pending[:start]
        if len(pending) > max_line_bytes:
            raise line_too_long(max_line_bytes)
    if first and pending.startswith(UTF8_BOM):
        del pending[:3]
    if pending:
        yield bytes(pending)


def line_too_long(limit: int) -> InvalidInput:
    return InvalidInput(
        f"a line is longer than {limit} bytes; split the input into one record per line", code="LineTooLong"
    )


def read_jsonl(chunks: Iterable[bytes], *, first_index: int = 0, first_line: int = 1, **_: Any) -> Iterator[Record]:
    """One JSON object per line; a broken line is an error record, not a failure.

    A record's index is its line's position in the file (blank lines are skipped and leave a gap), so a
    shard that starts mid-file knows its records' indices without counting anyone else's.
    """
    for offset, raw in enumerate(iter_lines(chunks)):
        if not raw.strip():
            continue
        index, line = first_index + offset, first_line + offset
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            yield Record(index, line, error=InvalidRecord(f"not valid JSON: {err}"))
            continue
        if isinstance(value, dict):
            yield Record(index, line, value)
        else:
            yield Record(index, line, error=InvalidRecord("a JSONL record must be a JSON object"))


def read_text(chunks: Iterable[bytes], *, first_index: int = 0, first_line: int = 1, **_: Any) -> Iterator[Record]:
    """One text per line, as {"text": ...}; blank lines are skipped (indices as in read_jsonl)."""
    for offset, raw in enumerate(iter_lines(chunks)):
        index, line = first_index + offset, first_line + offset
        try:
            text = raw.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as err:
            yield Record(index, line, error=InvalidRecord(f"not valid UTF-8: {err}"))
            continue
        if text.strip():
            yield Record(index, line, {"text": text})


# A CSV record is held whole while it is parsed (its quoted fields may span lines), so it is bounded like a line.
MAX_RECORD_BYTES = MAX_LINE_BYTES


def record_too_long() -> InvalidInput:
    return InvalidInput(
        f"a CSV record is longer than {MAX_RECORD_BYTES} bytes (a quoted field that never closes?)",
        code="RecordTooLong",
    )


def csv_lines(chunks: Iterable[bytes], *, strip_bom: bool = True, budget: list[int] | None = None) -> Iterator[str]:
    """The stream as decoded lines that keep their newline, as csv.reader wants them (RFC 4180 quoted fields
    keep their line breaks); refuses a line over MAX_LINE_BYTES, and a record once `budget[0]` bytes are spent.

    The BOM is stripped only at the start of the file (`strip_bom`): a later shard's first byte is data.
    """
    pending = bytearray()
    at_start = strip_bom
    for chunk in chunks:
        pending += chunk
        if at_start and len(pending) >= 3:
            if pending.startswith(UTF8_BOM):
                del pending[:3]
            at_start = False
        start = 0
        while True:
            end = pending.find(b"\n", start)
            if end < 0:
                break
            if end - start > MAX_LINE_BYTES:
                raise line_too_long(MAX_LINE_BYTES)
            yield _decoded(pending, start, end + 1, budget)
            start = end + 1
        del pending[:start]
        if len(pending) > MAX_LINE_BYTES:
            raise line_too_long(MAX_LINE_BYTES)
    if at_start and pending.startswith(UTF8_BOM):
        del pending[:3]
    if pending:
        yield _decoded(pending, 0, len(pending), budget)


def _decoded(buffer: bytearray, start: int, end: int, budget: list[int] | None) -> str:
    if budget is not None:
        budget[0] -= end - start
        if budget[0] < 0:
            raise record_too_long()
    try:
        return buffer[start:end].decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidInput(f"the CSV file is not valid UTF-8: {err}", code="BadEncoding") from err


def csv_rows(lines: Iterable[str]) -> Reader:
    """csv.reader as every part of the platform reads CSV: RFC 4180 quoting, strictly (a quote that closes a field
    must be followed by a comma or the line end; the lenient default would glue `"a"b` into `ab` unnoticed)."""
    return csv.reader(lines, strict=True)


def _csv_problem(err: csv.Error) -> str:
    text = str(err)
    if "unexpected end of data" in text:
        return "a quoted field is never closed: the quote opened in this record runs to the end of the file"
    if "field larger than field limit" in text:
        return f"a field is longer than {csv.field_size_limit()} characters (a quoted field that never closes?)"
    if "expected after" in text:
        return "malformed CSV row: a closing quote must be followed by a comma or the end of the line"
    if "new-line character seen in unquoted field" in text:
        return "malformed CSV row: a carriage return inside an unquoted field (quote the field)"
    return f"malformed CSV row: {text}"


def read_csv(
    chunks: Iterable[bytes],
    *,
    first_index: int = 0,
    first_line: int = 1,
    header: list[str] | None = None,
    **_: Any,
) -> Iterator[Record]:
    """A header row (or the given `header`, for a shard that starts mid-file), then one record per row.

    Rows are RFC 4180: a quoted field may hold commas, quotes ("") and newlines, so a record can span lines.
    A record's index counts the rows before it (a blank row is skipped and leaves a gap, as in read_jsonl);
    its line is the physical line where it starts. A row of the wrong width, or one that is not valid CSV
    (an unterminated quote, say), is an error record; reading goes on at the next line.
    """
    budget = [MAX_RECORD_BYTES]
    rows = csv_rows(csv_lines(chunks, strip_bom=first_line == 1, budget=budget))
    if header is None:
        try:
            header = next(rows)
        except StopIteration:
            return
        except csv.Error as err:
            raise InvalidInput(f"the CSV header row is malformed: {_csv_problem(err)}", code="BadCsvHeader") from err
        header = [name.strip() for name in header]
        if not any(header) or len(set(header)) != len(header):
            raise InvalidInput("the CSV header row must name every column once", code="BadCsvHeader")
    width = len(header)
    index = first_index
    while True:
        line = first_line + rows.line_num
        budget[0] = MAX_RECORD_BYTES
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as err:
            yield Record(index, line, error=InvalidRecord(_csv_problem(err)))
            index += 1
            continue
        if not row or not any(cell.strip() for cell in row):
            index += 1
            continue
        if len(row) != width:
            yield Record(index, line, error=InvalidRecord(f"the row has {len(row)} fields, the header {width}"))
        else:
            yield Record(index, line, dict(zip(header, row, strict=True)))
        index += 1


def header_of_csv(first_bytes: bytes) -> list[str]:
    """The header of a CSV file from its first bytes (used to give later shards their column names)."""
    try:
        header = next(csv_rows(csv_lines([first_bytes])))
    except (StopIteration, csv.Error) as err:
        raise InvalidInput("the CSV header row is malformed", code="BadCsvHeader") from err
    return [name.strip() for name in header]


READERS: dict[str, Any] = {".jsonl": read_jsonl, ".csv": read_csv, ".txt": read_text}


def reader_for(file_type: str) -> Any:
    """The reader for a file type, called as reader(chunks, first_index=, first_line=, header=, source_name=)."""
    from shared.inference import images  # images and archives: read whole, entry by entry

    try:
        return {**READERS, **images.READERS}[file_type]
    except KeyError:
        raise InvalidInput(f"no reader for {file_type!r} files", code="UnsupportedFileType") from None
