"""Property tests of the readers: any bytes, cut anywhere, give records or the declared input error, nothing else."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.errors import InvalidInput
from shared.inference.readers import header_of_csv, iter_lines, read_csv, read_jsonl, read_text
from shared.services.planning import plan_shards


def _chunked(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(points):
        yield data[start:end]


def _drain(reader: Callable[..., Any], data: bytes, cuts: list[int]) -> list[Any]:
    try:
        return list(reader(_chunked(data, cuts)))
    except InvalidInput:  # the one error a reader may raise: the whole file is unreadable
        return []


json_line = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
).map(lambda v: orjson.dumps(v))
noisy_bytes = st.binary(max_size=400)
cuts = st.lists(st.integers(min_value=0, max_value=500), max_size=12)


@settings(max_examples=300, deadline=None)
@given(data=noisy_bytes, cuts=cuts)
def test_any_bytes_give_records_or_the_declared_error(data: bytes, cuts: list[int]) -> None:
    for reader in (read_jsonl, read_text, read_csv):
        records = _drain(reader, data, cuts)
        indices = [r.index for r in records]
        assert indices == sorted(set(indices)), "indices only go up, never repeat"
        for record in records:
            assert (record.value is None) != (record.error is None)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(json_line, max_size=30), cuts=cuts)
def test_jsonl_records_do_not_depend_on_how_the_stream_is_cut(lines: list[bytes], cuts: list[int]) -> None:
    data = b"\n".join(lines) + b"\n"
    whole = [(r.index, r.line, r.value, r.error is None) for r in read_jsonl([data])]
    pieces = [(r.index, r.line, r.value, r.error is None) for r in read_jsonl(_chunked(data, cuts))]
    assert whole == pieces
    objects = [orjson.loads(line) for line in lines]
    assert [value for _, _, value, ok in whole if ok] == [o for o in objects if isinstance(o, dict)]
    assert len(whole) == len(lines)


@settings(max_examples=200, deadline=None)
@given(data=noisy_bytes, cuts=cuts)
def test_iter_lines_loses_no_byte(data: bytes, cuts: list[int]) -> None:
    try:
        lines = list(iter_lines(_chunked(data, cuts), max_line_bytes=10_000))
    except InvalidInput:
        return
    expected = data.removeprefix(b"\xef\xbb\xbf")
    assert b"\n".join(lines) == expected.removesuffix(b"\n")


@settings(max_examples=100, deadline=None)
@given(
    header=st.lists(st.text("abcxyz", min_size=1, max_size=5), min_size=1, max_size=5, unique=True),
    rows=st.lists(st.lists(st.text('0123456789.," \n', max_size=6), min_size=1, max_size=6), max_size=20),
    cuts=cuts,
)
def test_csv_rows_match_the_header_or_are_error_records(
    header: list[str], rows: list[list[str]], cuts: list[int]
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode()
    for record in read_csv(_chunked(data, cuts)):
        if record.error is None:
            assert list(record.value) == header


def _read_in_shards(data: bytes, shard_bytes: int, cuts: list[int]) -> list[tuple[int, int, Any, str | None]]:
    """Plans the file as the worker's planner does, reads each shard as a worker would (a later shard gets the
    header from the file's first bytes), each stream cut at `cuts`; every record of every shard, in order."""
    plan = plan_shards(_chunked(data, cuts), shard_bytes, ".csv", len(data))
    assert [start for start, *_ in plan] == sorted({start for start, *_ in plan}), "shards do not overlap"
    assert plan[-1][1] == len(data) and all(a[1] == b[0] for a, b in itertools.pairwise(plan)), "nothing is left out"
    records = []
    for start, end, first_index, first_line in plan:
        header = header_of_csv(data[:65536]) if start > 0 else None
        shard = read_csv(_chunked(data[start:end], cuts), first_index=first_index, first_line=first_line, header=header)
        records += [(r.index, r.line, r.value, r.error and r.error.message) for r in shard]
    return records


# Cells full of what makes CSV hard: separators, quotes and line breaks of both kinds.
csv_cell = st.lists(st.sampled_from(["a", "b", " ", ",", '"', "\n", "\r\n", "é", "1"]), max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    header=st.lists(st.text("abcxyz", min_size=1, max_size=5), min_size=1, max_size=4, unique=True),
    rows=st.lists(st.lists(csv_cell, min_size=1, max_size=5), max_size=25),
    terminator=st.sampled_from(["\n", "\r\n"]),
    shard_bytes=st.integers(min_value=1, max_value=300),
    cuts=cuts,
)
def test_csv_with_quoted_newlines_in_shards_of_any_size_gives_exactly_the_csv_modules_records(
    header: list[str], rows: list[list[str]], terminator: str, shard_bytes: int, cuts: list[int]
) -> None:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=terminator).writerows([header, *rows])
    text = buffer.getvalue()
    expected = []
    reference = csv.reader(io.StringIO(text, newline=""))
    next(reference)
    for index, row in enumerate(iter(lambda: next(reference, None), None)):
        line = reference.line_num - sum(cell.count("\n") for cell in row)  # where the row started
        if any(cell.strip() for cell in row):  # a row of blank cells is skipped, as a blank line
            value = dict(zip(header, row, strict=True)) if len(row) == len(header) else None
            expected.append((index, line, value))

    records = _read_in_shards(text.encode(), shard_bytes, cuts)

    assert [(index, line, value) for index, line, value, _ in records] == expected


@settings(max_examples=500, deadline=None)
@given(
    data=st.lists(st.sampled_from([b"a", b",", b'"', b"\n", b"\r\n", b"\r", b" ", b"1", b'""']), max_size=120).map(
        b"".join
    ),
    shard_bytes=st.integers(min_value=1, max_value=100),
    cuts=cuts,
)
def test_any_csv_bytes_in_shards_give_the_same_records_and_errors_as_the_whole_file(
    data: bytes, shard_bytes: int, cuts: list[int]
) -> None:
    """Broken CSV too (stray quotes, unterminated fields, carriage returns): shards never change what is read."""
    try:
        whole = [(r.index, r.line, r.value, r.error and r.error.message) for r in read_csv([data])]
    except InvalidInput as err:
        with pytest.raises(InvalidInput) as raised:
            _read_in_shards(data, shard_bytes, cuts)
        assert raised.value.code == err.code
        return

    assert _read_in_shards(data, shard_bytes, cuts) == whole
    indices = [index for index, *_ in whole]
    assert indices == sorted(set(indices))
