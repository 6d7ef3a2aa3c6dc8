"""Every code sample in docs/ runs against the local stack as a new tenant would run it (unless marked not executed)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.localhost.host import LocalHost

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
BLOCK = re.compile(r"(?:<!-- not executed: (?P<reason>[^>]*?) -->\n)?```(?P<lang>bash|python)\n(?P<code>.*?)```", re.S)
# Documents not run here, each with why (none today: logicapps.md marks its Azure-only block instead).
NOT_RUN: dict[str, str] = {}
# Documents with samples; a document's bash blocks share one shell, in order (variables carry over).
DOCUMENTS = sorted(p.name for p in DOCS.glob("*.md") if BLOCK.search(p.read_text()) and p.name not in NOT_RUN)


def blocks(name: str) -> list[tuple[str, str, str | None]]:
    return [(m["lang"], m["code"], m["reason"]) for m in BLOCK.finditer((DOCS / name).read_text())]


def test_the_documents_exist_and_few_samples_are_left_unrun() -> None:
    expected = {"quickstart.md", "events-and-webhooks.md", "sdk.md", "cli.md", "errors.md", "limits.md", "logicapps.md"}
    assert expected <= set(DOCUMENTS)
    skipped = [(name, reason) for name in DOCUMENTS for _, _, reason in blocks(name) if reason is not None]
    assert all(reason.strip() for _, reason in skipped)
    assert len(skipped) <= 8, skipped


def test_relative_links_of_the_documents_lead_somewhere() -> None:
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}"


@pytest.mark.parametrize("name", DOCUMENTS)
def test_the_samples_of_a_document_run(
    name: str, stack: LocalHost, create_tenant: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api: httpx.Client = create_tenant(f"docs-{Path(name).stem}"[:32].rstrip("-"))
    env = {
        **os.environ,  # the stack's settings, so that the operator's `aiaas tenants create` reaches it
        "AIAAS_API_URL": stack.api_url,
        "AIAAS_API_KEY": api.headers["Authorization"].removeprefix("Bearer "),
        "PATH": f"{REPO / '.venv/bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIAAS_PROFILE_FILE": str(tmp_path / "no-profile.toml"),
        "NO_COLOR": "1",
    }
    # The samples name files as they are in a clone (build/samples/..., connectors/...), and write theirs beside them.
    for part in ("build", ".venv", "connectors"):
        (tmp_path / part).symlink_to(REPO / part)
    runnable = [(lang, code) for lang, code, reason in blocks(name) if reason is None]
    assert runnable, f"{name} has no sample that runs"
    shell = "\n".join(code for lang, code in runnable if lang == "bash")
    ran = []
    started = time.monotonic()
    if shell:
        ran.append(_run(["bash", "-euo", "pipefail", "-c", shell], env, tmp_path))
    for lang, code in runnable:
        if lang == "python":
            ran.append(_run([str(REPO / ".venv/bin/python"), "-c", code], env, tmp_path))
    with capsys.disabled():
        print(f"\n{name}: {len(runnable)} samples ran in {time.monotonic() - started:.0f} s")
    assert ran


def _run(command: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{command[-1][:2000]}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr}"
    return done.stdout
