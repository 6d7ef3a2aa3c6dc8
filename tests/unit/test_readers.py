"""Input readers: records, their line numbers and their errors, however the bytes are chunked."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from shared.domain.errors import InvalidInput
from shared.inference.readers import (
    MAX_LINE_BYTES,
    Record,
    header_of_csv,
    iter_lines,
    read_csv,
    read_jsonl,
    read_text,
    reader_for,
)
from shared.services.planning import plan_shards

BOM = b"\xef\xbb\xbf"


def one_byte_chunks(data: bytes) -> Iterator[bytes]:
    return (data[i : i + 1] for i in range(len(data)))


def chunkings(data: bytes) -> list[list[bytes]]:
    """The same bytes whole, in 1-byte chunks and in 3-byte chunks."""
    return [[data], list(one_byte_chunks(data)), [data[i : i + 3] for i in range(0, len(data), 3)]]


def summary(records: list[Record], *, first_index: int = 0) -> list[tuple[int, object]]:
    """(line, value or "ERROR") per record, after checking the indices: they start at first_index and increase.

    Whether a skipped blank line leaves a gap in the indices is the reader's choice; these tests do not fix it.
    """
    indices = [r.index for r in records]
    assert not indices or indices[0] == first_index, indices
    assert indices == sorted(set(indices)), indices
    return [(r.line, r.value if r.error is None else "ERROR") for r in records]


JSONL = b'{"id": "a", "x": 1}\n\n   \n{"id": "b", "x": "caf\xc3\xa9"}\r\n{"x": 3}'


@pytest.mark.parametrize("chunks", chunkings(JSONL), ids=["whole", "1-byte", "3-byte"])
def test_jsonl_skips_blank_lines_and_numbers_lines_from_one(chunks: list[bytes]) -> None:
    records = list(read_jsonl(chunks))

    assert summary(records) == [
        (1, {"id": "a", "x": 1}),
        (4, {"id": "b", "x": "café"}),
        (5, {"x": 3}),  # the last line has no newline and still counts
    ]
    assert [r.record_id for r in records] == ["a", "b", None]


def test_jsonl_broken_lines_are_error_records_and_the_rest_go_on() -> None:
    data = b'{"ok": 1}\n{"broken": \n[1, 2]\n"text"\n{"id": 7}\n'

    records = list(read_jsonl(one_byte_chunks(data)))

    assert summary(records) == [(1, {"ok": 1}), (2, "ERROR"), (3, "ERROR"), (4, "ERROR"), (5, {"id": 7})]
    assert [r.index for r in records] == [0, 1, 2, 3, 4]  # no blank lines: one index per line
    assert "not valid JSON" in records[1].error.message  # type: ignore[union-attr]
    assert "object" in records[2].error.message  # type: ignore[union-attr]
    assert records[4].record_id == "7"


def test_jsonl_indices_and_lines_continue_from_where_a_shard_starts() -> None:
    records = list(read_jsonl([b'{"a": 1}\n\n{"a": 2}\n'], first_index=100, first_line=41))

    assert summary(records, first_index=100) == [(41, {"a": 1}), (43, {"a": 2})]


def test_jsonl_with_a_utf8_bom_reads_its_first_record() -> None:
    """Windows tools (Notepad, PowerShell's Out-File) start UTF-8 files with a BOM; the first row must not fail."""
    records = list(read_jsonl([BOM + b'{"id": "a"}\n{"id": "b"}\n']))

    assert summary(records) == [(1, {"id": "a"}), (2, {"id": "b"})]


def test_iter_lines_refuses_a_line_over_the_limit_fed_one_byte_at_a_time() -> None:
    data = b"short\n" + b"x" * 50 + b"\nafter\n"

    lines = iter_lines(one_byte_chunks(data), max_line_bytes=20)

    assert next(lines) == b"short"
    with pytest.raises(InvalidInput) as raised:
        list(lines)
    assert raised.value.code == "LineTooLong"


def test_iter_lines_refuses_a_line_over_the_limit_however_it_is_chunked() -> None:
    """The same file must not pass or fail depending on where the storage SDK cut its chunks."""
    data = b"short\n" + b"x" * 50 + b"\nafter\n"

    with pytest.raises(InvalidInput) as raised:
        list(iter_lines([data], max_line_bytes=20))
    assert raised.value.code == "LineTooLong"


def test_a_line_exactly_at_the_limit_is_accepted() -> None:
    data = b"y" * 20 + b"\n" + b"z" * 20

    assert list(iter_lines(one_byte_chunks(data), max_line_bytes=20)) == [b"y" * 20, b"z" * 20]


def test_jsonl_refuses_a_six_mib_line_read_in_the_blob_adapters_four_mib_chunks() -> None:
    chunk = 4 * 1024 * 1024  # shared/adapters/azure_blob.py CHUNK_BYTES
    data = b'{"text": "' + b"x" * (6 * 1024 * 1024) + b'"}\n{"a": 1}\n'
    assert len(data.split(b"\n")[0]) > MAX_LINE_BYTES

    with pytest.raises(InvalidInput) as raised:
        list(read_jsonl(data[i : i + chunk] for i in range(0, len(data), chunk)))
    assert raised.value.code == "LineTooLong"


def test_jsonl_refuses_a_line_over_the_limit_arriving_in_small_chunks() -> None:
    data = b'{"a": 1}\n{"text": "' + b"x" * (MAX_LINE_BYTES + 1000)
    chunk = 64 * 1024

    records = read_jsonl(data[i : i + chunk] for i in range(0, len(data), chunk))

    assert next(records).value == {"a": 1}
    with pytest.raises(InvalidInput) as raised:
        list(records)
    assert raised.value.code == "LineTooLong"


CSV = b'id,"a, quoted",b\r\n1,2,3\r\n\r\n,,\r\n4,"5,5",6\r\n7,8\r\n9,10,11'


@pytest.mark.parametrize("chunks", chunkings(CSV), ids=["whole", "1-byte", "3-byte"])
def test_csv_rows_become_records_by_header_with_the_right_line_numbers(chunks: list[bytes]) -> None:
    records = list(read_csv(chunks))

    assert summary(records) == [
        (2, {"id": "1", "a, quoted": "2", "b": "3"}),
        (5, {"id": "4", "a, quoted": "5,5", "b": "6"}),  # lines 3 (blank) and 4 (empty cells) skipped
        (6, "ERROR"),
        (7, {"id": "9", "a, quoted": "10", "b": "11"}),
    ]
    assert "2 fields" in records[2].error.message  # type: ignore[union-attr]
    assert [r.record_id for r in records] == ["1", "4", None, "9"]


def test_csv_with_a_bom_has_a_clean_first_column_name() -> None:
    records = list(read_csv(one_byte_chunks(BOM + b"id,x\n1,2\n")))

    assert summary(records) == [(2, {"id": "1", "x": "2"})]
    assert records[0].record_id == "1"


def test_csv_header_names_are_trimmed() -> None:
    records = list(read_csv([b" id , x\n1,2\n"]))

    assert records[0].value == {"id": "1", "x": "2"}


def test_csv_that_is_not_utf8_raises_bad_encoding() -> None:
    data = b"id,name\n1,caf\xe9\n"  # Latin-1 'é'

    with pytest.raises(InvalidInput) as raised:
        list(read_csv(one_byte_chunks(data)))
    assert raised.value.code == "BadEncoding"


@pytest.mark.parametrize("header", [b"a,b,a\n", b" a ,a\n", b",\n"], ids=["duplicate", "duplicate-trimmed", "empty"])
def test_csv_header_that_does_not_name_every_column_once_raises_bad_csv_header(header: bytes) -> None:
    with pytest.raises(InvalidInput) as raised:
        list(read_csv([header + b"1,2,3\n"]))
    assert raised.value.code == "BadCsvHeader"


def test_an_empty_csv_has_no_records() -> None:
    assert list(read_csv([b""])) == []
    assert list(read_csv([b"a,b\n"])) == []


def test_csv_of_a_later_shard_uses_the_header_it_is_given() -> None:
    header = header_of_csv(BOM + b"id, x\r\n1,2\r\n")

    records = list(read_csv([b"3,4\n5,6\n"], header=header, first_index=10, first_line=20))

    assert header == ["id", "x"]
    assert [(r.index, r.line, r.value) for r in records] == [
        (10, 20, {"id": "3", "x": "4"}),
        (11, 21, {"id": "5", "x": "6"}),
    ]


@pytest.mark.parametrize(
    "chunks", chunkings(b"hello\n\n  \nworld\r\nbad \xff byte\nlast"), ids=["whole", "1-byte", "3-byte"]
)
def test_text_is_one_record_per_non_blank_line(chunks: list[bytes]) -> None:
    records = list(read_text(chunks))

    assert summary(records) == [
        (1, {"text": "hello"}),
        (4, {"text": "world"}),
        (5, "ERROR"),
        (6, {"text": "last"}),
    ]
    assert "UTF-8" in records[2].error.message  # type: ignore[union-attr]


def test_text_with_a_utf8_bom_does_not_pass_the_bom_to_the_model() -> None:
    records = list(read_text([BOM + b"hello\nworld\n"]))

    assert [r.value for r in records] == [{"text": "hello"}, {"text": "world"}]


def test_reader_for_names_a_reader_per_supported_type_and_refuses_others() -> None:
    assert reader_for(".jsonl") is read_jsonl
    assert reader_for(".csv") is read_csv
    assert reader_for(".txt") is read_text
    with pytest.raises(InvalidInput) as raised:
        reader_for(".xlsx")
    assert raised.value.code == "UnsupportedFileType"


# RFC 4180: quoted fields may hold commas, quotes and line breaks; a record then spans lines.

QUOTED = b'id,text,n\r\n1,"two\r\nlines",10\r\n2,"say ""hi"",\nthen\n\nmore",20\n3,plain,30\n'


@pytest.mark.parametrize("chunks", chunkings(QUOTED), ids=["whole", "1-byte", "3-byte"])
def test_a_quoted_newline_is_part_of_one_field_and_the_record_keeps_its_starting_line(chunks: list[bytes]) -> None:
    records = list(read_csv(chunks))

    assert [(r.index, r.line, r.value) for r in records] == [
        (0, 2, {"id": "1", "text": "two\r\nlines", "n": "10"}),
        (1, 4, {"id": "2", "text": 'say "hi",\nthen\n\nmore', "n": "20"}),
        (2, 8, {"id": "3", "text": "plain", "n": "30"}),
    ]


def test_a_header_with_a_quoted_newline_and_a_bom_is_read_whole() -> None:
    data = BOM + b'"first\ncolumn",b\n1,2\n'

    records = list(read_csv(one_byte_chunks(data)))

    assert [(r.line, r.value) for r in records] == [(3, {"first\ncolumn": "1", "b": "2"})]
    assert header_of_csv(data) == ["first\ncolumn", "b"]


def test_a_later_shard_reads_quoted_newlines_with_the_index_and_line_it_is_given() -> None:
    records = list(read_csv([b'7,"a\nb"\n8,c\n'], header=["id", "x"], first_index=40, first_line=90))

    assert [(r.index, r.line, r.value) for r in records] == [
        (40, 90, {"id": "7", "x": "a\nb"}),
        (41, 92, {"id": "8", "x": "c"}),
    ]


def test_a_later_shard_keeps_a_leading_bom_character_as_data() -> None:
    """Only the file's first bytes can be a BOM; the planner cut the file knowing that."""
    records = list(read_csv([BOM + b"1,2\n"], header=["a", "b"], first_index=5, first_line=9))

    assert records[0].value == {"a": "\ufeff1", "b": "2"}


def test_bad_csv_rows_are_error_records_with_their_lines_and_reading_goes_on() -> None:
    data = (
        b"id,x\n"
        b"1,2\n"
        b'2,"closed"junk\n'  # a closing quote must be followed by a comma or the line end
        b"3,4,5\n"  # too wide
        b"4\n"  # too narrow
        b"5,bad\rcarriage\n"
        b"6,7\n"
        b'7,"never closed\n'
        b"8,9\n"
    )

    records = list(read_csv(one_byte_chunks(data)))

    assert [(r.index, r.line, "ERROR" if r.error else r.value) for r in records] == [
        (0, 2, {"id": "1", "x": "2"}),
        (1, 3, "ERROR"),
        (2, 4, "ERROR"),
        (3, 5, "ERROR"),
        (4, 6, "ERROR"),
        (5, 7, {"id": "6", "x": "7"}),
        (6, 8, "ERROR"),  # the unterminated quote runs to the end of the file: one broken record
    ]
    messages = [r.error.message for r in records if r.error]
    assert "closing quote" in messages[0]
    assert "3 fields" in messages[1] and "1 fields" in messages[2]
    assert "carriage return" in messages[3]
    assert "never closed" in messages[4] and "end of the file" in messages[4]


def test_a_quoted_field_that_never_closes_is_one_error_and_reading_resumes_after_the_field_limit() -> None:
    data = b'id,x\n1,"open\n' + b"y" * 200_000 + b"\n2,3\n"

    records = list(read_csv([data]))

    assert [(r.line, "ERROR" if r.error else r.value) for r in records] == [(2, "ERROR"), (4, {"id": "2", "x": "3"})]
    assert "longer than" in records[0].error.message  # type: ignore[union-attr]


def test_a_csv_record_over_the_record_limit_fails_the_file() -> None:
    field = b'"' + b"z" * 100_000 + b'\n"'
    data = b"a,b\n" + b",".join([field] * 50) + b"\n"

    with pytest.raises(InvalidInput) as raised:
        list(read_csv([data]))
    assert raised.value.code == "RecordTooLong"


QUOTED_BIG = b"id,text\n" + b"".join(b'%d,"row %d\nsecond line, quoted ""x"""\n' % (i, i) for i in range(300))


def read_in_shards(data: bytes, shard_bytes: int) -> list[tuple[int, int, object]]:
    """Plans the file as the worker's planner does and reads each shard as a worker would."""
    plan = plan_shards(one_byte_chunks(data), shard_bytes, ".csv", len(data))
    assert plan[-1][1] == len(data) and all(a[1] == b[0] for a, b in itertools.pairwise(plan))
    records = []
    for start, end, first_index, first_line in plan:
        assert data[start - 1 : start] in (b"", b"\n"), "a shard starts at a line start"
        header = None if start == 0 else header_of_csv(data[:65536])
        shard = read_csv([data[start:end]], header=header, first_index=first_index, first_line=first_line)
        records += [(r.index, r.line, r.value if r.error is None else r.error.message) for r in shard]
    return records


QUOTED_BIG = b"id,text\n" + b"".join(b'%d,"row %d\nsecond line, quoted ""x"""\n' % (i, i) for i in range(300))


@pytest.mark.parametrize("shard_bytes", [1, 37, 64, 500, 4096])
def test_the_csv_planner_cuts_only_between_records_and_numbers_them(shard_bytes: int) -> None:
    records = read_in_shards(QUOTED_BIG, shard_bytes)

    assert records == [(i, 2 + 2 * i, {"id": str(i), "text": f'row {i}\nsecond line, quoted "x"'}) for i in range(300)]


@pytest.mark.parametrize("shard_bytes", [10, 5000, 150_000])
def test_the_csv_planner_agrees_with_the_reader_on_a_quote_that_never_closes(shard_bytes: int) -> None:
    """csv.reader gives up on the field at its size limit and goes on at the next line: the planner too."""
    rows = b"".join(b"%d,x\n" % i for i in range(50))
    data = b"id,x\n" + rows + b'50,"open\n' + (b"y" * 999 + b"\n") * 200 + rows + b'99,"open at the end\n1,2\n'

    records = read_in_shards(data, shard_bytes)

    assert records == [(r.index, r.line, r.value if r.error is None else r.error.message) for r in read_csv([data])]
    errors = [(line, value) for _, line, value in records if isinstance(value, str)]
    assert errors[0][0] == 52 and "longer than" in errors[0][1]  # the field hit the limit: one error, then on
    assert "1 fields" in errors[1][1]  # the rest of the field's lines, read as rows again
    assert errors[-1][0] == 52 + 200 + 50 + 1 and "never closed" in errors[-1][1]
    assert [value["id"] for _, _, value in records if isinstance(value, dict)] == [str(i) for i in range(50)] * 2


def test_the_line_planner_still_cuts_jsonl_at_every_newline() -> None:
    data = b"".join(b'{"text": "a\\"b"}\n' for _ in range(100))

    plan = plan_shards([data], 100, ".jsonl", len(data))

    assert [(start % 17, first_index, first_line) for start, _, first_index, first_line in plan][:3] == [
        (0, 0, 1),
        (0, 6, 7),
        (0, 12, 13),
    ]


def test_the_csv_planner_stops_cutting_at_a_record_over_the_limit_and_its_shard_fails_the_file() -> None:
    """The planner reads no further than the limit; the shard holding the record fails at once with its reason."""
    rows = b"".join(b"%d,x\n" % i for i in range(1000))
    field = b'"' + b"z" * 100_000 + b'\n"'
    data = b"a,b\n" + rows + b",".join([field] * 50) + b"\n" + rows

    plan = plan_shards([data], 1024, ".csv", len(data))

    start, end, first_index, first_line = plan[-1]
    assert len(plan) > 3 and end == len(data) and data.index(field) - start < 1024 + 10
    with pytest.raises(InvalidInput) as raised:
        list(read_csv([data[start:end]], header=["a", "b"], first_index=first_index, first_line=first_line))
    assert raised.value.code == "RecordTooLong"


def test_the_csv_planner_stops_reading_at_a_line_over_the_limit_instead_of_holding_it() -> None:
    rows = b"".join(b"%d,x\n" % i for i in range(1000))
    data = b"a,b\n" + rows + b"y" * (3 * MAX_LINE_BYTES) + b"\n" + rows
    chunk = 64 * 1024
    read: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), chunk):
            read.append(i)
            yield data[i : i + chunk]

    plan = plan_shards(chunks(), 1024, ".csv", len(data))

    assert len(read) * chunk < 2 * MAX_LINE_BYTES, "the planner held no more than about one line's limit"
    start, end, first_index, first_line = plan[-1]
    with pytest.raises(InvalidInput) as raised:
        list(read_csv([data[start:end]], header=["a", "b"], first_index=first_index, first_line=first_line))
    assert raised.value.code == "LineTooLong"
