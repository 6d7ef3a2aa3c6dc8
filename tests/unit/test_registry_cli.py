"""The operator's `aiaas models` commands over the fakes: register, promote (and roll back), show, list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared import cli
from shared.domain.models import ModelRef
from shared.services.platform import Platform
from tests.fakes import MODEL_NAME
from tests.unit.test_registry import copy_package


@pytest.fixture(autouse=True)
def _use_fakes(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_platform", lambda: platform)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_register_promote_show_and_roll_back(
    platform: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = copy_package(tmp_path, version="2", description="second")
    assert run(capsys, "models", "register", "--package", str(package))[1].strip() == f"{MODEL_NAME}@2 registered"
    assert "already registered" in run(capsys, "models", "register", "--package", str(package))[1]

    code, out, _ = run(capsys, "models", "promote", MODEL_NAME, "production", "2", "--by", "alice")
    assert code == 0 and "production 1 -> 2 by alice" in out
    assert platform.models.resolve("acme", ModelRef(MODEL_NAME)).version == "2"
    run(capsys, "models", "promote", MODEL_NAME, "production", "1", "--by", "alice")
    assert platform.models.resolve("acme", ModelRef(MODEL_NAME)).version == "1"

    code, out, _ = run(capsys, "models", "show", MODEL_NAME)
    shown = json.loads(out)
    assert code == 0 and shown["card"]["name"] == MODEL_NAME and shown["versions"] == ["1", "2"]
    assert [(h["from"], h["to"], h["by"]) for h in shown["aliasHistory"]] == [
        (None, "1", "build"),
        ("1", "2", "alice"),
        ("2", "1", "alice"),
    ]
    code, _, err = run(capsys, "models", "promote", MODEL_NAME, "production", "9")
    assert code == 1 and "no version '9'" in err


def test_register_for_a_tenant_is_private_and_checked(
    platform: Platform, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = copy_package(tmp_path, version="1", name="acme-cancer")
    code, out, _ = run(capsys, "models", "register", "--package", str(package), "--tenant", "acme")
    assert code == 0 and "for tenant acme" in out
    assert "acme-cancer" in run(capsys, "models", "list", "--tenant", "acme")[1]
    assert "acme-cancer" not in run(capsys, "models", "list", "--tenant", "globex")[1]
    assert "acme-cancer" not in run(capsys, "models", "list")[1]
    assert run(capsys, "models", "show", "acme-cancer")[0] == 1
    code, out, _ = run(capsys, "models", "promote", "acme-cancer", "canary", "1", "--tenant", "acme")
    assert code == 0 and "canary (none) -> 1" in out

    (package / "model.onnx").write_bytes(b"broken")
    bad = copy_package(tmp_path / "other", version="1", name="broken")
    (bad / "model.onnx").write_bytes(b"broken")
    code, _, err = run(capsys, "models", "register", "--package", str(bad), "--tenant", "acme")
    assert code == 1 and "sha256" in err


def test_list_filters_by_task_and_tag(capsys: pytest.CaptureFixture[str]) -> None:
    assert MODEL_NAME in run(capsys, "models", "list", "--task", "tabular-classification")[1]
    assert run(capsys, "models", "list", "--task", "text-classification")[1] == ""
    assert MODEL_NAME in run(capsys, "models", "list", "--tag", "domain:healthcare")[1]
    assert run(capsys, "models", "list", "--tag", "domain:finance")[1] == ""
