"""`aiaas up --regions a,b`: one local stamp per region, each an `aiaas up` child over the shared stand-ins."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from shared.config import Settings, azurite_connection_string
from shared.localhost.emulators import Azurite, CosmosServer, pdeathsig_preexec

logger = logging.getLogger(__name__)

# A region name locally: short, so that its storage accounts' names stay inside Azure's 3-24 lowercase letters
# and digits (Azure Storage naming rules; Azurite accepts what Azure does).
LOCAL_REGION = re.compile(r"^[a-z0-9]{1,12}$")
STAMPS_FILE = "stamps.json"
# Settings a stamp derives from its own port or account: never inherited from the parent's environment.
PER_STAMP = (
    "AIAAS_PUBLIC_API_URL",
    "AIAAS_EVENTGRID_ENDPOINT",
    "AIAAS_STORAGE_CONNECTION_STRING",
    "AIAAS_PLATFORM_STORAGE_CONNECTION_STRING",
)


def local_account_key(account: str) -> str:
    """A local account's key: derived from its name (public like Azurite's own; development only)."""
    return base64.b64encode(hashlib.sha512(f"aiaas-local-stamp:{account}".encode()).digest()).decode()


@dataclass(frozen=True)
class LocalStamp:
    """One region's stamp on this machine: its accounts, Cosmos database, API port and data dir."""

    region: str
    api_port: int
    data_dir: Path
    settings: Settings

    @property
    def account(self) -> str:
        return f"aiaas{self.region}"

    @property
    def platform_account(self) -> str:
        return f"aiaasp{self.region}"

    @property
    def database(self) -> str:
        return f"aiaas-{self.region}"

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.api_port}/api"

    def accounts(self) -> list[tuple[str, str]]:
        return [(name, local_account_key(name)) for name in (self.account, self.platform_account)]

    def environment(self) -> dict[str, str]:
        """The settings that make an `aiaas up` (or an `aiaas` command) this stamp."""
        s = self.settings
        ports = (s.azurite_blob_port, s.azurite_queue_port, s.azurite_table_port)
        return {
            "AIAAS_ENVIRONMENT": "development",
            "AIAAS_REGION": self.region,
            "AIAAS_COSMOS_DATABASE": self.database,
            "AIAAS_DIRECTORY_DATABASE": s.directory_database,
            "AIAAS_API_PORT": str(self.api_port),
            "AIAAS_DATA_DIR": str(self.data_dir),
            "AIAAS_AZURITE_BLOB_PORT": str(s.azurite_blob_port),
            "AIAAS_AZURITE_QUEUE_PORT": str(s.azurite_queue_port),
            "AIAAS_AZURITE_TABLE_PORT": str(s.azurite_table_port),
            "AIAAS_COSMOS_PORT": str(s.cosmos_port),
            "AIAAS_STORAGE_CONNECTION_STRING": azurite_connection_string(
                "127.0.0.1", *ports, account=self.account, key=local_account_key(self.account)
            ),
            "AIAAS_PLATFORM_STORAGE_CONNECTION_STRING": azurite_connection_string(
                "127.0.0.1", *ports, account=self.platform_account, key=local_account_key(self.platform_account)
            ),
        }


def plan_stamps(settings: Settings, regions: list[str]) -> list[LocalStamp]:
    """The stamps of `--regions`: the first API on AIAAS_API_PORT, the next ones on the ports after it."""
    if not regions or len(set(regions)) != len(regions):
        raise ValueError("--regions takes distinct region names, e.g. a,b")
    for region in regions:
        if not LOCAL_REGION.fullmatch(region):
            raise ValueError(f"local region {region!r}: 1-12 lowercase letters or digits")
    root = settings.data_dir.resolve()
    return [
        LocalStamp(region, settings.api_port + index, root / f"stamp-{region}", settings)
        for index, region in enumerate(regions)
    ]


def stamp_environment(data_dir: Path, region: str) -> dict[str, str] | None:
    """The settings of a running local stamp of `region` (from its stamps file), or None."""
    try:
        stamps = json.loads((data_dir.resolve() / STAMPS_FILE).read_text())
    except (OSError, ValueError):
        return None
    found = stamps.get(region)
    return dict(found) if isinstance(found, dict) else None


class LocalStamps:
    """Starts the stand-ins once (every stamp's accounts on one Azurite, every stamp's database and the directory
    on one Cosmos stand-in), then one `aiaas up` child per stamp; stops the children, then the stand-ins."""

    def __init__(self, settings: Settings, regions: list[str], *, workers: int | None, log_level: str) -> None:
        self.settings = settings
        self.stamps = plan_stamps(settings, regions)
        self.workers = workers
        self.log_level = log_level
        data_dir = settings.data_dir.resolve()
        self.azurite = Azurite(
            data_dir=data_dir / "azurite",
            blob_port=settings.azurite_blob_port,
            queue_port=settings.azurite_queue_port,
            table_port=settings.azurite_table_port,
            extra_accounts=[account for stamp in self.stamps for account in stamp.accounts()],
        )
        self.cosmos = CosmosServer(data_dir=data_dir / "cosmos", port=settings.cosmos_port)
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.failure: str | None = None
        self._stamps_file = data_dir / STAMPS_FILE

    def start(self) -> None:
        try:
            self.azurite.start()
            self.cosmos.start()
            for stamp in self.stamps:
                self.children[stamp.region] = self._spawn(stamp)
            for stamp in self.stamps:
                self._wait_ready(stamp)
            self._stamps_file.write_text(json.dumps({s.region: s.environment() for s in self.stamps}, indent=2))
        except BaseException:
            self.stop()
            raise

    def _spawn(self, stamp: LocalStamp) -> subprocess.Popen[bytes]:
        env = {name: value for name, value in os.environ.items() if name not in PER_STAMP}
        env.update(stamp.environment())
        command = [sys.executable, "-m", "shared.cli", "up", "--stand-ins-running", "--log-level", self.log_level]
        if self.workers is not None:
            command += ["--workers", str(self.workers)]
        stamp.data_dir.mkdir(parents=True, exist_ok=True)
        with (stamp.data_dir / "up.log").open("ab") as log:
            return subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pdeathsig_preexec(),
            )

    def _wait_ready(self, stamp: LocalStamp, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        child = self.children[stamp.region]
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise RuntimeError(f"stamp {stamp.region} exited at start; its log: {stamp.data_dir / 'up.log'}")
            try:
                if httpx.get(f"{stamp.api_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"stamp {stamp.region} did not come up at {stamp.api_url}")

    def wait(self, stop: threading.Event) -> None:
        """Until `stop` is set or a stamp or stand-in ends by itself (`failure` then says which)."""
        while not stop.wait(0.25):
            for region, child in self.children.items():
                code = child.poll()
                if code is not None:
                    log = self.settings.data_dir.resolve() / f"stamp-{region}" / "up.log"
                    self.failure = f"stamp {region} stopped (exit status {code}); its log: {log}"
                    return
            for stand_in in (self.azurite, self.cosmos):
                code = stand_in.exit_code()
                if code is not None:
                    self.failure = f"{stand_in.name} stopped (exit status {code}); its log: {stand_in.log_file}"
                    return

    def stop(self) -> None:
        """SIGTERM to every stamp (each stops its API, workers and broker), then the stand-ins."""
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        for child in self.children.values():
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children.clear()
        self._stamps_file.unlink(missing_ok=True)
        self.cosmos.stop()
        self.azurite.stop()
