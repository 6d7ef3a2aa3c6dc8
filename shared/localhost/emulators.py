"""Start, watch and stop the local Azure stand-ins (Azurite and the Cosmos DB stand-in) as child processes."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import http.client
import ipaddress
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

logger = logging.getLogger(__name__)

# Well-known development credentials (public; they only ever work against the local stand-ins).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# The platform's own account (models), beside the tenants' one, as in Azure (bicep: platformStorage). Same values
# as shared.config's; a tenant's SAS is signed for devstoreaccount1 and so never names a blob of this account.
AZURITE_PLATFORM_ACCOUNT = "aiaasplatform"
AZURITE_PLATFORM_KEY = "vqJAcV3vx4K1JfDd2TKWdJxI8cmE+DsfkQTvy5n3uC2TiZ93twPblLKlMSJB2us2/V+XNxqsmNqHrYj8/bIA0A=="
COSMOS_EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="

STOP_GRACE_SECONDS = 5.0
_LOG_TAIL_BYTES = 4000
_PR_SET_PDEATHSIG = 1
_COSMOS_SCRIPT = Path(__file__).resolve().with_name("cosmos_server.js")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def repo_root() -> Path:
    """The directory holding package.json and node_modules (AIAAS_REPO_ROOT overrides)."""
    override = os.environ.get("AIAAS_REPO_ROOT")
    if override:
        return Path(override).resolve()
    for candidate in Path(__file__).resolve().parents:
        if (candidate / "package.json").is_file():
            return candidate
    return Path(__file__).resolve().parents[2]


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _node_executable() -> str:
    node = os.environ.get("NODE") or shutil.which("node")
    if not node:
        raise RuntimeError("node is not on PATH; install Node.js 20+ to run the local stand-ins")
    return node


def _require_node_package(package: str) -> Path:
    path = repo_root() / "node_modules" / package
    if not (path / "package.json").is_file():
        raise RuntimeError(
            f"{path} is missing: run `make deps` (or `npm ci` in {repo_root()}) to install the local stand-ins"
        )
    return path


def _port_is_free(host: str, port: int) -> bool:
    """True when a server could listen on host:port now, as Node's listen() would.

    Node sets SO_REUSEADDR before it binds, so sockets of an earlier run still in TIME_WAIT do not stop it; the
    probe must do the same, or `make up` right after Ctrl-C refuses for a minute. A socket still listening on
    the port refuses the bind either way.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGKILL the child when its parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return preexec


def _read_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_tree(pid: int, sig: int) -> None:
    """Signal the child's process group (it leads its own session), or just the pid as a fallback."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


class _NodeStandIn:
    """Shared lifecycle for a stand-in that runs as a Node child process."""

    name = "stand-in"

    def __init__(self, *, data_dir: Path, host: str) -> None:
        if not is_loopback_host(host):
            raise ValueError(f"{self.name} must listen on a loopback address, not {host!r}")
        self.data_dir = Path(data_dir)
        self.host = host
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    # -- hooks -------------------------------------------------------------------------------------------
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ports(self) -> list[int]:
        raise NotImplementedError

    def _probe(self) -> bool:
        """True once the stand-in answers (any HTTP response counts)."""
        raise NotImplementedError

    def _cmdline_matches(self, cmdline: list[str]) -> bool:
        raise NotImplementedError

    def _environment(self) -> dict[str, str] | None:
        """The child's environment; None inherits this process's."""
        return None

    # -- paths -------------------------------------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.data_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        """The child's exit status once it has ended by itself (negative: the signal that killed it); None while
        it runs or when it was never started or has been stopped."""
        return None if self._proc is None else self._proc.poll()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        """Start the stand-in and block until it answers; RuntimeError (with the log tail) otherwise."""
        if self.running:
            return
        self._launch(timeout, log_mode="wb")

    def restart(self, timeout: float = 30.0) -> None:
        """Start the stand-in again after it died by itself: same ports and data dir; the log keeps the dead
        run's last words (appended to, not truncated). RuntimeError, as start(), if it does not come back."""
        if self.running:
            return
        self._cleanup()
        self._launch(timeout, log_mode="ab")

    def _launch(self, timeout: float, *, log_mode: Literal["wb", "ab"]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._kill_stale()
        for port in self._ports():
            if not _port_is_free(self.host, port):
                raise RuntimeError(f"{self.name}: port {self.host}:{port} is already in use")
        command = self._command()
        logger.info("starting %s: %s", self.name, " ".join(command))
        self._log_handle = self.log_file.open(log_mode)
        self._proc = subprocess.Popen(
            command,
            cwd=str(repo_root()),
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env=self._environment(),
            start_new_session=True,
            preexec_fn=pdeathsig_preexec(),
        )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._cleanup()
                raise RuntimeError(f"{self.name} exited early with code {code}; log tail:\n{self.log_tail()}")
            if self._probe():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s; log tail:\n{self.log_tail()}")
            time.sleep(0.1)
        logger.info("%s ready (pid %s)", self.name, self._proc.pid)

    def stop(self) -> None:
        """Stop the child (SIGTERM to its process group, SIGKILL after a grace period). Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            logger.info("stopping %s (pid %s)", self.name, proc.pid)
            _kill_tree(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %s) ignored SIGTERM; sending SIGKILL", self.name, proc.pid)
                _kill_tree(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_GRACE_SECONDS)
            # Leftover members of the child's process group (none expected) go too; the group id
            # cannot have been reused while the group still exists.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._cleanup()

    def _cleanup(self) -> None:
        self._proc = None
        atexit.unregister(self.stop)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def _kill_stale(self) -> None:
        """Kill a process recorded in the pid file by an earlier run, if it is still ours."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        cmdline = _read_cmdline(pid)
        if cmdline is not None and _pid_alive(pid) and self._cmdline_matches(cmdline):
            logger.warning("killing stale %s from an earlier run (pid %s)", self.name, pid)
            _kill_tree(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while _pid_alive(pid) and _read_cmdline(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_alive(pid) and _read_cmdline(pid):
                _kill_tree(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def log_tail(self, max_bytes: int = _LOG_TAIL_BYTES) -> str:
        try:
            data = self.log_file.read_bytes()
        except OSError:
            return "(no log)"
        return data[-max_bytes:].decode(errors="replace")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _http_answers(host: str, port: int, path: str, *, tls: bool = False) -> bool:
    conn: http.client.HTTPConnection
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, port, timeout=1.0, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        conn.request("GET", path)
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return True


class Azurite(_NodeStandIn):
    """Azurite (Blob, Queue and Table stand-in), persisting into ``data_dir``."""

    name = "azurite"

    def __init__(
        self,
        *,
        data_dir: Path,
        host: str = "127.0.0.1",
        blob_port: int = 10000,
        queue_port: int = 10001,
        table_port: int = 10002,
        extra_accounts: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(data_dir=data_dir, host=host)
        self.blob_port = blob_port
        self.queue_port = queue_port
        self.table_port = table_port
        # More (name, key) accounts on the same ports: each stamp's own of `aiaas up --regions`.
        self.extra_accounts = list(extra_accounts)

    def _command(self) -> list[str]:
        package = _require_node_package("azurite")
        script = (repo_root() / "node_modules" / ".bin" / "azurite").resolve()
        if not script.is_file():
            script = package / "dist" / "src" / "azurite.js"
        command = [_node_executable(), str(script), "--silent", "--skipApiVersionCheck", "--loose"]
        command += ["--disableTelemetry", "--location", str(self.data_dir.resolve())]
        for service, port in (
            ("blob", self.blob_port),
            ("queue", self.queue_port),
            ("table", self.table_port),
        ):
            command += [f"--{service}Host", self.host, f"--{service}Port", str(port)]
            command += [f"--{service}KeepAliveTimeout", "600"]
        return command

    def _ports(self) -> list[int]:
        return [self.blob_port, self.queue_port, self.table_port]

    def _environment(self) -> dict[str, str]:
        # Azurite 3.x serves every account of AZURITE_ACCOUNTS (name:key;...) on the same ports, in place of the
        # default one, so the default is listed too. It copies across accounts only from a source the copy can
        # read without the destination's credentials (public or SAS), as Azure does (BlobHandler.validateCopySource).
        accounts = f"{AZURITE_ACCOUNT}:{AZURITE_KEY};{AZURITE_PLATFORM_ACCOUNT}:{AZURITE_PLATFORM_KEY}"
        accounts += "".join(f";{name}:{key}" for name, key in self.extra_accounts)
        return {**os.environ, "AZURITE_ACCOUNTS": accounts}

    def _probe(self) -> bool:
        path = f"/{AZURITE_ACCOUNT}?comp=list"
        return _http_answers(self.host, self.blob_port, path) and _http_answers(self.host, self.queue_port, path)

    def _cmdline_matches(self, cmdline: list[str]) -> bool:
        joined = " ".join(cmdline)
        return "azurite" in joined and str(self.data_dir.resolve()) in cmdline

    def _endpoint(self, port: int) -> str:
        return f"http://{_url_host(self.host)}:{port}/{AZURITE_ACCOUNT}"

    @property
    def blob_endpoint(self) -> str:
        return self._endpoint(self.blob_port)

    @property
    def queue_endpoint(self) -> str:
        return self._endpoint(self.queue_port)

    @property
    def table_endpoint(self) -> str:
        return self._endpoint(self.table_port)

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.blob_endpoint};QueueEndpoint={self.queue_endpoint};"
            f"TableEndpoint={self.table_endpoint};"
        )

    @property
    def platform_blob_endpoint(self) -> str:
        return f"http://{_url_host(self.host)}:{self.blob_port}/{AZURITE_PLATFORM_ACCOUNT}"

    @property
    def platform_connection_string(self) -> str:
        """The platform account's (models): blobs only, the platform keeps no queue or table there."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_PLATFORM_ACCOUNT};AccountKey={AZURITE_PLATFORM_KEY};"
            f"BlobEndpoint={self.platform_blob_endpoint};"
        )


class CosmosServer(_NodeStandIn):
    """The Cosmos DB stand-in (@vercel/cosmosdb-server behind cosmos_server.js, HTTPS with keep-alive).

    Data lives in memory only: it is gone after stop(). ``data_dir`` holds the pid file and the log.
    """

    name = "cosmos"

    def __init__(self, *, data_dir: Path, host: str = "127.0.0.1", port: int = 8081) -> None:
        super().__init__(data_dir=data_dir, host=host)
        self.port = port

    def _command(self) -> list[str]:
        _require_node_package("@vercel/cosmosdb-server")
        return [
            _node_executable(),
            str(_COSMOS_SCRIPT),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--repo-root",
            str(repo_root()),
        ]

    def _ports(self) -> list[int]:
        return [self.port]

    def _probe(self) -> bool:
        return _http_answers(self.host, self.port, "/", tls=True)

    def _cmdline_matches(self, cmdline: list[str]) -> bool:
        return any(part.endswith("cosmos_server.js") for part in cmdline)

    @property
    def endpoint(self) -> str:
        return f"https://{_url_host(self.host)}:{self.port}/"

    @property
    def key(self) -> str:
        return COSMOS_EMULATOR_KEY
