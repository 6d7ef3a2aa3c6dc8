"""Azure Container Registry (and any OCI distribution registry) as a source of container models: list the
repositories and tagged manifests with `azure-containerregistry`, read each image config's `Labels`.

Azure: `ContainerRegistryClient(https://<name>.azurecr.io, managed identity)` with AcrPull on the registry; the
repositories come from ACR's own `/acr/v1/_catalog` and `/acr/v1/<repo>/_manifests` (digests and tags in one
page per repository). A plain OCI registry (locally: the CNCF distribution registry, shared.localhost.oci_registry)
has no `/acr/v1`: on its 404 the same client's pipeline is asked for the OCI distribution API's `/v2/_catalog`
and `/v2/<repo>/tags/list`. Manifests (`GET /v2/<repo>/manifests/<ref>`) and config blobs (`GET /v2/<repo>/
blobs/<digest>`) are the OCI API on both; the SDK checks both digests.

Anonymous access (credential None) is what the SDK offers for public registries; plain http it only allows per
call with its `enforce_https=False` option, which is passed for a loopback registry and nothing else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from shared.inference.containers import ImageLabels

logger = logging.getLogger(__name__)
# An image config is a few KB; one larger than this is not read (it could only be an attack on the reader).
MAX_CONFIG_BYTES = 4 * 1024 * 1024
PAGE_SIZE = 100
MAX_REPOSITORIES = 1000
MAX_TAGS_PER_REPOSITORY = 200
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


def registry_options(endpoint: str) -> dict[str, Any]:
    """Per-call options: plain http only to a loopback registry (the local stand-in)."""
    parts = urlsplit(endpoint)
    if parts.scheme == "https":
        return {}
    if parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK:
        return {"enforce_https": False}
    raise ValueError(f"container registry {endpoint!r} must be https (plain http only on loopback)")


class RegistryImageLister:
    """The tagged images of one registry with their config labels; labels cached by manifest digest."""

    def __init__(self, endpoint: str, credential: Any = None, *, client: Any = None, **client_kwargs: Any) -> None:
        """`client_kwargs` go to ContainerRegistryClient (e.g. `transport` in tests, `audience` in sovereign
        clouds)."""
        self._options = registry_options(endpoint)
        self._host = urlsplit(endpoint).netloc
        if client is None:
            from azure.containerregistry import ContainerRegistryClient

            client = ContainerRegistryClient(endpoint, credential, **client_kwargs)
        self._client = client
        self._labels: dict[str, tuple[dict[str, str], str | None]] = {}  # manifest digest -> labels, problem

    def close(self) -> None:
        self._client.close()

    def list_images(self) -> Iterator[ImageLabels]:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            names = list(self._client.list_repository_names(results_per_page=PAGE_SIZE, **self._options))
        except ResourceNotFoundError:  # no /acr/v1: not ACR, so the OCI distribution API
            pairs = list(self._oci_tagged_manifests())
        else:
            pairs = list(self._acr_tagged_manifests(names))
        for repository, tag, digest in pairs:
            digest, labels, problem = self._labels_of(repository, digest or tag)
            yield ImageLabels(self._host, repository, tag, digest, labels, problem)

    # ACR: one page of manifests (digest + tags) per repository
    def _acr_tagged_manifests(self, names: list[str]) -> Iterator[tuple[str, str, str]]:
        from azure.core.exceptions import ResourceNotFoundError

        if len(names) > MAX_REPOSITORIES:
            logger.warning(
                "container registry %s: over %d repositories; the rest unlisted", self._host, MAX_REPOSITORIES
            )
        for repository in names[:MAX_REPOSITORIES]:
            tagged: list[tuple[str, str, str]] = []
            try:
                pages = self._client.list_manifest_properties(repository, results_per_page=PAGE_SIZE, **self._options)
                for manifest in pages:
                    tagged += [(repository, str(tag), str(manifest.digest)) for tag in manifest.tags or []]
                    if len(tagged) >= MAX_TAGS_PER_REPOSITORY:
                        break
            except ResourceNotFoundError:  # the repository went away between the catalogue and now
                continue
            yield from tagged[:MAX_TAGS_PER_REPOSITORY]

    # Any OCI distribution registry
    def _oci_tagged_manifests(self) -> Iterator[tuple[str, str, str]]:
        for repository in self._oci_pages("/v2/_catalog", "repositories", MAX_REPOSITORIES):
            for tag in self._oci_pages(f"/v2/{repository}/tags/list", "tags", MAX_TAGS_PER_REPOSITORY):
                yield repository, tag, ""

    def _oci_pages(self, path: str, key: str, limit: int) -> Iterator[str]:
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        url: str | None = f"{path}?n={PAGE_SIZE}"
        count = 0
        while url:
            # The SDK wraps no /v2/_catalog; its generated client's send_request runs the request through the same
            # pipeline (auth challenge, retries) as every other call.
            response = self._client._client.send_request(HttpRequest("GET", url), **self._options)
            if response.status_code == 404 and key == "tags":
                return  # the repository went away between the catalogue and now
            if response.status_code != 200:
                raise HttpResponseError(response=response)
            for item in response.json().get(key) or []:
                count += 1
                if count > limit:
                    logger.warning("container registry %s: %s holds more than %d %s", self._host, path, limit, key)
                    return
                yield str(item)
            url = _next_link(response.headers.get("link"))

    def _labels_of(self, repository: str, reference: str) -> tuple[str, dict[str, str], str | None]:
        """(manifest digest, labels, problem) of a tag or digest; labels are kept by digest once read."""
        from azure.core.exceptions import HttpResponseError

        if reference in self._labels:  # ACR listed the digest: nothing to read again
            return (reference, *self._labels[reference])
        try:
            manifest = self._client.get_manifest(repository, reference, **self._options)
        except (HttpResponseError, ValueError) as err:  # ValueError: the SDK's digest check failed
            return ("" if ":" not in reference else reference), {}, f"its manifest could not be read: {_short(err)}"
        digest = str(manifest.digest)
        cached = self._labels.get(digest)
        if cached is None:
            cached = self._read_labels(repository, manifest.manifest, str(manifest.media_type or ""))
            if cached[1] is None:  # a failure may be passing: tried again at the next listing
                self._labels[digest] = cached
        return (digest, *cached)

    def _read_labels(self, repository: str, doc: Any, media_type: str) -> tuple[dict[str, str], str | None]:
        from azure.core.exceptions import HttpResponseError

        if not isinstance(doc, dict):
            return {}, "its manifest is no JSON object"
        if media_type in _INDEX_TYPES or doc.get("mediaType") in _INDEX_TYPES:
            children = [m for m in doc.get("manifests") or [] if isinstance(m, dict) and m.get("digest")]
            linux = [m for m in children if (m.get("platform") or {}).get("os") in (None, "linux")]
            if not linux:
                return {}, "its image index has no linux image"
            try:
                child = self._client.get_manifest(repository, str(linux[0]["digest"]), **self._options)
            except (HttpResponseError, ValueError) as err:
                return {}, f"the image of its index could not be read: {_short(err)}"
            doc = child.manifest
        config = doc.get("config") if isinstance(doc, dict) else None
        if not isinstance(config, dict) or not config.get("digest"):
            return {}, "its manifest names no config blob"
        if int(config.get("size") or 0) > MAX_CONFIG_BYTES:
            return {}, f"its config blob is over {MAX_CONFIG_BYTES} bytes"
        try:
            stream = self._client.download_blob(repository, str(config["digest"]), **self._options)
            data = bytearray()
            for chunk in stream:
                data += chunk
                if len(data) > MAX_CONFIG_BYTES:
                    return {}, f"its config blob is over {MAX_CONFIG_BYTES} bytes"
        except (HttpResponseError, ValueError) as err:
            return {}, f"its config blob could not be read: {_short(err)}"
        try:
            parsed = json.loads(bytes(data))
        except ValueError:
            return {}, "its config blob is not JSON"
        labels = (parsed.get("config") or {}).get("Labels") if isinstance(parsed, dict) else None
        if labels is None:
            return {}, None
        if not isinstance(labels, dict):
            return {}, "its config Labels are no object"
        return {str(k): str(v) for k, v in labels.items()}, None


def _next_link(header: str | None) -> str | None:
    """The OCI pagination `Link: </v2/_catalog?last=x&n=100>; rel="next"` as a path."""
    if not header or 'rel="next"' not in header:
        return None
    return header.split(";", 1)[0].strip().strip("<>") or None


def _short(err: Exception) -> str:
    status = getattr(err, "status_code", None)
    return f"HTTP {status}" if status else type(err).__name__
