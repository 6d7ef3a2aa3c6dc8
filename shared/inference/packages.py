"""Model packages as the registry stores them: layout, card normalisation and digests, remote-card checks.

Pure: no store, no runtime. The registry's discovery (catalogue.py), publishing (lifecycle.py) and loading
(loading.py) all read packages through these rules.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.domain.errors import InvalidInput
from shared.domain.models import MIN_SHARD_BYTES, MODEL_NAME_PATTERN, SELECTOR_PATTERN, ModelCard
from shared.domain.tenants import TENANT_ID_PATTERN

REMOTE_RUNTIME = "remote-oip"
TENANTS_PREFIX = "tenants"
# Once the prefix of credentials in the models container; they live in a SecretStore now, and the name stays
# reserved (and skipped by discovery) so that an old deployment's leftovers are never taken for a model.
SECRETS_PREFIX = "secrets"
RESERVED_NAMES = frozenset({TENANTS_PREFIX, SECRETS_PREFIX})
FILE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
AUTH_TYPES = frozenset({"none", "bearer", "header"})
INVALID_PACKAGE = "InvalidModelPackage"
PUBLIC = ""  # the owner key of the platform's public catalogue


def package_prefix(owner: str | None, name: str) -> str:
    return f"{TENANTS_PREFIX}/{owner}/{name}" if owner else name


def bad(message: str) -> InvalidInput:
    return InvalidInput(message, code=INVALID_PACKAGE)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def credential_name(card: ModelCard) -> str:
    """The SecretStore name of a remote model version's credential: letters, digits and dashes only (model names
    and versions may carry `.` and `_`, so they are hashed: one name per (model, version), never two)."""
    return "oip-" + sha256(f"{card.name}@{card.version}".encode())[:40]


def public_card(card: ModelCard) -> dict[str, Any]:
    return {k: v for k, v in card.raw.items() if k not in {"buildKey", "buildEnvironment"}}


def read_package_file(package_dir: Path, name: str) -> bytes:
    if not FILE_NAME_PATTERN.fullmatch(name):
        raise bad(f"package file name {name!r} is not a plain file name")
    try:
        return (package_dir / name).read_bytes()
    except FileNotFoundError:
        raise bad(f"{package_dir} has no {name} though its card names it") from None


def card_files(raw: dict[str, Any]) -> list[dict[str, Any]]:
    files = raw.get("files") or []
    if not isinstance(files, list) or not all(isinstance(item, dict) for item in files):
        raise bad('card "files" must be a list of {"file", "sha256", "bytes"}')
    return files


def package_digest(raw: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two publications of a version the same package: the bytes they carry (or the remote endpoint)."""
    files = tuple(sorted((str(f.get("file")), str(f.get("sha256"))) for f in card_files(raw)))
    if raw.get("runtime") == REMOTE_RUNTIME:
        return (REMOTE_RUNTIME, raw.get("endpoint"), files)
    return (str((raw.get("artifact") or {}).get("sha256")), files)


def normalised_card(
    card_data: dict[str, Any], artifact: bytes | None, files: dict[str, bytes], owner: str | None
) -> dict[str, Any]:
    """The card to store: validated, owner set, and the sha256/bytes of artifact and files filled in or checked."""
    raw = json.loads(json.dumps(card_data))  # a deep, JSON-only copy
    name, version = str(raw.get("name", "")), str(raw.get("version", ""))
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise bad(f"card name {name!r} is not a valid model name (lower-case letters, digits, . _ -)")
    if not SELECTOR_PATTERN.fullmatch(version):
        raise bad(f"card version {version!r} is not valid (letters, digits, . _ -)")
    if owner is not None and not TENANT_ID_PATTERN.fullmatch(owner):
        raise bad(f"owner {owner!r} is not a tenant id")
    if raw.get("owner") and raw["owner"] != owner:
        raise bad(f"the card names owner {raw['owner']!r}; a package can only be registered for its owner")
    if owner:
        raw["owner"] = owner
    else:
        raw.pop("owner", None)
    if not raw.get("handler"):
        raise bad('the card needs a "handler"')
    input_types = raw.get("inputTypes")
    if not isinstance(input_types, list) or not input_types or not all(isinstance(t, str) for t in input_types):
        raise bad('the card needs "inputTypes", e.g. [".jsonl", ".csv"]')
    for key, lowest in (("errorThreshold", -1), ("shardBytes", MIN_SHARD_BYTES)):
        value = raw.get(key)
        if value is not None and (type(value) is not int or value < lowest):
            raise bad(f'card "{key}" must be a whole number of at least {lowest}, not {value!r}')
    if raw.get("runtime") == REMOTE_RUNTIME:
        if artifact is not None:
            raise bad("a remote-oip model has no artifact: the endpoint runs it")
    else:
        if artifact is None:
            raise bad("the package has no artifact")
        declared = raw.setdefault("artifact", {})
        if not isinstance(declared, dict):
            raise bad('card "artifact" must be {"file", "sha256", "bytes"}')
        declared.setdefault("file", "model.onnx")
        if not FILE_NAME_PATTERN.fullmatch(str(declared["file"])) or declared["file"] == "card.json":
            raise bad(f"artifact file name {declared['file']!r} is not a plain file name")
        _fill_digest(declared, artifact, "the artifact")
    seen = {"card.json", str((raw.get("artifact") or {}).get("file", ""))}
    for item in card_files(raw):
        file_name = str(item.get("file", ""))
        if not FILE_NAME_PATTERN.fullmatch(file_name) or file_name in seen:
            raise bad(f"package file name {file_name!r} is not a plain, unique file name")
        seen.add(file_name)
        if file_name not in files:
            raise bad(f"the card names file {file_name!r} but the package does not carry it")
        _fill_digest(item, files[file_name], f"file {file_name!r}")
    extra = set(files) - seen
    if extra:
        raise bad(f'files {sorted(extra)} are not named in the card\'s "files"')
    return dict(raw)


def _fill_digest(declared: dict[str, Any], data: bytes, what: str) -> None:
    digest = sha256(data)
    if declared.get("sha256") and declared["sha256"] != digest:
        raise bad(f"{what} does not match the card's sha256 ({digest} != {declared['sha256']})")
    declared["sha256"] = digest
    declared["bytes"] = len(data)


def check_remote_card(card: ModelCard, credential: str | None) -> None:
    endpoint = str(card.raw.get("endpoint", ""))
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or "/v2/models/" not in parts.path:
        raise bad(f"endpoint {endpoint!r} must be an http(s) URL of an OIP model: https://host/v2/models/<model>")
    if parts.username or parts.password or parts.query:
        raise bad("the endpoint URL must not carry credentials or a query; use the credential field")
    auth = card.raw.get("auth") or {"type": "none"}
    if not isinstance(auth, dict) or auth.get("type", "none") not in AUTH_TYPES:
        raise bad(f'card "auth" must be {{"type": one of {sorted(AUTH_TYPES)}}}')
    if set(auth) - {"type", "headerName", "secretName"}:
        raise bad('card "auth" names the kind of credential only; send the credential itself separately')
    if auth.get("secretName") and card.owner:
        raise bad("a private model cannot name a platform secret; send the credential with the registration")
    needs_secret = auth.get("type", "none") != "none"
    if needs_secret and not credential and not auth.get("secretName"):
        raise bad(f"auth type {auth['type']!r} needs a credential")
    if credential and not needs_secret:
        raise bad('a credential was sent but card "auth" says type "none"')


def version_key(version: str) -> tuple[int, ...] | tuple[float, str]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (float("inf"), version)
