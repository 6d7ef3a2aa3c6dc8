"""Input readers: stream a blob's bytes into records, one per line or row, never holding the file whole."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from shared.domain.errors import InvalidInput, InvalidRecord

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
                raise _line_too_long(max_line_bytes)
            yield bytes(pending[start:end])
            start = end + 1
        del pending[:start]
        if len(pending) > max_line_bytes:
            raise _line_too_long(max_line_bytes)
    if first and pending.startswith(UTF8_BOM):
        del pending[:3]
    if pending:
        yield bytes(pending)


def _line_too_long(limit: int) -> InvalidInput:
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


def _decoded_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    for raw in iter_lines(chunks):
        try:
            yield raw.decode("utf-8-sig").rstrip("\r")
        except UnicodeDecodeError as err:
            raise InvalidInput(f"the CSV file is not valid UTF-8: {err}", code="BadEncoding") from err


def read_csv(
    chunks: Iterable[bytes],
    *,
    first_index: int = 0,
    first_line: int = 1,
    header: list[str] | None = None,
    **_: Any,
) -> Iterator[Record]:
    """A header row (or the given `header`, for a shard that starts mid-file), then one record per row.

    A row of the wrong width is an error record. Indices count data lines, as in read_jsonl.
    """
    rows = csv.reader(_decoded_lines(chunks))
    data_start = first_line
    if header is None:
        try:
            header = next(rows)
        except StopIteration:
            return
        except csv.Error as err:
            raise InvalidInput(f"the CSV header row is malformed: {err}", code="BadCsvHeader") from err
        header = [name.strip() for name in header]
        if not any(header) or len(set(header)) != len(header):
            raise InvalidInput("the CSV header row must name every column once", code="BadCsvHeader")
        data_start = first_line + 1
    while True:
        line = first_line + rows.line_num
        index = first_index + line - data_start
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as err:
            yield Record(index, line, error=InvalidRecord(f"malformed CSV row: {err}"))
            continue
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield Record(index, line, error=InvalidRecord(f"the row has {len(row)} fields, the header {len(header)}"))
        else:
            yield Record(index, line, dict(zip(header, row, strict=True)))


def header_of_csv(first_bytes: bytes) -> list[str]:
    """The header of a CSV file from its first bytes (used to give later shards their column names)."""
    text = first_bytes.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r")
    return [name.strip() for name in next(csv.reader(io.StringIO(text)))]


READERS: dict[str, Any] = {".jsonl": read_jsonl, ".csv": read_csv, ".txt": read_text}


def reader_for(file_type: str) -> Any:
    """The reader for a file type, called as reader(chunks, first_index=, first_line=, header=, source_name=)."""
    from shared.inference import images  # images and archives: read whole, entry by entry

    try:
        return {**READERS, **images.READERS}[file_type]
    except KeyError:
        raise InvalidInput(f"no reader for {file_type!r} files", code="UnsupportedFileType") from None
