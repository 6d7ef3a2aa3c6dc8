"""Every error code in the source (`code="..."`, a class's `code = "..."`, an error body's) is in docs/errors.md."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PATTERNS = [
    re.compile(r'\bcode\s*=\s*"([A-Z][A-Za-z]+)"'),  # InvalidInput(..., code="X") and class attributes
    re.compile(r'"code":\s*"([A-Z][A-Za-z]+)"'),  # a job's or a delivery's error object
    re.compile(r'error_body\(\s*"([A-Z][A-Za-z]+)"'),  # the API's own answers
    re.compile(r'status_code, "([A-Z][A-Za-z]+)"'),  # FastAPI's own HTTP errors, by default
]
# FastAPI's HTTP errors mapped to codes ({404: "NotFound", ...}), in the API's modules only: elsewhere such a map is
# of delivery outcomes (shared/domain/delivery.py), which are not error codes.
API_PATTERN = re.compile(r'\b\d{3}: "([A-Z][A-Za-z]+)"')
# A code held in a module constant: code=NAME, with NAME = "X" somewhere in shared/.
CONSTANT_USE = re.compile(r"\bcode=([A-Z][A-Z_]+)\b")
CONSTANT = re.compile(r'^([A-Z][A-Z_]+)(?::[^=]+)? = "([A-Z][A-Za-z]+)"', re.M)


def codes_in_source() -> set[str]:
    found: set[str] = set()
    used: set[str] = set()
    constants: dict[str, str] = {}
    for path in (REPO / "shared").rglob("*.py"):
        text = path.read_text()
        used.update(CONSTANT_USE.findall(text))
        constants.update(CONSTANT.findall(text))
        for pattern in PATTERNS:
            found.update(pattern.findall(text))
        if path.is_relative_to(REPO / "shared/api"):
            found.update(API_PATTERN.findall(text))
    missing = used - constants.keys()
    assert not missing, f'code constants not found as NAME = "Code": {sorted(missing)}'
    return found | {constants[name] for name in used}


def documented() -> set[str]:
    text = (REPO / "docs/errors.md").read_text()
    return set(re.findall(r"^\| `([A-Za-z]+)` \|", text, flags=re.M))


def test_every_error_code_in_the_source_is_documented() -> None:
    found = codes_in_source()
    assert {"UnknownModel", "QuotaExceeded", "InvalidRequest", "ZipBomb"} <= found  # the scan finds real codes
    missing = sorted(found - documented())
    assert not missing, f"add to docs/errors.md: {missing}"


def test_the_document_lists_no_code_the_source_lost() -> None:
    stale = sorted(documented() - codes_in_source())
    assert not stale, f"no longer in shared/: {stale}"
