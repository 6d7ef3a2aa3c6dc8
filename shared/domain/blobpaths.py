"""Blob paths a tenant supplies, parsed once into (container, name): always the caller's own container."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from shared.domain.errors import InvalidInput
from shared.domain.tenants import container_for

# Azure's limits on a blob name: 1,024 characters and, in a container without a hierarchical namespace, at most
# 254 path segments ("Naming and Referencing Containers, Blobs, and Metadata", Blob Storage REST reference,
# https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata).
MAX_BLOB_NAME_CHARS = 1024
MAX_BLOB_NAME_SEGMENTS = 254
INVALID_BLOB_PATH = "InvalidBlobPath"


@dataclass(frozen=True)
class TenantBlob:
    """A blob in a tenant's own container; `name` is the blob name inside it, never a path out of it."""

    container: str
    name: str


def parse_tenant_blob_path(tenant_id: str, path: str, *, field: str = "blobPath") -> TenantBlob:
    """The blob `path` names in the tenant's own container; InvalidInput (400) with the reason otherwise.

    A path is a blob name relative to the caller's container: no container part, no leading slash, no empty,
    `.` or `..` segment (a store or proxy that normalises the URL would resolve them into another container),
    no backslash (some clients turn it into a separator), no `%` (a percent-encoded `..` is decoded by some
    layers and not others), no control character, and within Azure's length and segment limits.
    """
    problem = _problem(path)
    if problem is not None:
        raise InvalidInput(f"{field} {_shown(path)!r} is refused: {problem}", code=INVALID_BLOB_PATH)
    return TenantBlob(container_for(tenant_id), path)


def _problem(path: str) -> str | None:
    if not path:
        return "it is empty"
    if len(path) > MAX_BLOB_NAME_CHARS:
        return f"a blob name has at most {MAX_BLOB_NAME_CHARS} characters"
    if path.startswith("/"):
        return "it must be relative to your container (no leading '/')"
    if "\\" in path:
        return "it must not contain '\\'"
    if "%" in path:
        return "it must not contain '%' (send the name itself, not percent-encoded)"
    if any(_is_control(ch) for ch in path):
        return "it must not contain control characters"
    segments = path.split("/")
    if len(segments) > MAX_BLOB_NAME_SEGMENTS:
        return f"a blob name has at most {MAX_BLOB_NAME_SEGMENTS} path segments"
    for segment in segments:
        if segment in {"", ".", ".."}:
            return "empty, '.' and '..' path segments are not allowed"
        if segment.endswith("."):
            # Azure: avoid names ending with a dot; a segment "..." or "a." is refused too, as some file-system
            # backed layers strip trailing dots.
            return "a path segment must not end with '.'"
    return None


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in {"Cc", "Cs"}


def _shown(value: str) -> str:
    printable = "".join(ch if not _is_control(ch) else "?" for ch in value)
    return printable if len(printable) <= 64 else f"{printable[:64]}..."
