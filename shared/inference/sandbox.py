"""Tenants' ONNX models out of the API process: checked and served by child processes with resource limits.

A child (`python -m shared.inference.sandbox_child check|serve`) sets its own rlimits (address space, CPU seconds, no
core file) before it imports ONNX Runtime, gets no AIAAS_/Azure environment, and talks over two pipes in frames
of JSON (bytes as {"$bytes": base64}), never pickle: nothing a child sends can run code in the parent.

- `check_in_sandbox`: validation at registration. A model that crashes the child, exhausts its memory or CPU, or
  outlives the wall timeout is refused with that reason (400), and the parent never loads it.
- `SandboxPool`: online inference. One child per model version, started on first use, stopped when idle or when
  the pool is full (least recently used first), started again after it died; a call to a child that dies or
  overruns raises SandboxUnavailable (503) and the next call gets a fresh child.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from shared.domain.errors import InvalidInput, InvalidRecord, ServiceUnavailable
from shared.domain.models import ModelCard

logger = logging.getLogger(__name__)
MAX_FRAME_BYTES = 256 * 1024 * 1024
PING_SECONDS = 10.0  # an idle child answers at once; one that does not is dead or wedged
_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class SandboxLimits:
    memory_bytes: int = 2 * 1024**3  # RLIMIT_AS of a child
    cpu_seconds: int = 60  # RLIMIT_CPU of a check; a serving child gets serve_cpu_seconds in all
    wall_seconds: float = 120.0  # a check, start-up included
    serve_cpu_seconds: int = 3600
    call_seconds: float = 60.0  # one infer call in a serving child
    idle_seconds: float = 300.0
    threads: int = 1
    max_package_bytes: int = 128 * 1024 * 1024


DEFAULT_LIMITS = SandboxLimits()


class SandboxUnavailable(ServiceUnavailable):
    """The model's sandbox died or overran during the call; a later call starts a fresh one."""


class RecordRefused(InvalidRecord):
    """The model refused one record of a call: `row` is its index."""

    def __init__(self, row: int, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.row = row


def _pack(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {str(k): _pack(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_pack(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _pack(value.tolist())
    return value


def _unpack(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$bytes" in value:
            return base64.b64decode(value["$bytes"])
        return {k: _unpack(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v) for v in value]
    return value


def send_frame(conn: Connection, message: dict[str, Any]) -> None:
    conn.send_bytes(json.dumps(_pack(message), separators=(",", ":")).encode())


def receive_frame(conn: Connection) -> dict[str, Any]:
    message = json.loads(conn.recv_bytes(MAX_FRAME_BYTES))
    if not isinstance(message, dict):
        raise ValueError("a sandbox frame is not an object")
    return dict(_unpack(message))


@dataclass(eq=False)  # hashed by identity: the pool keeps a set of them
class _Child:
    process: subprocess.Popen[bytes]
    requests: Connection
    replies: Connection

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.requests.close()
        self.replies.close()


def _child_environment() -> dict[str, str]:
    """Only what Python needs: no AIAAS_ settings, keys or Azure identity variables reach a tenant's model."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # The parent's own import path: in Azure the app's packages are on sys.path only (.python_packages).
        "PYTHONPATH": os.pathsep.join([_ROOT, *(entry for entry in sys.path if entry and os.path.isdir(entry))]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "LANG": "C.UTF-8",
    }


def _spawn(mode: str, limits: SandboxLimits) -> _Child:
    request_read, request_write = os.pipe()
    reply_read, reply_write = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "shared.inference.sandbox_child", mode, str(request_read), str(reply_write)],
            pass_fds=(request_read, reply_write),
            env={**_child_environment(), "SANDBOX_LIMITS": json.dumps(asdict(limits))},
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for the host does not reach it; the host stops it
        )
    finally:
        os.close(request_read)
        os.close(reply_write)
    return _Child(process, Connection(request_write, readable=False), Connection(reply_read, writable=False))


def _answers_ping(child: _Child) -> bool:
    try:
        send_frame(child.requests, {"ping": True})
        return child.replies.poll(PING_SECONDS) and receive_frame(child.replies).get("pong") is True
    except (EOFError, OSError, ValueError):
        return False


def _package_message(card: ModelCard, artifact: bytes, files: dict[str, bytes]) -> dict[str, Any]:
    return {"card": card.raw, "artifact": artifact, "files": files}


def _death(child: _Child, limits: SandboxLimits) -> str:
    code = child.process.wait()
    if code < 0:
        name = signal.Signals(-code).name
        why = {"SIGXCPU": "it used up its CPU time", "SIGKILL": "it was killed"}.get(name, f"it crashed ({name})")
    else:
        why = f"it exited with status {code} (out of memory or a crash)"
    return f"{why}; limits: {limits.memory_bytes // 1024**2} MiB of memory, {limits.cpu_seconds} s of CPU"


def check_in_sandbox(
    card: ModelCard, artifact: bytes, files: dict[str, bytes], limits: SandboxLimits = DEFAULT_LIMITS
) -> None:
    """Validates a tenant's ONNX package in a child with resource limits; raises InvalidInput with the reason."""
    size = len(artifact) + sum(len(data) for data in files.values())
    if size > limits.max_package_bytes:
        raise InvalidInput(
            f"the package is {size} bytes; at most {limits.max_package_bytes} are accepted", code="ArtifactTooLarge"
        )
    child = _spawn("check", limits)
    try:
        try:
            send_frame(child.requests, _package_message(card, artifact, files))
            if not child.replies.poll(limits.wall_seconds):
                raise InvalidInput(
                    f"the model was not loaded and run on one record within {limits.wall_seconds:g} s",
                    code="InvalidModelPackage",
                )
            answer = receive_frame(child.replies)
        except (EOFError, OSError):
            reason = _death(child, limits)
            raise InvalidInput(f"the model could not be checked: {reason}", code="InvalidModelPackage") from None
    finally:
        child.kill()
    if answer.get("problem"):
        raise InvalidInput(str(answer["problem"]), code="InvalidModelPackage")


Key = tuple[str, str, str]  # (owner, name, version)


@dataclass
class _Sandbox:
    key: Key
    mode: str  # "serve": records in, results out; "session": tensors in and out (sandbox_session.py)
    card: ModelCard
    read_package: Callable[[], tuple[bytes, dict[str, bytes]]]
    lock: threading.Lock
    child: _Child | None = None
    used_at: float = 0.0
    ready: dict[str, Any] | None = None  # what the child answered when it had loaded the model


class SandboxPool:
    """Serving children of tenants' models, at most `max_children` at once."""

    def __init__(self, limits: SandboxLimits = DEFAULT_LIMITS, *, max_children: int = 4) -> None:
        self.limits = limits
        self._max = max_children
        self._lock = threading.Lock()
        self._sandboxes: OrderedDict[tuple[str, str, str, str], _Sandbox] = OrderedDict()
        self._reaper: threading.Thread | None = None
        # Every child started, so that a pool dropped without close() (a registry that goes away) stops them:
        # the finalizer holds this set, never the pool.
        self._children: set[_Child] = set()
        weakref.finalize(self, _kill_all, self._children)

    def register(self, card: ModelCard, read_package: Callable[[], tuple[bytes, dict[str, bytes]]], mode: str) -> Key:
        key = (card.owner or "", card.name, card.version)
        with self._lock:
            if (*key, mode) not in self._sandboxes:
                self._sandboxes[(*key, mode)] = _Sandbox(key, mode, card, read_package, threading.Lock())
            if self._reaper is None:
                self._reaper = threading.Thread(
                    target=_reap, args=(weakref.ref(self), self.limits.idle_seconds), name="sandbox-reaper", daemon=True
                )
                self._reaper.start()
        return key

    def pid(self, key: Key, mode: str = "serve") -> int | None:
        sandbox = self._sandboxes.get((*key, mode))
        child = sandbox.child if sandbox else None
        return child.process.pid if child and child.process.poll() is None else None

    def start(self, key: Key, mode: str = "serve") -> dict[str, Any]:
        """Starts the child now unless it runs; its ready answer; raises SandboxUnavailable."""
        sandbox = self._sandboxes[(*key, mode)]
        with sandbox.lock:
            self._ready(sandbox)
            sandbox.used_at = time.monotonic()
            return dict(sandbox.ready or {})

    def exchange(
        self, key: Key, mode: str, message: dict[str, Any], frames: Sequence[bytes] = ()
    ) -> tuple[dict[str, Any], list[bytes]]:
        """One request (a JSON frame, then raw frames) and its answer (a JSON frame naming how many raw frames
        follow in `frames`), to a live child; raises SandboxUnavailable if it dies or overruns meanwhile."""
        sandbox = self._sandboxes[(*key, mode)]
        with sandbox.lock:
            child = self._ready(sandbox)
            try:
                send_frame(child.requests, message)
                for frame in frames:
                    child.requests.send_bytes(frame)
                if not child.replies.poll(self.limits.call_seconds):
                    raise TimeoutError(f"no answer within {self.limits.call_seconds:g} s")
                answer = receive_frame(child.replies)
                raw = [child.replies.recv_bytes(MAX_FRAME_BYTES) for _ in range(int(answer.get("frames", 0)))]
            except (EOFError, OSError, TimeoutError, ValueError) as err:
                sandbox.child = None
                self._kill(child)
                logger.warning("sandbox of %s@%s failed during a call: %s", key[1], key[2], err)
                raise SandboxUnavailable(f"model {key[1]!r} version {key[2]!r} is not available right now") from None
            sandbox.used_at = time.monotonic()
        return answer, raw

    def call(self, key: Key, records: list[Any], parameters: dict[str, Any]) -> list[Any]:
        answer, _ = self.exchange(key, "serve", {"records": records, "parameters": parameters})
        if "invalid" in answer:
            refused = answer["invalid"]
            raise RecordRefused(int(refused["row"]), str(refused["message"]), field=refused.get("field"))
        if "error" in answer:
            raise RuntimeError(f"model {key[1]}@{key[2]} failed: {answer['error']}")
        return list(answer["results"])

    def _ready(self, sandbox: _Sandbox) -> _Child:
        """The sandbox's live child, started (package sent, model loaded) if it has none or it died: a child
        killed a moment ago may not look dead yet, but it never answers the ping."""
        if sandbox.child is not None and sandbox.child.process.poll() is None and _answers_ping(sandbox.child):
            return sandbox.child
        if sandbox.child is not None:
            logger.warning("sandbox of %s@%s had died; starting another", sandbox.key[1], sandbox.key[2])
            self._kill(sandbox.child)
            sandbox.child = None
        self._make_room(sandbox)
        artifact, files = sandbox.read_package()
        child = _spawn(sandbox.mode, self.limits)
        try:
            send_frame(child.requests, _package_message(sandbox.card, artifact, files))
            del artifact, files
            if not child.replies.poll(self.limits.wall_seconds):
                raise TimeoutError("the model did not load in time")
            answer = receive_frame(child.replies)
            if not answer.get("ready"):
                raise RuntimeError(str(answer.get("problem") or answer))
        except Exception as err:
            self._kill(child)
            logger.warning("sandbox of %s@%s did not start: %s", sandbox.key[1], sandbox.key[2], err)
            raise SandboxUnavailable(
                f"model {sandbox.key[1]!r} version {sandbox.key[2]!r} is not available right now"
            ) from None
        logger.info("sandbox of %s@%s started (pid %d)", sandbox.key[1], sandbox.key[2], child.process.pid)
        sandbox.child, sandbox.used_at, sandbox.ready = child, time.monotonic(), answer
        self._children.add(child)
        return child

    def _make_room(self, sandbox: _Sandbox) -> None:
        with self._lock:
            self._sandboxes.move_to_end((*sandbox.key, sandbox.mode))
            running = [s for s in self._sandboxes.values() if s.child is not None and s is not sandbox]
        excess = len(running) + 1 - self._max
        for sandbox in running:
            # Never wait for another sandbox's lock while holding this one's (two calls making room at once would
            # deadlock): one in use is not the one to stop anyway.
            if excess > 0 and self._stop(sandbox, "the pool is full", wait=False):
                excess -= 1

    def _stop(self, sandbox: _Sandbox, why: str, *, wait: bool = True) -> bool:
        if not sandbox.lock.acquire(blocking=wait):
            return False
        try:
            if sandbox.child is None:
                return False
            logger.info("sandbox of %s@%s stopped: %s", sandbox.key[1], sandbox.key[2], why)
            self._kill(sandbox.child)
            sandbox.child = None
            return True
        finally:
            sandbox.lock.release()

    def reap_idle(self) -> None:
        now = time.monotonic()
        with self._lock:
            idle = [s for s in self._sandboxes.values() if s.child and now - s.used_at > self.limits.idle_seconds]
        for sandbox in idle:
            self._stop(sandbox, "idle", wait=False)  # one in a call now is not idle

    def _kill(self, child: _Child) -> None:
        child.kill()
        self._children.discard(child)

    def close(self) -> None:
        with self._lock:
            sandboxes = list(self._sandboxes.values())
        for sandbox in sandboxes:
            self._stop(sandbox, "closed")


def _reap(pool: weakref.ref[SandboxPool], idle_seconds: float) -> None:
    """The reaper thread: holds its pool only while it looks, and ends when the pool is gone."""
    while True:
        time.sleep(max(0.05, idle_seconds / 4))
        alive = pool()
        if alive is None:
            return
        alive.reap_idle()
        del alive


def _kill_all(children: set[_Child]) -> None:
    for child in list(children):
        child.kill()
    children.clear()
