"""The blob reader's read-ahead: every chunk in order, errors where they happened, no thread left behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from shared.adapters.azure_blob import _read_ahead


def _chunks(count: int, fail_at: int | None = None) -> Iterator[bytes]:
    for i in range(count):
        if i == fail_at:
            raise ConnectionResetError("the connection dropped")
        yield f"chunk-{i};".encode()


def test_every_chunk_arrives_once_in_order() -> None:
    assert b"".join(_read_ahead(_chunks(50))) == b"".join(_chunks(50))


def test_a_download_error_reaches_the_reader_after_the_chunks_before_it() -> None:
    seen = []
    with pytest.raises(ConnectionResetError):
        for chunk in _read_ahead(_chunks(10, fail_at=3)):
            seen.append(chunk)
    assert seen == [b"chunk-0;", b"chunk-1;", b"chunk-2;"]


def test_a_reader_that_stops_early_stops_the_download_thread() -> None:
    reader = _read_ahead(_chunks(10_000))
    assert next(reader) == b"chunk-0;"
    reader.close()
    assert not [t for t in threading.enumerate() if t.name == "blob-read-ahead" and t.is_alive()]
