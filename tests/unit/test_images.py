"""Image readers: one image file, zips of images (normal, a non-image entry, truncated, bombs)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Iterator

import pytest
from PIL import Image

from shared.domain.errors import InvalidInput, InvalidRecord
from shared.inference import images
from shared.inference.images import READERS, read_image, read_zip


def _png(colour: int = 0) -> bytes:
    out = io.BytesIO()
    Image.new("L", (16, 16), colour).save(out, format="PNG")
    return out.getvalue()


def _chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_readers_by_extension() -> None:
    assert {".png": read_image, ".jpg": read_image, ".jpeg": read_image, ".zip": read_zip} == READERS


def test_read_image_one_record() -> None:
    data = _png()
    (record,) = list(read_image(_chunks(data), first_index=5, source_name="inbox/m/dir/seven.png"))
    assert (record.index, record.line, record.error) == (5, 1, None)
    assert record.value == {"image": data, "id": "seven.png"}
    assert record.record_id == "seven.png"


def test_read_image_refuses_a_huge_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 5000)
    with pytest.raises(InvalidInput) as err:
        list(read_image(_chunks(b"x" * 6000)))
    assert err.value.code == "FileTooLarge"


def test_read_zip_normal_and_skips() -> None:
    data = _zip(
        {
            "a.png": _png(0),
            "dir/": b"",
            "__MACOSX/._a.png": b"junk",
            ".DS_Store": b"junk",
            "dir/b.png": _png(255),
        }
    )
    records = list(read_zip(_chunks(data), first_index=10, source_name="x.zip"))
    assert [(r.index, r.line, r.value["id"], r.error) for r in records] == [
        (10, 1, "a.png", None),
        (11, 5, "dir/b.png", None),
    ]
    assert records[0].value["image"] == _png(0)


def test_read_zip_non_image_entry_is_an_error_record_only() -> None:
    data = _zip({"a.png": _png(), "notes.txt": b"hello", "c.png": _png()})
    records = list(read_zip(_chunks(data)))
    assert [r.error is None for r in records] == [True, False, True]
    assert isinstance(records[1].error, InvalidRecord) and "notes.txt" in records[1].error.message
    assert records[1].record_id == "notes.txt"


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_read_zip_truncated_is_corrupt(cut: float) -> None:
    data = _zip({f"{i}.png": _png(i) for i in range(5)})
    with pytest.raises(InvalidInput) as err:
        list(read_zip(_chunks(data[: int(len(data) * cut)])))
    assert err.value.code == "CorruptArchive"


def test_read_zip_not_a_zip_and_bad_crc() -> None:
    with pytest.raises(InvalidInput) as err:
        list(read_zip(_chunks(b"this is not a zip file at all")))
    assert err.value.code == "CorruptArchive"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("a.png", _png())
    data = bytearray(out.getvalue())
    data[data.index(b"IHDR") + 6] ^= 0xFF  # flip a byte of the stored entry: the CRC no longer matches
    with pytest.raises(InvalidInput) as err:
        list(read_zip(_chunks(bytes(data))))
    assert err.value.code == "CorruptArchive"


def test_read_zip_bomb_by_declared_size_never_inflated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 200 MB entry of zeros (~200 KB compressed): refused from the central directory, before any read."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(1 << 20)
    body = b"".join(compressor.compress(block) for _ in range(200)) + compressor.flush()
    data = _raw_zip("bomb.png", body, uncompressed=200 << 20, crc=_zero_crc(200))
    opened: list[str] = []
    original = zipfile.ZipFile.open

    def spy(self: zipfile.ZipFile, name: object, *args: object, **kwargs: object) -> object:
        opened.append(str(name))
        return original(self, name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    with pytest.raises(InvalidInput) as err:
        list(read_zip(_chunks(data, 1 << 16)))
    assert err.value.code == "ZipBomb"
    assert opened == []


def test_read_zip_bomb_with_lying_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry whose header claims 1 KB but inflates to 30 MB: reading stops at the limit."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(30)) + compressor.flush()
    data = _raw_zip("liar.png", body, uncompressed=1024, crc=0)
    with pytest.raises(InvalidInput) as err:
        list(read_zip(_chunks(data, 1 << 16)))
    assert err.value.code in {"ZipBomb", "CorruptArchive"}


def test_read_zip_ratio_and_entry_count(monkeypatch: pytest.MonkeyPatch) -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(2)) + compressor.flush()
    with pytest.raises(InvalidInput) as err:
        list(read_zip(_chunks(_raw_zip("zeros.png", body, uncompressed=2 << 20, crc=0))))
    assert err.value.code == "ZipBomb" and "ratio" in err.value.message
    monkeypatch.setattr(images, "MAX_ENTRIES", 3)
    with pytest.raises(InvalidInput) as err:
        list(read_zip(_chunks(_zip({f"{i}.png": _png() for i in range(4)}))))
    assert err.value.code == "ZipBomb"


def _zero_crc(megabytes: int) -> int:
    crc = 0
    block = bytes(1 << 20)
    for _ in range(megabytes):
        crc = zlib.crc32(block, crc)
    return crc


def _raw_zip(name: str, deflated: bytes, *, uncompressed: int, crc: int) -> bytes:
    """A one-entry zip around an already-deflated body, with whatever sizes and CRC the header should claim."""
    encoded = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(deflated), uncompressed, len(encoded), 0)
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50,
        20,
        20,
        0,
        8,
        0,
        0,
        crc,
        len(deflated),
        uncompressed,
        len(encoded),
        0,
        0,
        0,
        0,
        0,
        0,
    )
    body = local + encoded + deflated
    directory = central + encoded
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(directory), len(body), 0)
    return body + directory + end
