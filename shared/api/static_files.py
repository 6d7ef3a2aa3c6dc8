"""Files the platform serves itself (the console, the API docs page): a fixed set read at import, strict headers."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from fastapi.responses import FileResponse

from shared.domain.errors import NotFound

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".png": "image/png",
}


def asset_map(root: Path) -> dict[str, Path]:
    """Every servable file under `root` by its path relative to it. A request names one of these or gets 404, so
    no path from a request ever reaches the file system."""
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in MEDIA_TYPES
    }


def asset_response(assets: dict[str, Path], name: str, headers: dict[str, str], what: str) -> FileResponse:
    """The file `name` of `assets` with its media type, or NotFound (404, the API's error body)."""
    path = assets.get(name)
    if path is None:
        raise NotFound(f"no such {what}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=headers)


def security_headers(*, connect: Iterable[str] = (), script_hashes: Iterable[str] = ()) -> dict[str, str]:
    """No script, style or image from elsewhere, no inline script but those of `script_hashes` ('sha256-...'),
    calls only to this origin and `connect`, never framed, no referrer, not cached."""
    scripts = " ".join(["'self'", *script_hashes])
    connects = " ".join(["'self'", *connect])
    policy = (
        f"default-src 'self'; script-src {scripts}; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connects}; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-store",
    }
