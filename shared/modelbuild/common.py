"""Shared helpers for the model build step: hashing, build keys, atomic package writes."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

logger = logging.getLogger(__name__)

CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"
PROFILE_FILE = "profile.json"
# The drift profile's layout and metrics come from here: a change to it must rebuild every package (buildKey).
DRIFT_SOURCE = Path(__file__).resolve().parent.parent / "domain" / "drift.py"


@dataclass(frozen=True)
class BuildResult:
    """Outcome of building (or skipping) one model package."""

    name: str
    version: str
    package_dir: Path
    skipped: bool
    metric_name: str
    metric_value: float
    artifact_bytes: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def data_fingerprint(x: Any, y: Any) -> str:
    """``sha256:<hex>`` over the C-contiguous float64 bytes of X followed by the int64 bytes of y."""
    import numpy as np

    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return f"sha256:{digest.hexdigest()}"


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed distribution versions, read from metadata (no heavy imports)."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def build_key(sources: Iterable[Path], versions: Mapping[str, str], params: Mapping[str, Any]) -> str:
    """Hex sha256 over build script sources, library versions and training parameters."""
    payload = {
        "sources": {p.name: sha256_file(p) for p in sorted(sources, key=lambda p: p.name)},
        "versions": dict(sorted(versions.items())),
        "params": params,
    }
    return sha256_bytes(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))


def utc_now_iso() -> str:
    """Current UTC time as ISO-8601 with a trailing ``Z``."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def read_card(package_dir: Path) -> dict[str, Any] | None:
    """The package's card, or None when it is missing, unreadable, or its artifact is absent."""
    card_path = package_dir / CARD_FILE
    if not card_path.is_file():
        return None
    try:
        card = orjson.loads(card_path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        logger.warning("unreadable card at %s; will rebuild", card_path)
        return None
    if not isinstance(card, dict):
        return None
    artifact = card.get("artifact") or {}
    artifact_path = package_dir / str(artifact.get("file", MODEL_FILE))
    if not artifact_path.is_file() or artifact_path.stat().st_size != artifact.get("bytes"):
        logger.warning("artifact missing or size mismatch in %s; will rebuild", package_dir)
        return None
    return card


def dump_json(obj: Any) -> bytes:
    """Pretty, stable JSON bytes with a trailing newline."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_package_atomically(package_dir: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` into a temp dir next to ``package_dir``, then swap it into place.

    Readers see either the old complete package or the new one; a crash leaves only a
    hidden ``.tmp-*`` / ``.old-*`` sibling that the next build ignores.
    """
    package_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{package_dir.name}.tmp-", dir=package_dir.parent))
    mask = _umask()
    try:
        tmp_dir.chmod(0o777 & ~mask)  # mkdtemp creates 0700; packages should be as readable as any dir
        for name, data in files.items():
            path = tmp_dir / name
            with path.open("wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            path.chmod(0o666 & ~mask)
        old_dir: Path | None = None
        if package_dir.exists():
            old_dir = package_dir.parent / f".{package_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(package_dir, old_dir)
        try:
            os.rename(tmp_dir, package_dir)
        except OSError:
            if old_dir is not None:
                os.rename(old_dir, package_dir)
            raise
        if old_dir is not None:
            shutil.rmtree(old_dir, ignore_errors=True)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)


def write_file_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace ``path`` with ``data`` unless it already holds exactly that; True if written."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        Path(tmp_name).chmod(0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return True


def file_entry(name: str, data: bytes) -> dict[str, Any]:
    """A card's ``{"file", "sha256", "bytes"}`` entry for one package file."""
    return {"file": name, "sha256": sha256_bytes(data), "bytes": len(data)}


def with_profile(card: dict[str, Any], profile: dict[str, Any]) -> bytes:
    """Adds the drift profile to the card (a hashed entry of "files" and card["drift"]); returns the file's bytes."""
    from shared.domain.drift import card_drift_section

    data = orjson.dumps(profile) + b"\n"  # compact: read by every job's finalise
    card["files"] = [
        *(f for f in card.get("files", []) if f.get("file") != PROFILE_FILE),
        file_entry(PROFILE_FILE, data),
    ]
    card["drift"] = card_drift_section(profile)
    return data


def up_to_date_card(package_dir: Path, key: str) -> dict[str, Any] | None:
    """The package's card when its buildKey is ``key`` and the artifact and every extra file match their hashes."""
    card = read_card(package_dir)
    if card is None or card.get("buildKey") != key:
        return None
    entries = [card["artifact"], *card.get("files", [])]
    for entry in entries:
        path = package_dir / str(entry["file"])
        if not path.is_file() or path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            logger.warning("%s: %s does not match its card; rebuilding", package_dir, entry["file"])
            return None
    return card


def normalise_onnx(model: Any, *, name: str, version: str, doc: str) -> Any:
    """Stable graph name, doc string and model version, one opset import per domain (reproducible bytes)."""
    import onnx

    model.graph.name = name.replace("-", "_")
    model.doc_string = doc
    model.model_version = int(version)
    opsets: dict[str, int] = {}
    for imp in model.opset_import:
        opsets[imp.domain] = max(imp.version, opsets.get(imp.domain, 0))
    del model.opset_import[:]
    for domain, opset in sorted(opsets.items()):
        model.opset_import.append(onnx.helper.make_opsetid(domain, opset))
    return model


def ort_session(model_bytes: bytes, *, threads: int = 2) -> Any:
    """An onnxruntime CPU session with a fixed thread count (as the platform creates them)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def skipped_result(
    name: str, version: str, target: Path, card: dict[str, Any], metric: str, started: float
) -> BuildResult:
    """The BuildResult of a package that was already up to date."""
    import time

    return BuildResult(
        name=name,
        version=version,
        package_dir=target,
        skipped=True,
        metric_name=metric,
        metric_value=float(card["metrics"][metric]),
        artifact_bytes=int(card["artifact"]["bytes"]),
        seconds=time.perf_counter() - started,
    )
