"""Every .bicep file under bicep/ parses with the tree-sitter Bicep grammar; also the parser the policy tests use."""

# No Bicep CLI installs here, so the grammar (PyPI tree-sitter-bicep) runs in .venv-iac: this file is also the
# script it runs there (`python test_bicep_parse.py FILE...` prints each file's declarations as JSON), so the
# module imports only the standard library at the top.

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BICEP_DIR = ROOT / "bicep"


def iac_tool(name: str) -> Path:
    """A program of .venv-iac; a missing venv fails the test with what to run (never a skip)."""
    path = ROOT / ".venv-iac" / "bin" / name
    assert path.exists(), f"{path} is missing: `make test` installs .venv-iac (or run `make .venv-iac/.installed`)"
    return path


@lru_cache(maxsize=16)
def _parse_cached(directory: str) -> str:
    files = sorted(str(p) for p in Path(directory).rglob("*.bicep"))
    assert files, f"no .bicep file under {directory}"
    out = subprocess.run(
        [str(iac_tool("python")), str(Path(__file__).resolve()), *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def parse_dir(directory: Path = BICEP_DIR) -> list[dict[str, Any]]:
    """Each file's path (relative), syntax errors, variables and resource declarations (see _declarations)."""
    parsed: list[dict[str, Any]] = json.loads(_parse_cached(str(directory)))
    return parsed


def broken_copy(tmp_path: Path, relpath: str, old: str, new: str) -> Path:
    """A copy of bicep/ with one text replaced in one file (the replaced text must be there exactly once)."""
    copy = tmp_path / "bicep"
    shutil.copytree(BICEP_DIR, copy)
    target = copy / relpath
    text = target.read_text()
    assert text.count(old) == 1, f"{old!r} not found exactly once in {relpath}"
    target.write_text(text.replace(old, new))
    return copy


# ---------------------------------------------------------------- the tests


def test_every_bicep_file_parses() -> None:
    parsed = parse_dir()
    assert len(parsed) >= 10
    assert {p["path"] for p in parsed} >= {"main.bicep", "modules/rbac.bicep", "modules/storage.bicep"}
    errors = {p["path"]: p["errors"] for p in parsed if p["errors"]}
    assert not errors
    # The parse is deep enough for the policy tests: the storage account and its settings are seen.
    storage = next(p for p in parsed if p["path"] == "modules/storage.bicep")
    account = next(r for r in storage["resources"] if r["type"] == "Microsoft.Storage/storageAccounts")
    assert account["body"]["properties"]["allowSharedKeyAccess"] is False


def test_a_syntax_error_is_reported(tmp_path: Path) -> None:
    copy = broken_copy(tmp_path, "modules/servicebus.bicep", "disableLocalAuth: true\n", "disableLocalAuth: true,,\n")
    errors = {p["path"]: p["errors"] for p in parse_dir(copy) if p["errors"]}
    assert list(errors) == ["modules/servicebus.bicep"]
    assert errors["modules/servicebus.bicep"][0]["line"] > 1


def test_an_unclosed_block_is_reported(tmp_path: Path) -> None:
    copy = broken_copy(tmp_path, "modules/identity.bicep", "  tags: tags\n}\n", "  tags: tags\n")
    errors = {p["path"] for p in parse_dir(copy) if p["errors"]}
    assert errors == {"modules/identity.bicep"}


# ---------------------------------------------------------------- the script run in .venv-iac


def _text(node: Any, src: bytes) -> str:
    return src[node.start_byte : node.end_byte].decode()


def _value(node: Any, src: bytes) -> Any:
    """A Bicep expression as JSON: objects, arrays, plain strings, booleans, numbers; else {"expr": source text}."""
    kind = node.type
    if kind == "object":
        result: dict[str, Any] = {}
        for prop in node.named_children:
            if prop.type != "object_property":
                continue
            named = [c for c in prop.named_children if c.type != "comment"]
            if not named or named[0].type == "resource_declaration" or len(named) < 2:
                continue
            key = _text(named[0], src).strip("'")
            result[key] = _value(named[-1], src)
        return result
    if kind == "array":
        return [_value(c, src) for c in node.named_children if c.type != "comment"]
    if kind == "string" and all(c.type == "string_content" for c in node.named_children):
        return "".join(_text(c, src) for c in node.named_children)
    if kind == "boolean":
        return _text(node, src) == "true"
    if kind == "number":
        return int(_text(node, src))
    if kind == "null":
        return None
    return {"expr": _text(node, src)}


def _declarations(root: Any, src: bytes) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Variables, and every resource (nested ones too: type and symbol joined to the parent's with / and ::)."""
    variables: dict[str, Any] = {}
    resources: list[dict[str, Any]] = []

    def resource(node: Any, parent: dict[str, Any] | None) -> None:
        named = node.named_children
        symbol = _text(named[0], src)
        type_text = _value(named[1], src)
        full = str(type_text if isinstance(type_text, str) else type_text["expr"])
        rtype, _, api = full.partition("@")
        if parent is not None and "/" not in rtype:
            rtype = f"{parent['type']}/{rtype}"
            symbol = f"{parent['symbol']}::{symbol}"
        body = named[-1]
        loop = body.type == "for_statement"
        conditional = body.type == "if_statement"
        loop_over = ""
        if loop:
            loop_over = _text([c for c in body.named_children if c.type != "comment"][-2], src)
        if loop or conditional:
            body = [c for c in body.named_children if c.type == "object"][-1]
        record = {
            "symbol": symbol,
            "type": rtype,
            "api": api or (parent or {}).get("api", ""),
            "existing": any(c.type == "existing" for c in node.children),
            "loop": loop,
            "loop_over": loop_over,
            "conditional": conditional,
            "line": node.start_point[0] + 1,
            "body": _value(body, src),
        }
        resources.append(record)
        for prop in body.named_children:
            for child in prop.named_children:
                if child.type == "resource_declaration":
                    resource(child, record)

    for node in root.named_children:
        if node.type == "variable_declaration":
            named = node.named_children
            variables[_text(named[0], src)] = _value(named[-1], src)
        elif node.type == "resource_declaration":
            resource(node, None)
    return variables, resources


def _errors(root: Any, src: bytes) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if node.type == "ERROR" or node.is_missing:
            found.append(
                {
                    "line": node.start_point[0] + 1,
                    "column": node.start_point[1] + 1,
                    "text": ("missing " + node.type) if node.is_missing else _text(node, src)[:80],
                }
            )
            return
        if node.has_error:
            for child in node.children:
                walk(child)

    walk(root)
    return found


def _main(paths: list[str]) -> None:
    import tree_sitter_bicep
    from tree_sitter import Language, Parser

    parser = Parser(Language(tree_sitter_bicep.language()))
    out = []
    for name in paths:
        path = Path(name)
        src = path.read_bytes()
        tree = parser.parse(src)
        variables, resources = _declarations(tree.root_node, src)
        base = next(p for p in path.parents if p.name == "bicep")
        out.append(
            {
                "path": path.relative_to(base).as_posix(),
                "errors": _errors(tree.root_node, src),
                "variables": variables,
                "resources": resources,
                "text": src.decode(),
            }
        )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    _main(sys.argv[1:])
