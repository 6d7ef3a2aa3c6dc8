"""Retraining: a drifted job or a tenant's labelled data trains a new version, registered with its lineage, as a canary.

Where things live: a model's retraining policy and its runs are kept in the owner's own container
(`retraining/<model>/policy.json`, `retraining/<model>/runs/<runId>.json`): the platform writes there, a tenant's
upload URLs only ever name `inbox/`, so a tenant can read its runs but never forge one. Only a tenant's private model
is retrained (a public one is the operator's, built by `make models`).

A run's id is derived from (tenant, model, blob, ETag): the same bytes train once, whichever trigger (a redelivered
drift event, a repeated request) names them; a run not updated for STALE_RUN_SECONDS (its process died) is taken as
abandoned and may run again. Training runs in the background (`Runner`: a thread by default), never inside an API
request: the request answers 202 with the run, then `queued` -> `running` -> `succeeded` | `failed` (with its error).
A succeeded run registered `version` (card["lineage"]: parent version, data blob/etag/sha256, metrics, trigger,
job id) and entered it as the canary of the policy's alias through shared.services.rollouts.start_rollout: the
rollout's gates decide from there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.domain.audit import FAILED, SUCCEEDED, AuditEntry
from shared.domain.blobpaths import parse_tenant_blob_path
from shared.domain.errors import AlreadyExists, InvalidInput, NotFound, PlatformError, PreconditionFailed
from shared.domain.jobs import Job, file_type_of, utcnow
from shared.domain.models import DEFAULT_ALIAS, SELECTOR_PATTERN, ModelRef
from shared.domain.tenants import container_for
from shared.ports import TrainingData
from shared.services import rollouts
from shared.services.ingest import copied_blob_refused
from shared.services.platform import Platform

logger = logging.getLogger(__name__)

Runner = Callable[[Callable[[], None]], None]
DRIFT, LABELLED_DATA = "drift", "labelledData"
QUEUED, RUNNING, SUCCEEDED_RUN, FAILED_RUN = "queued", "running", "succeeded", "failed"
# Training reads the whole file (every row is needed at once); bounded so one run cannot exhaust a worker.
MAX_TRAINING_BYTES = 64 * 1024 * 1024
MAX_RUNS_LISTED = 50
DEFAULT_CANARY_PERCENT = 50  # of jobs (rollouts: 1-99)
DEFAULT_LABEL_FIELD = "label"
POLICY_KEYS = {"onDrift", "labelField", "alias", "canary"}
CANARY_KEYS = {"percent", "gates", "evidence"}
VERSION_ATTEMPTS = 5
# A run under way writes its record when it starts and ends; one older than the longest training (an Azure ML job's
# timeout, 1 h) and a margin lost its process.
STALE_RUN_SECONDS = 2 * 3600


def background(work: Callable[[], None]) -> None:
    """The default runner: a daemon thread, so the caller (an API request, a finalising worker) returns at once."""
    threading.Thread(target=work, name="aiaas-retrain", daemon=True).start()


def _prefix(name: str) -> str:
    return f"retraining/{name}"


def _read_json(platform: Platform, tenant_id: str, path: str) -> dict[str, Any] | None:
    try:
        data = json.loads(platform.blobs.read_bytes(container_for(tenant_id), path))
    except NotFound:
        return None
    return data if isinstance(data, dict) else None


def _write_json(platform: Platform, tenant_id: str, path: str, doc: dict[str, Any]) -> None:
    platform.blobs.write_bytes(
        container_for(tenant_id), path, json.dumps(doc, indent=2).encode(), content_type="application/json"
    )


def _private_model(platform: Platform, tenant_id: str, name: str) -> dict[str, Any]:
    ModelRef.parse(name[:200])  # 400 InvalidModelName for a name no model can have
    view = platform.models.get_model(tenant_id, name)  # 404 unless the caller may see it
    if view.get("visibility") != "private":
        raise InvalidInput(
            f"{name!r} is a public model; only your own private models are retrained", code="NotModelOwner"
        )
    return view


# Policy


def check_policy(body: dict[str, Any]) -> dict[str, Any]:
    """The policy as stored: `onDrift` (bool), `labelField`, `alias` and `canary` {"percent", "gates"?}."""
    unknown = set(body) - POLICY_KEYS
    if unknown:
        raise InvalidInput(f"unknown retraining policy fields {sorted(unknown)}", code="InvalidPolicy")
    on_drift = body.get("onDrift", False)
    label_field = body.get("labelField", DEFAULT_LABEL_FIELD)
    alias = body.get("alias", DEFAULT_ALIAS)
    canary = body.get("canary") or {}
    if not isinstance(on_drift, bool):
        raise InvalidInput("onDrift must be true or false", code="InvalidPolicy")
    if not isinstance(label_field, str) or not 0 < len(label_field) <= 100:
        raise InvalidInput("labelField must be a field name of 1-100 characters", code="InvalidPolicy")
    if not isinstance(alias, str) or not SELECTOR_PATTERN.fullmatch(alias):
        raise InvalidInput(f"alias {str(alias)[:64]!r} is not valid", code="InvalidPolicy")
    if not isinstance(canary, dict) or set(canary) - CANARY_KEYS:
        raise InvalidInput('canary must be {"percent", "gates"?, "evidence"?}', code="InvalidPolicy")
    stored_canary: dict[str, Any] = {"percent": canary.get("percent", DEFAULT_CANARY_PERCENT)}
    stored_canary.update({k: canary[k] for k in ("gates", "evidence") if canary.get(k) is not None})
    # Checked now as the rollout will check it (shared.services.rollouts), so a bad gate is the caller's 400 today,
    # not a failed run later.
    rollouts.parse_canary({"version": "0", **stored_canary})
    return {"onDrift": on_drift, "labelField": label_field, "alias": alias, "canary": stored_canary}


def get_policy(platform: Platform, tenant_id: str, name: str) -> dict[str, Any]:
    """The model's policy (the defaults when none was set: no retraining on drift)."""
    return _read_json(platform, tenant_id, f"{_prefix(name)}/policy.json") or check_policy({})


def set_policy(platform: Platform, tenant_id: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    _private_model(platform, tenant_id, name)
    policy = check_policy(body)
    _write_json(platform, tenant_id, f"{_prefix(name)}/policy.json", policy)
    return policy


def get_retraining(platform: Platform, tenant_id: str, name: str) -> dict[str, Any]:
    """`{"name", "policy", "runs"}`: the newest runs first."""
    _private_model(platform, tenant_id, name)
    return {"name": name, "policy": get_policy(platform, tenant_id, name), "runs": list_runs(platform, tenant_id, name)}


def list_runs(platform: Platform, tenant_id: str, name: str) -> list[dict[str, Any]]:
    container = container_for(tenant_id)
    runs = []
    for blob in platform.blobs.list_blobs(container, prefix=f"{_prefix(name)}/runs/"):
        run = _read_json(platform, tenant_id, blob.name)
        if run is not None:
            runs.append(run)
    runs.sort(key=lambda r: str(r.get("createdAt", "")), reverse=True)
    return runs[:MAX_RUNS_LISTED]


def get_run(platform: Platform, tenant_id: str, name: str, run_id: str) -> dict[str, Any]:
    run = _read_json(platform, tenant_id, f"{_prefix(name)}/runs/{run_id}.json")
    if run is None:
        raise NotFound(f"retraining run {run_id[:64]!r} of {name!r} not found")
    return run


def _under_way(run: dict[str, Any]) -> bool:
    return run.get("status") in (QUEUED, RUNNING) and not _abandoned(run)


def _abandoned(run: dict[str, Any]) -> bool:
    if run.get("status") not in (QUEUED, RUNNING):
        return False
    try:
        updated = datetime.fromisoformat(str(run.get("updatedAt", "")).replace("Z", "+00:00"))
    except ValueError:
        return True
    return (datetime.now(UTC) - updated).total_seconds() > STALE_RUN_SECONDS


# Triggers


def request_retraining(
    platform: Platform,
    tenant_id: str,
    name: str,
    blob_path: str,
    *,
    trigger: str = LABELLED_DATA,
    job_id: str | None = None,
    by: str,
    runner: Runner | None = None,
) -> dict[str, Any]:
    """Starts retraining `name` on the labelled records of the tenant's blob; returns the run (queued, or the run
    these data already started). Checks here what the caller can fix (a 4xx); training itself runs in `runner`."""
    _private_model(platform, tenant_id, name)
    if platform.trainer is None:
        raise InvalidInput("this platform has no trainer configured", code="RetrainingUnavailable")
    blob = parse_tenant_blob_path(tenant_id, blob_path)
    file_type = file_type_of(blob.name)
    if file_type not in (".jsonl", ".csv"):
        raise InvalidInput(
            f"labelled data must be .jsonl or .csv, not {file_type or 'no extension'}", code="UnsupportedFileType"
        )
    try:
        info = platform.blobs.get_info(blob.container, blob.name)
    except NotFound:
        raise InvalidInput(f"no blob {blob_path[:64]!r} in your container", code="BlobNotFound") from None
    if info.is_copy:  # perhaps another tenant's data, named by URL: never learnt from as this tenant's
        raise copied_blob_refused()
    if info.size > MAX_TRAINING_BYTES:
        raise InvalidInput(f"labelled data is at most {MAX_TRAINING_BYTES} bytes", code="TrainingDataTooLarge")
    run_id = hashlib.sha256("\n".join([tenant_id, name, blob.name, info.etag.strip('"')]).encode()).hexdigest()[:32]
    existing = _read_json(platform, tenant_id, f"{_prefix(name)}/runs/{run_id}.json")
    if existing is not None and existing.get("status") != FAILED_RUN and not _abandoned(existing):
        return existing
    policy = get_policy(platform, tenant_id, name)
    now = utcnow()
    run: dict[str, Any] = {
        "id": run_id,
        "model": name,
        "status": QUEUED,
        "trigger": trigger,
        "data": {"blobPath": blob.name, "etag": info.etag, "bytes": info.size},
        "labelField": policy["labelField"],
        "by": by,
        "createdAt": now,
        "updatedAt": now,
        **({"jobId": job_id} if job_id else {}),
    }
    _write_json(platform, tenant_id, f"{_prefix(name)}/runs/{run_id}.json", run)
    logger.info("retraining %s for tenant %s queued (run %s, trigger %s)", name, tenant_id, run_id, trigger)

    def work() -> None:
        run_training(platform, tenant_id, name, run_id)

    (runner or background)(work)
    return run


def on_drift(platform: Platform, job: Job, *, runner: Runner | None = None) -> dict[str, Any] | None:
    """Called after a drifted job's DriftDetected event: retrains on the job's own (labelled) input when the model's
    policy asks for it (`onDrift`), once per job, and not while another run of the model is under way."""
    try:
        view = platform.models.get_model(job.tenant_id, job.model_name)
    except PlatformError:  # the model is gone since the job ran: nothing to retrain
        return None
    if view.get("visibility") != "private" or platform.trainer is None:
        return None
    policy = get_policy(platform, job.tenant_id, job.model_name)
    if not policy["onDrift"]:
        return None
    under_way = [r for r in list_runs(platform, job.tenant_id, job.model_name) if _under_way(r)]
    if under_way:
        logger.info(
            "drift of job %s: run %s of %s is under way; not another", job.job_id, under_way[0]["id"], job.model_name
        )
        return None
    # While a canary of the alias is being decided, its jobs (and the stable arm's) are its evidence: a retrained
    # version on top of one not yet judged would never be compared with anything settled.
    if policy["alias"] in (platform.models.get_aliases(job.tenant_id, job.model_name).get("rollouts") or {}):
        logger.info("drift of job %s: %s has a rollout under way; not retrained", job.job_id, job.model_name)
        return None
    return request_retraining(
        platform,
        job.tenant_id,
        job.model_name,
        job.blob_path,
        trigger=DRIFT,
        job_id=job.job_id,
        by="drift",
        runner=runner,
    )


# The run


def run_training(platform: Platform, tenant_id: str, name: str, run_id: str) -> dict[str, Any]:
    """Trains, registers the new version with its lineage and starts its canary; the run records how it ended."""
    path = f"{_prefix(name)}/runs/{run_id}.json"
    run = get_run(platform, tenant_id, name, run_id)
    run.update(status=RUNNING, updatedAt=utcnow())
    _write_json(platform, tenant_id, path, run)
    try:
        run.update(_train_and_register(platform, tenant_id, name, run))
        run["status"] = SUCCEEDED_RUN
    except PlatformError as err:
        run.update(status=FAILED_RUN, error={"code": err.code, "message": err.message})
    except Exception as err:  # a trainer's bug or an outage: the run says so, the log has the trace
        logger.exception("retraining run %s of %s failed", run_id, name)
        run.update(
            status=FAILED_RUN, error={"code": "TrainingFailed", "message": f"training failed: {type(err).__name__}"}
        )
    run["updatedAt"] = utcnow()
    _write_json(platform, tenant_id, path, run)
    _audit(platform, tenant_id, name, run)
    logger.info("retraining run %s of %s for tenant %s %s", run_id, name, tenant_id, run["status"])
    return run


def _train_and_register(platform: Platform, tenant_id: str, name: str, run: dict[str, Any]) -> dict[str, Any]:
    assert platform.trainer is not None
    policy = get_policy(platform, tenant_id, name)
    container = container_for(tenant_id)
    blob_path, etag = str(run["data"]["blobPath"]), str(run["data"]["etag"])
    try:  # the version that was checked when the run was asked for, or none
        content = b"".join(platform.blobs.iter_chunks(container, blob_path, etag=etag))
    except PreconditionFailed:
        raise InvalidInput(
            f"{blob_path!r} changed since retraining was asked for; ask again", code="BlobChanged"
        ) from None
    except NotFound:
        raise InvalidInput(f"{blob_path!r} is gone", code="BlobNotFound") from None
    digest = hashlib.sha256(content).hexdigest()
    parent = platform.models.resolve(tenant_id, ModelRef(name, policy["alias"]))
    data = TrainingData(
        tenant_id=tenant_id,
        container=container,
        blob_path=blob_path,
        etag=etag,
        sha256=digest,
        file_type=file_type_of(blob_path),
        content=content,
        label_field=str(run.get("labelField") or policy["labelField"]),
        run_id=str(run["id"]),
    )
    version = _next_version(platform, tenant_id, name)

    def started(where: dict[str, Any]) -> None:  # where it trains (an Azure ML job), recorded while it does
        run.update(trainer=where, updatedAt=utcnow())
        _write_json(platform, tenant_id, f"{_prefix(name)}/runs/{run['id']}.json", run)

    trained = platform.trainer.train(parent, data, version=version, started=started)
    lineage: dict[str, Any] = {
        "parentVersion": parent.version,
        "data": {"blobPath": blob_path, "etag": etag, "sha256": digest},
        "metrics": trained.metrics,
        "trainedAt": utcnow(),
        "trigger": run["trigger"],
        "runId": run["id"],
        **({"jobId": run["jobId"]} if run.get("jobId") else {}),
        **({"trainer": trained.run} if trained.run else {}),
    }
    card = {**trained.card, "name": name, "lineage": lineage}
    for attempt in range(VERSION_ATTEMPTS):  # another run may have taken the number since: the next one
        card["version"] = version
        try:
            platform.models.register_private(
                tenant_id, card, trained.artifact, files=trained.files, by=f"retraining:{run['id']}"
            )
            break
        except AlreadyExists as err:
            if err.code != "VersionExists" or attempt == VERSION_ATTEMPTS - 1:
                raise
            version = _bump(version)
    rollout = _start_canary(platform, tenant_id, name, version, policy, run)
    return {
        "parentVersion": parent.version,
        "version": version,
        "metrics": trained.metrics,
        "lineage": lineage,
        "rollout": rollout,
    }


def _next_version(platform: Platform, tenant_id: str, name: str) -> str:
    numbers = []
    for version in platform.models.get_model(tenant_id, name).get("versions") or []:
        try:
            numbers.append(int(str(version).split(".")[0]))
        except ValueError:
            continue
    return str(max(numbers, default=0) + 1)


def _bump(version: str) -> str:
    return str(int(version.split(".")[0]) + 1)


def _start_canary(
    platform: Platform, tenant_id: str, name: str, version: str, policy: dict[str, Any], run: dict[str, Any]
) -> dict[str, Any]:
    """The new version as the canary of the policy's alias: from here the rollout's gates decide."""
    canary = {"version": version, **policy["canary"]}
    view = rollouts.start_rollout(
        platform, owner=tenant_id, name=name, alias=policy["alias"], canary=canary, by=f"retraining:{run['id']}"
    )
    state = (view.get("rollouts") or {}).get(policy["alias"]) or {}
    return {
        "alias": policy["alias"],
        "id": state.get("id"),
        "stableVersion": state.get("stableVersion"),
        "canary": state.get("canary"),
    }


def _audit(platform: Platform, tenant_id: str, name: str, run: dict[str, Any]) -> None:
    target = f"models/{name}/retraining/{run['id']}"
    if run.get("version"):
        target = f"models/{name}/versions/{run['version']}"
    try:
        platform.audit.append(
            AuditEntry.new(
                tenant_id,
                actor_kind="operator",
                actor_id=str(run.get("by") or "retraining"),
                action="models.retrain",
                target=target,
                outcome=SUCCEEDED if run["status"] == SUCCEEDED_RUN else FAILED,
                request_id=str(run["id"]),
                details={
                    k: run[k]
                    for k in ("trigger", "jobId", "parentVersion", "version", "metrics", "error", "trainer")
                    if run.get(k) is not None
                },
            )
        )
    except PlatformError:  # the run's own record stands; the audit log being busy must not undo it
        logger.warning("audit entry of retraining run %s not written", run["id"], exc_info=True)
