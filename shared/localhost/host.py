"""The local host (`aiaas up`): stand-ins, the HTTP API, the inbox watcher, the event broker and worker processes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from shared import bootstrap
from shared.config import AZURITE_ACCOUNT, LOCAL_EVENTGRID_KEY, Settings, get_settings
from shared.localhost.emulators import Azurite, CosmosServer, pdeathsig_preexec

logger = logging.getLogger(__name__)


class LocalHost:
    """Starts everything in order and stops it all (by PID) in reverse; usable as a context manager."""

    def __init__(self, settings: Settings, *, workers: int | None = None, log_level: str = "WARNING") -> None:
        self.settings = settings
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

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}/api"

    def environment(self) -> dict[str, str]:
        """Every setting, as the AIAAS_* variables the worker processes read (they are separate processes)."""
        env = {}
        for name, value in self.settings.model_dump().items():
            if value is not None:
                env[f"AIAAS_{name.upper()}"] = str(value)
        env["AIAAS_ENVIRONMENT"] = "development"
        env["AIAAS_STORAGE_CONNECTION_STRING"] = self.azurite.connection_string
        return env

    def start(self) -> None:
        started = time.perf_counter()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        logger.info("local host ready in %.1fs at %s", time.perf_counter() - started, self.api_url)

    def _start(self) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        # Started from this thread: the children die with the thread that spawned them (PR_SET_PDEATHSIG).
        self.azurite.start()
        self.cosmos.start()
        self._saved_environ = dict(os.environ)
        os.environ.update(self.environment())
        bootstrap.reset()
        platform = bootstrap.get_platform()
        for container in ("models", "deadletter"):
            platform.blobs.ensure_container(container)
        publish_models(platform.models, self.settings.models_dir)
        bootstrap.build_job_queue(get_settings()).ensure_queues()
        self._start_api()
        self._start_workers()
        from shared.localhost.functions_host import registered_function
        from shared.localhost.watcher import InboxWatcher

        self._watcher = InboxWatcher(
            platform.blobs,
            registered_function("ingest_blob"),
            account=AZURITE_ACCOUNT,
            blob_endpoint=self.azurite.blob_endpoint,
            interval=self.settings.watch_interval_seconds,
        )
        self._watcher.start()
        self._sweeper = threading.Thread(target=self._run_timer, args=("sweep_jobs",), name="sweeper", daemon=True)
        self._sweeper.start()

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
        from shared.localhost.broker import LocalEventBroker

        self.broker = LocalEventBroker(
            bootstrap.get_platform,
            key=self.settings.eventgrid_key or LOCAL_EVENTGRID_KEY,
            max_attempts=self.settings.webhook_max_attempts,
            first_retry_seconds=self.settings.webhook_first_retry_seconds,
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
        self._server_thread = threading.Thread(target=self._server.run, name="api", daemon=True)
        self._server_thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the HTTP API did not come up at {self.api_url}")

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
        """Kills a worker with SIGKILL and starts a fresh one (the crash tests); the queue redelivers its work."""
        old = self.worker_processes[index]
        if old.poll() is None:
            old.kill()
        old.wait()
        self.worker_processes[index] = self._spawn_worker(index)

    def stop(self) -> None:
        self._stopping.set()
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
