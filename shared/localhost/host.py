"""The local host (`aiaas up`): stand-ins, the HTTP API, the inbox watcher, the event broker and worker processes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from shared import bootstrap
from shared.config import AZURITE_ACCOUNT, LOCAL_EVENTGRID_KEY, Settings, get_settings
from shared.localhost.emulators import Azurite, CosmosServer, pdeathsig_preexec

logger = logging.getLogger(__name__)

# Supervision of the host's children. A child that dies within HEALTHY_UPTIME_SECONDS of its start waits twice as
# long as last time before its next start (up to the cap), so a crash loop (bad settings, a dependency down, a
# shard that crashes the runtime) costs little CPU; one that ran that long is replaced after the first delay.
SUPERVISE_INTERVAL_SECONDS = 0.25
FIRST_RESTART_DELAY_SECONDS = 0.5
MAX_RESTART_DELAY_SECONDS = 30.0
HEALTHY_UPTIME_SECONDS = 5.0


def describe_exit(code: int) -> str:
    """How a child ended, from its Popen return code: "killed by SIGKILL" or "exited with status 1"."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class RestartBackoff:
    """The wait before a dead child starts again: doubling while it keeps dying soon after its start, reset once
    it stayed up `healthy` seconds."""

    def __init__(
        self,
        *,
        first: float = FIRST_RESTART_DELAY_SECONDS,
        cap: float = MAX_RESTART_DELAY_SECONDS,
        healthy: float = HEALTHY_UPTIME_SECONDS,
    ) -> None:
        self.first = first
        self.cap = cap
        self.healthy = healthy
        self._next = first

    def after_death(self, uptime: float) -> float:
        """The delay before the next start of a child that died after `uptime` seconds."""
        if uptime >= self.healthy:
            self._next = self.first
        delay = self._next
        self._next = min(self.cap, delay * 2)
        return delay


def allow_console_uploads(connection_string: str | None, origins: list[str]) -> None:
    """CORS on the tenants' Blob service so the console's page may PUT to an upload SAS URL from its origin.

    Azurite, as Azure, answers a cross-origin preflight only when the Blob service properties carry a matching
    CORS rule (at most 5 rules per service: "CORS support for Azure Storage"). In Azure the storage account's
    blobServices/cors (bicep/modules/storage.bicep) carries the console's origin.
    """
    if not connection_string:
        return
    from azure.storage.blob import BlobServiceClient, CorsRule

    rule = CorsRule(
        origins,
        ["PUT"],
        allowed_headers=["content-type", "x-ms-blob-type", "x-ms-version", "x-ms-date", "x-ms-client-request-id"],
        exposed_headers=["etag", "x-ms-request-id"],
        max_age_in_seconds=600,
    )
    BlobServiceClient.from_connection_string(connection_string).set_service_properties(cors=[rule])


@dataclass
class _Supervised:
    """What the supervisor knows of one child: when it last started, and when it is due again while dead."""

    name: str
    started_at: float
    backoff: RestartBackoff
    restart_at: float | None = None

    def started(self, now: float) -> None:
        self.started_at = now
        self.restart_at = None


class LocalHost:
    """Starts everything in order and stops it all (by PID) in reverse; usable as a context manager.

    While it runs, a supervisor thread watches every child: a worker or Azurite that dies is started again (with
    back-off); if the Cosmos stand-in or the HTTP API dies, the platform cannot go on, so it stops itself and
    `failure` says why (`wait()` returns then).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int | None = None,
        log_level: str = "WARNING",
        stand_ins_running: bool = False,
    ) -> None:
        self.settings = settings
        # One stamp of `aiaas up --regions` (shared.localhost.stamps): the stand-ins are the parent's, already
        # up at the settings' ports, and this host neither starts, supervises nor stops them.
        self.stand_ins_running = stand_ins_running
        self.workers = settings.workers if workers is None else workers
        self.log_level = log_level
        data_dir = settings.data_dir.resolve()
        self.azurite = Azurite(
            data_dir=data_dir / "azurite",
            blob_port=settings.azurite_blob_port,
            queue_port=settings.azurite_queue_port,
            table_port=settings.azurite_table_port,
        )
        self.cosmos = CosmosServer(data_dir=data_dir / "cosmos", port=settings.cosmos_port)
        self.worker_processes: list[subprocess.Popen[bytes]] = []
        self._server: Any = None
        self._server_thread: threading.Thread | None = None
        self._watcher: Any = None
        self.broker: Any = None
        self._log_dir = data_dir / "logs"
        self._stopping = threading.Event()
        self._saved_environ: dict[str, str] | None = None
        self._sweeper: threading.Thread | None = None
        self.failure: str | None = None
        self._supervisor: threading.Thread | None = None
        self._worker_states: list[_Supervised] = []
        self._azurite_state: _Supervised | None = None
        # Held by the supervisor while it checks or restarts children, so stop() and restart_worker() never
        # race a restart.
        self._children_lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._stop_begun = False
        self._stopped = threading.Event()
        self._launched_at = 0.0

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}/api"

    def console_origins(self) -> list[str]:
        """Where the web console (/console) is served from: it PUTs uploads to the SAS URL from there."""
        port = self.settings.api_port
        origins = [f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://{self.settings.api_host}:{port}"]
        if self.settings.public_api_url:
            public = httpx.URL(self.settings.public_api_url)
            origins.append(f"{public.scheme}://{public.netloc.decode()}")
        return sorted(set(origins))

    def environment(self) -> dict[str, str]:
        """Every setting, as the AIAAS_* variables the worker processes read (they are separate processes)."""
        env = {}
        for name, value in self.settings.model_dump().items():
            if value is not None:
                env[f"AIAAS_{name.upper()}"] = str(value)
        env["AIAAS_ENVIRONMENT"] = "development"
        env["AIAAS_STORAGE_CONNECTION_STRING"] = self.storage_connection_string
        return env

    @property
    def storage_connection_string(self) -> str:
        """The tenants' storage account of this stamp: its own Azurite's, or the settings' (one of several
        accounts on the parent's Azurite)."""
        if self.stand_ins_running and self.settings.storage_connection_string:
            return self.settings.storage_connection_string
        return self.azurite.connection_string

    def _storage_account(self) -> tuple[str, str]:
        """The tenants' account name and blob endpoint, as the watcher names blobs."""
        if not self.stand_ins_running:
            return AZURITE_ACCOUNT, self.azurite.blob_endpoint
        parts = dict(part.split("=", 1) for part in self.storage_connection_string.split(";") if "=" in part)
        return parts["AccountName"], parts["BlobEndpoint"]

    def start(self) -> None:
        started = time.perf_counter()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        logger.info("local host ready in %.1fs at %s", time.perf_counter() - started, self.api_url)

    def _start(self) -> None:
        self._launched_at = time.monotonic()
        self._log_dir.mkdir(parents=True, exist_ok=True)
        # Started from this thread: the children die with the thread that spawned them (PR_SET_PDEATHSIG).
        if not self.stand_ins_running:
            self.azurite.start()
            self.cosmos.start()
        self._saved_environ = dict(os.environ)
        os.environ.update(self.environment())
        bootstrap.reset()
        platform = bootstrap.get_platform()
        platform.blobs.ensure_container("models")
        allow_console_uploads(get_settings().storage_connection_string, self.console_origins())
        # Event Grid dead-letters into the platform's own account (the domain's identity writes there), never
        # into the tenants' account, whose containers tenants hold SAS for.
        bootstrap.build_platform_blobs(get_settings()).ensure_container(self.settings.deadletter_container)
        publish_models(platform.models, self.settings.models_dir)
        bootstrap.build_job_queue(get_settings()).ensure_queues()
        self._start_api()
        self._start_workers()
        from shared.localhost.functions_host import registered_function
        from shared.localhost.watcher import InboxWatcher

        account, blob_endpoint = self._storage_account()
        self._watcher = InboxWatcher(
            platform.blobs,
            registered_function("ingest_blob"),
            account=account,
            blob_endpoint=blob_endpoint,
            interval=self.settings.watch_interval_seconds,
        )
        self._watcher.start()
        self._sweeper = threading.Thread(target=self._run_timer, args=("sweep_jobs",), name="sweeper", daemon=True)
        self._sweeper.start()
        self._start_supervisor()

    def _run_timer(self, name: str) -> None:
        """Calls a registered timer function every sweep interval, as the Functions host's timer would."""
        import azure.functions.timer

        from shared.localhost.functions_host import registered_function

        function = registered_function(name)
        while not self._stopping.wait(self.settings.sweep_interval_seconds):
            try:
                function(azure.functions.timer.TimerRequest(past_due=False))
            except Exception:
                logger.exception("timer function %s failed", name)

    def _start_api(self) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.routing import Mount

        from functions.http_api import asgi_app
        from shared.adapters.egress import EgressPolicy
        from shared.localhost.broker import LocalEventBroker

        settings = get_settings()
        self.broker = LocalEventBroker(
            bootstrap.get_platform,
            key=settings.eventgrid_key or LOCAL_EVENTGRID_KEY,
            dead_letters=bootstrap.build_platform_blobs(settings),
            deadletter_container=settings.deadletter_container,
            secrets=bootstrap.build_secret_store(settings),
            api_url=settings.public_api_url or self.api_url,
            relay_master_key=settings.relay_key or "",
            time_scale=settings.event_time_scale,
            timeout_seconds=settings.event_delivery_timeout_seconds,
            egress=EgressPolicy(settings.allow_loopback_endpoints),
        )
        self.broker.start()
        root = Starlette(routes=[Mount("/broker", app=self.broker.asgi_app()), Mount("/", app=asgi_app)])
        config = uvicorn.Config(
            root,
            host=self.settings.api_host,
            port=self.settings.api_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._server_thread = threading.Thread(target=self._serve_api, args=(self._server,), name="api", daemon=True)
        self._server_thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self._server_thread.is_alive():
            try:
                if httpx.get(f"{self.api_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the HTTP API did not come up at {self.api_url}")

    @staticmethod
    def _serve_api(server: Any) -> None:
        try:
            server.run()
        except BaseException:  # uvicorn exits with SystemExit when it cannot serve; the supervisor acts on it
            logger.exception("the HTTP API server crashed")

    def _start_workers(self) -> None:
        self.worker_processes = [self._spawn_worker(index) for index in range(self.workers)]

    def worker_onnx_threads(self) -> int:
        """ONNX Runtime threads per worker: as configured, else the cores shared out, so workers do not
        oversubscribe them (measured: two workers of two threads each on two cores embed texts 32% slower)."""
        if self.settings.onnx_threads:
            return self.settings.onnx_threads
        return max(1, (os.cpu_count() or 1) // max(1, self.workers))

    def _spawn_worker(self, index: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **self.environment(),
            "AIAAS_LOG_LEVEL": self.log_level,
            "AIAAS_ONNX_THREADS": str(self.worker_onnx_threads()),
        }
        with (self._log_dir / f"worker-{index}.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "shared.localhost.worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pdeathsig_preexec(),
            )

    def restart_worker(self, index: int) -> None:
        """Kills a worker with SIGKILL and starts a fresh one at once; the queue redelivers its work."""
        with self._children_lock:
            old = self.worker_processes[index]
            if old.poll() is None:
                old.kill()
            old.wait()
            self.worker_processes[index] = self._spawn_worker(index)
            if index < len(self._worker_states):
                self._worker_states[index].started(time.monotonic())

    # -- supervision ---------------------------------------------------------------------------------------
    def _start_supervisor(self) -> None:
        now = self._launched_at  # the children started since then: their uptime counts from here
        self._worker_states = [
            _Supervised(f"worker {index}", now, RestartBackoff()) for index in range(len(self.worker_processes))
        ]
        self._azurite_state = None if self.stand_ins_running else _Supervised("azurite", now, RestartBackoff())
        self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        self._supervisor.start()
        logger.info(
            "supervising workers (pids %s), azurite (pid %s), cosmos (pid %s)",
            [process.pid for process in self.worker_processes],
            self.azurite.pid,
            self.cosmos.pid,
        )

    def _supervise(self) -> None:
        """Polls the children until stop(); replaces the dead, or stops the platform when that cannot help."""
        try:
            while not self._stopping.wait(SUPERVISE_INTERVAL_SECONDS):
                failure = None
                with self._children_lock:
                    if self._stopping.is_set():
                        break
                    try:
                        failure = self._check_children(time.monotonic())
                    except Exception:
                        logger.exception("the supervisor's check of the children failed; it checks again")
                if failure is not None:
                    self._fail(failure)
                    break
        finally:
            # The kernel kills the children this thread started when it ends (PR_SET_PDEATHSIG is per thread):
            # it outlives stop(), which ends them gracefully first.
            self._stopped.wait()

    def _check_children(self, now: float) -> str | None:
        """One round: returns why the platform must stop, or None."""
        for index, state in enumerate(self._worker_states):
            self._check_worker(index, state, now)
        failure = self._check_azurite(now)
        if failure is not None:
            return failure
        code = self.cosmos.exit_code()
        if code is not None:
            # Restarting it would bring back an empty database: every tenant's key would answer 401 and every
            # job in flight would vanish. Stopping says so plainly instead of serving errors.
            return (
                f"the Cosmos DB stand-in (pid {self.cosmos.pid}) {describe_exit(code)}; it kept this run's "
                "tenants, API keys and jobs in memory only, so they are gone and the platform cannot go on. "
                f"Its log: {self.cosmos.log_file}. Start again with `make up` and create the tenants again."
            )
        if self._server_thread is not None and not self._server_thread.is_alive():
            return (
                f"the HTTP API server at {self.api_url} stopped unexpectedly (its error is logged above); "
                "the platform cannot go on without it. Start again with `make up`."
            )
        return None

    def _check_worker(self, index: int, state: _Supervised, now: float) -> None:
        process = self.worker_processes[index]
        if state.restart_at is None:
            code = process.poll()
            if code is not None:
                log = self._log_dir / f"worker-{index}.log"
                self._note_death(state, process.pid, code, now, f"the queue redelivers its shard; log: {log}")
            return
        if now < state.restart_at:
            return
        try:
            self.worker_processes[index] = self._spawn_worker(index)
        except OSError:
            state.restart_at = now + state.backoff.after_death(0.0)
            logger.exception("%s could not be started; trying again in %.1fs", state.name, state.restart_at - now)
            return
        state.started(now)
        logger.warning("%s started again (pid %d)", state.name, self.worker_processes[index].pid)

    def _check_azurite(self, now: float) -> str | None:
        state = self._azurite_state
        if state is None:
            return None
        if state.restart_at is None:
            code = self.azurite.exit_code()
            if code is not None:
                self._note_death(
                    state,
                    self.azurite.pid,
                    code,
                    now,
                    f"on the same ports; blobs and queues persist in {self.azurite.data_dir}, but it saves its "
                    f"metadata every 5 s, so the writes of its last seconds may be lost; log: {self.azurite.log_file}",
                )
            return None
        if now < state.restart_at:
            return None
        try:
            self.azurite.restart()
        except RuntimeError as err:
            return f"Azurite died and could not be restarted: {err}"
        state.started(time.monotonic())
        logger.warning("Azurite started again (pid %s) at %s", self.azurite.pid, self.azurite.blob_endpoint)
        return None

    @staticmethod
    def _note_death(state: _Supervised, pid: int | None, code: int, now: float, consequence: str) -> None:
        """Logs how a child ended and schedules its restart after its back-off."""
        uptime = now - state.started_at
        delay = state.backoff.after_death(uptime)
        state.restart_at = now + delay
        logger.error(
            "%s (pid %s) %s after %.1fs up; it starts again in %.1fs (%s)",
            state.name,
            pid,
            describe_exit(code),
            uptime,
            delay,
            consequence,
        )

    def _fail(self, failure: str) -> None:
        """Stops the platform from the supervisor's thread, saying why (`aiaas up` prints it and exits 1)."""
        if self._stopping.is_set():
            return
        self.failure = failure
        logger.critical("%s", failure)
        self.stop()

    def wait(self, stop: threading.Event) -> None:
        """Blocks until `stop` is set or the platform has stopped itself (`failure` then says why)."""
        while self.failure is None and not stop.wait(SUPERVISE_INTERVAL_SECONDS):
            pass

    # -- stopping ------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stops everything it started, once, whichever thread asks first; later calls wait for that to end."""
        with self._stop_lock:
            begun, self._stop_begun = self._stop_begun, True
        if begun:
            if threading.current_thread() is not self._supervisor:
                self._stopped.wait()
            return
        try:
            self._stop()
        finally:
            self._stopped.set()
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join(timeout=10)

    def _stop(self) -> None:
        self._stopping.set()
        with self._children_lock:  # a check or restart in flight ends; the supervisor starts nothing after it
            pass
        if self._sweeper is not None:
            self._sweeper.join(timeout=10)
            self._sweeper = None
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        for process in self.worker_processes:
            if process.poll() is None:
                process.terminate()
        for process in self.worker_processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.worker_processes.clear()
        if self._server is not None:
            self._server.should_exit = True
            if self._server_thread is not None:
                self._server_thread.join(timeout=10)
            self._server = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        self.cosmos.stop()
        self.azurite.stop()
        if self._saved_environ is not None:  # the next host in this process starts from a clean slate
            os.environ.clear()
            os.environ.update(self._saved_environ)
            self._saved_environ = None
            bootstrap.reset()

    def __enter__(self) -> LocalHost:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def publish_models(registry: Any, models_dir: Path) -> list[str]:
    """Uploads every built package under models_dir (`<name>/<version>/card.json`) that is not there yet."""
    published = []
    for card in sorted(models_dir.glob("*/*/card.json")):
        if registry.publish_package(card.parent):
            published.append(f"{card.parent.parent.name}@{card.parent.name}")
    if not published and not any(models_dir.glob("*/*/card.json")):
        logger.warning("no model packages under %s: run `make models`", models_dir)
    return published
