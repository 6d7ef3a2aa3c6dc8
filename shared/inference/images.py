"""Readers for image inputs: one image file, or a zip of images read entry by entry from a spooled copy.

A record's value is ``{"image": <bytes>, "id": <name>}``; decoding is the handler's job. Whole-file problems
raise :class:`InvalidInput` (``FileTooLarge``, ``CorruptArchive``, ``ZipBomb``); an entry that is not an image
becomes an error record so the archive's other entries still score.
"""

from __future__ import annotations

import posixpath
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any

from shared.domain.errors import InvalidInput, InvalidRecord
from shared.inference.readers import Record

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_ENTRY_BYTES = 20 * 1024 * 1024
MAX_ARCHIVE_BYTES = 2 * 1024 * 1024 * 1024
MAX_TOTAL_UNCOMPRESSED = 2 * 1024 * 1024 * 1024
MAX_RATIO = 200
RATIO_FLOOR_BYTES = 1024 * 1024  # the ratio limit applies to entries inflating past this (tiny files can't harm)
MAX_ENTRIES = 100_000
SPOOL_IN_MEMORY_BYTES = 1024 * 1024

IMAGE_SIGNATURES: tuple[bytes, ...] = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"BM",  # BMP
    b"II*\x00",  # TIFF
    b"MM\x00*",
)


def looks_like_image(data: bytes) -> bool:
    """True when the bytes start with a known image signature (PNG, JPEG, GIF, BMP, TIFF, WebP)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return data.startswith(IMAGE_SIGNATURES)


def read_image(chunks: Iterable[bytes], *, first_index: int = 0, source_name: str = "", **_: Any) -> Iterator[Record]:
    """The whole file as one record ``{"image", "id": <file name>}``; refuses files over 20 MB."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        if len(buffer) > MAX_IMAGE_BYTES:
            raise InvalidInput(
                f"an image file may be at most {MAX_IMAGE_BYTES // (1024 * 1024)} MB", code="FileTooLarge"
            )
    yield Record(first_index, 1, {"image": bytes(buffer), "id": posixpath.basename(source_name) or None})


def _spool(chunks: Iterable[bytes]) -> IO[bytes]:
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES)  # noqa: SIM115
    size = 0
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_ARCHIVE_BYTES:
                raise InvalidInput(
                    f"a zip file may be at most {MAX_ARCHIVE_BYTES // (1024 * 1024 * 1024)} GB", code="FileTooLarge"
                )
            spool.write(chunk)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def _skipped(name: str) -> bool:
    base = posixpath.basename(name.rstrip("/"))
    return name.endswith("/") or name.startswith("__MACOSX/") or "/__MACOSX/" in name or base.startswith(".")


def _check_bomb(infos: list[zipfile.ZipInfo]) -> None:
    if len(infos) > MAX_ENTRIES:
        raise InvalidInput(f"the zip has {len(infos)} entries; at most {MAX_ENTRIES} are accepted", code="ZipBomb")
    total = 0
    for info in infos:
        if info.file_size > MAX_ENTRY_BYTES:
            raise InvalidInput(
                f"entry {info.filename!r} inflates to {info.file_size} bytes; at most {MAX_ENTRY_BYTES} per entry",
                code="ZipBomb",
            )
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise InvalidInput(
                f"entry {info.filename!r} has a compression ratio over {MAX_RATIO}; refused as a zip bomb",
                code="ZipBomb",
            )
        total += info.file_size
    if total > MAX_TOTAL_UNCOMPRESSED:
        raise InvalidInput(f"the zip inflates to {total} bytes; at most {MAX_TOTAL_UNCOMPRESSED}", code="ZipBomb")


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """The entry's bytes, never more than the per-entry limit whatever its header claims."""
    with archive.open(info) as fh:
        data = fh.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES:
        raise InvalidInput(
            f"entry {info.filename!r} inflates past {MAX_ENTRY_BYTES} bytes (its header claims less)", code="ZipBomb"
        )
    return data


def read_zip(chunks: Iterable[bytes], *, first_index: int = 0, source_name: str = "", **_: Any) -> Iterator[Record]:
    """One record per file entry (directories, ``__MACOSX/`` and dotfiles skipped); line = entry position."""
    spool = _spool(chunks)
    try:
        try:
            archive = zipfile.ZipFile(spool)
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as err:
            raise InvalidInput(f"not a readable zip file: {err}", code="CorruptArchive") from err
        with archive:
            infos = archive.infolist()
            _check_bomb(infos)
            index = first_index
            for position, info in enumerate(infos, start=1):
                if info.is_dir() or _skipped(info.filename):
                    continue
                name = info.filename
                if info.flag_bits & 0x1:
                    error = InvalidRecord(f"entry {name!r} is encrypted", field="image")
                    yield Record(index, position, {"id": name}, error=error)
                    index += 1
                    continue
                try:
                    data = _read_entry(archive, info)
                except (zipfile.BadZipFile, EOFError, zlib.error) as err:
                    raise InvalidInput(f"entry {name!r} is corrupt: {err}", code="CorruptArchive") from err
                except NotImplementedError as err:
                    error = InvalidRecord(f"entry {name!r} uses an unsupported compression: {err}", field="image")
                    yield Record(index, position, {"id": name}, error=error)
                    index += 1
                    continue
                if looks_like_image(data):
                    yield Record(index, position, {"image": data, "id": name})
                else:
                    error = InvalidRecord(f"entry {name!r} is not an image (PNG, JPEG, GIF, BMP, TIFF, WebP)")
                    yield Record(index, position, {"id": name}, error=error)
                index += 1
    finally:
        spool.close()


READERS: dict[str, Any] = {".png": read_image, ".jpg": read_image, ".jpeg": read_image, ".zip": read_zip}
