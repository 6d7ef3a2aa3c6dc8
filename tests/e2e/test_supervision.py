"""What `aiaas up` does when a part it cannot replace dies: it stops everything and says why."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.localhost.emulators import free_port

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def _own_platform_env(data_dir: Path, workers: int) -> dict[str, str]:
    """Settings for a platform of its own on free ports (not the session's `stack`, whose Cosmos data other
    tests rely on), with only the small tabular model: a start publishes every package of its models directory, and
    the two text models alone are 175 MB (seconds per start) that these platforms, running no job, never use."""
    models = data_dir.parent / "models"
    shutil.copytree(REPO / "build/models/breast-cancer-classifier", models / "breast-cancer-classifier")
    return {
        **os.environ,
        "AIAAS_ENVIRONMENT": "development",
        "AIAAS_API_PORT": str(free_port()),
        "AIAAS_AZURITE_BLOB_PORT": str(free_port()),
        "AIAAS_AZURITE_QUEUE_PORT": str(free_port()),
        "AIAAS_AZURITE_TABLE_PORT": str(free_port()),
        "AIAAS_COSMOS_PORT": str(free_port()),
        "AIAAS_DATA_DIR": str(data_dir),
        "AIAAS_MODELS_DIR": str(models),
        "AIAAS_WORKERS": str(workers),
    }


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture
def aiaas_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, str]]]:
    """`aiaas up` as a user runs it, with one worker, once it says it is up; its output goes to out.txt and
    err.txt in tmp_path."""
    env = _own_platform_env(tmp_path / "data", workers=1)
    with (tmp_path / "out.txt").open("wb") as out, (tmp_path / "err.txt").open("wb") as err:
        process = subprocess.Popen(
            [str(REPO / ".venv/bin/aiaas"), "up"], env=env, stdout=out, stderr=err, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while process.poll() is None and time.monotonic() < deadline:
            if b"aiaas local platform up" in (tmp_path / "out.txt").read_bytes():
                break
            time.sleep(0.2)
        assert process.poll() is None, (tmp_path / "err.txt").read_text()
        yield process, env
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_a_dead_cosmos_stand_in_stops_the_platform_with_a_clear_message(
    aiaas_up: tuple[subprocess.Popen[bytes], dict[str, str]], tmp_path: Path
) -> None:
    process, env = aiaas_up
    data_dir = Path(env["AIAAS_DATA_DIR"])
    cosmos_pid = int((data_dir / "cosmos/cosmos.pid").read_text())
    azurite_pid = int((data_dir / "azurite/azurite.pid").read_text())
    others = [pid for pid in _children(process.pid) if pid != cosmos_pid]
    assert azurite_pid in others and len(others) >= 2, "Azurite and a worker run under aiaas up"

    os.kill(cosmos_pid, signal.SIGKILL)
    process.wait(timeout=120)
    stderr = (tmp_path / "err.txt").read_text()

    assert process.returncode == 1
    [message] = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert "Cosmos DB stand-in" in message and "killed by SIGKILL" in message
    assert "in memory only" in message and "make up" in message
    assert not [pid for pid in others if _alive(pid)], "Azurite and the workers were stopped"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{env['AIAAS_API_PORT']}/api/health", timeout=5)


def test_a_dead_api_server_stops_the_platform_and_says_so(tmp_path: Path) -> None:
    # The HTTP API is a thread of the host itself, so no signal from outside ends it alone; here it ends
    # the way uvicorn ends when it gives up (its serve loop returns).
    script = (
        "import logging, threading\n"
        "from shared.config import get_settings\n"
        "from shared.localhost.host import LocalHost\n"
        "logging.basicConfig(format='%(levelname)s %(name)s: %(message)s')\n"
        "with LocalHost(get_settings(), workers=0) as host:\n"
        "    host._server.should_exit = True\n"
        "    host.wait(threading.Event())\n"
        "print(host.failure)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=_own_platform_env(tmp_path / "data", workers=0),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert "the HTTP API server at http://127.0.0.1:" in done.stdout and "stopped unexpectedly" in done.stdout
    assert "CRITICAL shared.localhost.host: the HTTP API server" in done.stderr
