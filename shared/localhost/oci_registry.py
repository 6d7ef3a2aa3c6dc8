"""The local stand-in for Azure Container Registry: the CNCF distribution registry (Debian's `docker-registry`) on a
free loopback port, and a helper that pushes a labelled image (config blob + layer + manifest) over the OCI API.

Nothing here builds or runs a container: a container model's image only has to exist in a registry with its
labels for the platform to find it (shared/inference/containers.py); what serves it is the endpoint its labels
name. The push helper speaks the OCI distribution API directly (monolithic blob upload: POST then PUT ?digest=,
then PUT of the manifest), which is what `docker push` and `oras push` do underneath.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from shared.localhost.emulators import free_port, pdeathsig_preexec

logger = logging.getLogger(__name__)
REGISTRY_BINARY = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# The distribution registry refuses manifests over 4 MiB (registry/handlers/manifests.go maxManifestBodySize), as
# ACR does (ACR "Manifest size" limit, 4 MB: learn.microsoft.com/azure/container-registry/container-registry-skus).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

_CONFIG = """version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


def registry_binary() -> str:
    """The registry executable: AIAAS_DOCKER_REGISTRY overrides, else the Debian package's, else PATH."""
    candidate = os.environ.get("AIAAS_DOCKER_REGISTRY") or REGISTRY_BINARY
    if Path(candidate).is_file():
        return candidate
    found = shutil.which("docker-registry")
    if not found:
        raise RuntimeError(
            "docker-registry is not installed: `make test` installs it "
            "(apt-get install docker-registry=2.8.2+ds1-1, the CNCF distribution registry)"
        )
    return found


class OciRegistry:
    """A throwaway distribution registry: its own config and storage in a temp dir, stopped by its PID."""

    def __init__(self, *, port: int | None = None, data_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="aiaas-oci-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 30.0) -> Self:
        storage = self.data_dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "config.yml"
        config.write_text(_CONFIG.format(root=storage, port=self.port))
        log = (self.data_dir / "registry.log").open("wb")
        self._process = subprocess.Popen(
            [registry_binary(), "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=pdeathsig_preexec(),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = (self.data_dir / "registry.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"docker-registry exited with {self._process.returncode}: {tail}")
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1.0).status_code == 200:
                    logger.info("docker-registry on %s (pid %d)", self.url, self._process.pid)
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.url} within {timeout} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def push_image(
        self,
        repository: str,
        tag: str,
        labels: dict[str, str] | None,
        *,
        layer: bytes = b"",
        config_extra: dict[str, Any] | None = None,
    ) -> str:
        """Pushes an image whose config carries `labels` (None: no Labels at all); returns the manifest digest."""
        return push_image(self.url, repository, tag, labels, layer=layer, config_extra=config_extra)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_image(
    registry_url: str,
    repository: str,
    tag: str,
    labels: dict[str, str] | None,
    *,
    layer: bytes = b"",
    config_extra: dict[str, Any] | None = None,
) -> str:
    """An OCI image manifest pointing at a config blob (with `config.Labels`, as `docker build` writes LABELs) and
    one layer, uploaded to `registry_url`; returns the manifest's digest."""
    config_doc: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {} if labels is None else {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]},
        **(config_extra or {}),
    }
    config = json.dumps(config_doc, sort_keys=True).encode()
    with httpx.Client(base_url=registry_url, timeout=30.0) as client:
        for blob in (config, layer):
            _upload_blob(client, repository, blob)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(layer), "size": len(layer)}],
            }
        ).encode()
        response = client.put(
            f"/v2/{repository}/manifests/{tag}", content=manifest, headers={"content-type": OCI_MANIFEST}
        )
        response.raise_for_status()
        return str(response.headers.get("docker-content-digest") or digest_of(manifest))


def _upload_blob(client: httpx.Client, repository: str, data: bytes) -> None:
    digest = digest_of(data)
    if client.head(f"/v2/{repository}/blobs/{digest}").status_code == 200:
        return
    started = client.post(f"/v2/{repository}/blobs/uploads/")
    started.raise_for_status()
    location = started.headers["location"]
    # The location carries the upload's own state in its query (`_state=`): add the digest, never replace it.
    done = client.put(
        httpx.URL(location).copy_merge_params({"digest": digest}) if "://" in location else location,
        params=None if "://" in location else httpx.QueryParams(httpx.URL(location).query).set("digest", digest),
        content=data,
        headers={"content-type": "application/octet-stream"},
    )
    done.raise_for_status()
