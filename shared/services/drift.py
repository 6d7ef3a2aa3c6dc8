"""Drift on every job: shard sketches against the model's reference profile, the job's verdict, its event."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from shared.domain.errors import InvalidInput, NotFound
from shared.domain.events import DRIFT_DETECTED, PlatformEvent, model_event
from shared.domain.jobs import Job, JobStatus
from shared.domain.models import ModelCard, ModelRef
from shared.domain.usage import time_range
from shared.services.platform import Platform
from shared.services.queries import decode_token, encode_token

if TYPE_CHECKING:  # numpy behind it: imported only where a sketch is made, never on the cold-start path
    from shared.domain.drift import DriftSketch

logger = logging.getLogger(__name__)

# A job document is one Cosmos DB item, at most 2 MB (Azure Cosmos DB service quotas). A shard's sketch is bounded
# by bins x features, never by rows (breast-cancer's 30 features: ~17-29 KB). The job keeps one per shard while
# they come to at most SKETCHES_BUDGET_BYTES and MAX_SHARD_SKETCHES; past either, the kept ones are merged into one
# (FOLDED; exact, sketches are counts), so a job of any number of shards holds at most ~SKETCHES_BUDGET_BYTES of
# sketches and the rest of the 2 MB stays the shard plan's. A single sketch over MAX_SKETCH_DOC_BYTES (a model of
# thousands of features) is not kept: logged, and the job's drift counts only the rows it has ("rows").
SKETCHES_BUDGET_BYTES = 512 * 1024
MAX_SKETCH_DOC_BYTES = SKETCHES_BUDGET_BYTES // 2
MAX_SHARD_SKETCHES = 16
FOLDED = -1
PROFILE_CACHE_SIZE = 32
MAX_DRIFT_PAGE = 1000
_CURSOR = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z\|(?:[0-9a-f]{32}(?:,[0-9a-f]{32})*)?$")

_profiles: OrderedDict[str, dict[str, Any]] = OrderedDict()
_profiles_lock = threading.Lock()


def profile_file(card: ModelCard) -> str | None:
    """The file of the card's reference profile (card["drift"]["profile"]); None: the model has none."""
    section = card.raw.get("drift")
    if not isinstance(section, dict) or not section.get("profile"):
        return None
    return str(section["profile"])


def load_profile(platform: Platform, card: ModelCard) -> dict[str, Any] | None:
    """The card's reference profile, read once per process per profile sha256 (the card lists the file with
    its sha256, so a changed profile is a new key, and the registry checks the bytes against it)."""
    name = profile_file(card)
    if name is None:
        return None
    entry = next((item for item in card.raw.get("files") or [] if item.get("file") == name), None)
    if entry is None:
        logger.warning("model %s@%s names profile %s outside its files; no drift", card.name, card.version, name)
        return None
    key = f"{card.owner or ''}/{card.name}/{card.version}/{entry.get('sha256')}"
    with _profiles_lock:
        cached = _profiles.get(key)
        if cached is not None:
            _profiles.move_to_end(key)
            return cached
    profile: dict[str, Any] = orjson.loads(platform.models.read_file(card, name))
    with _profiles_lock:
        _profiles[key] = profile
        while len(_profiles) > PROFILE_CACHE_SIZE:
            _profiles.popitem(last=False)
    return profile


class ShardSketch:
    """What one shard run accumulates for drift: its records and outputs, batch by batch, in bounded memory."""

    def __init__(self, sketch: DriftSketch, label: str) -> None:
        self._sketch: DriftSketch | None = sketch
        self._label = label

    def add(self, records: Sequence[dict[str, Any]], outputs: Sequence[dict[str, Any]]) -> None:
        """Scored records only: a failed record is in neither the input nor the prediction sketch."""
        if self._sketch is None or not records:
            return
        try:
            self._sketch.add(list(records), list(outputs))
        except Exception:  # drift watches the job, it never fails it: the shard goes on without a sketch
            logger.warning("drift sketch of %s stopped; the shard keeps no sketch", self._label, exc_info=True)
            self._sketch = None

    def to_doc(self) -> dict[str, Any] | None:
        if self._sketch is None:
            return None
        doc: dict[str, Any] = self._sketch.to_doc()
        size = len(orjson.dumps(doc))
        if size > MAX_SKETCH_DOC_BYTES:
            logger.warning("drift sketch of %s is %d bytes, over %d; not kept", self._label, size, MAX_SKETCH_DOC_BYTES)
            return None
        return doc


def start_sketch(platform: Platform, card: ModelCard, label: str) -> ShardSketch | None:
    """An empty sketch for a shard of a model with a profile; None for a model without (no drift section)."""
    try:
        profile = load_profile(platform, card)
    except (NotFound, RuntimeError, ValueError):
        logger.warning(
            "profile of %s@%s unreadable; %s runs without drift", card.name, card.version, label, exc_info=True
        )
        return None
    if profile is None:
        return None
    from shared.domain.drift import DriftSketch

    return ShardSketch(DriftSketch.empty(profile), label)


def record_sketch(job: Job, shard_index: int, doc: dict[str, Any] | None) -> None:
    """Keeps the shard's sketch on the job (called in the write that records the shard: once per shard). Past
    MAX_SHARD_SKETCHES or SKETCHES_BUDGET_BYTES they are merged into one: the job document stays bounded whatever
    its shard count."""
    if doc is None:
        return
    job.shard_sketches[shard_index] = doc
    kept = sum(len(orjson.dumps(d)) for d in job.shard_sketches.values())
    if len(job.shard_sketches) > MAX_SHARD_SKETCHES or kept > SKETCHES_BUDGET_BYTES:
        from shared.domain.drift import DriftSketch

        merged = DriftSketch.merge([DriftSketch.from_doc(d) for d in job.shard_sketches.values()])
        job.shard_sketches = {FOLDED: merged.to_doc()}


def evaluate_job(platform: Platform, job: Job) -> dict[str, Any] | None:
    """The job's drift section from its shards' sketches merged; None when there is nothing to judge (no
    profile, no scored record, or a job that failed before its records were scored)."""
    if not job.shard_sketches or job.error is not None or job.counts.succeeded == 0:
        return None
    try:
        card = platform.models.resolve(job.tenant_id, ModelRef(job.model_name, job.model_version))
        profile = load_profile(platform, card)
    except (NotFound, RuntimeError, ValueError):
        logger.warning("profile of job %s's model unreadable; no drift section", job.job_id, exc_info=True)
        return None
    if profile is None:
        return None
    from shared.domain.drift import DriftSketch, evaluate

    try:
        sketch = DriftSketch.merge([DriftSketch.from_doc(doc) for _, doc in sorted(job.shard_sketches.items())])
        return evaluate(profile, sketch)
    except (KeyError, TypeError, ValueError):  # sketches of another profile: the job ends, without a verdict
        logger.warning("drift sketches of job %s do not fit its profile", job.job_id, exc_info=True)
        return None


def drift_event_id(job_id: str) -> str:
    """One drift event per job: derived from the job id, so a re-publish (a retry, the sweeper) keeps it."""
    return hashlib.sha256(f"drift:{job_id}".encode()).hexdigest()[:32]


def drifted(job: Job) -> bool:
    return bool(job.drift) and (job.drift or {}).get("status") == "drifted"


def drift_events(job: Job) -> list[PlatformEvent]:
    """The job's AIaaS.Model.DriftDetected, published after its terminal event; none for a job that did not drift."""
    if not drifted(job) or job.status not in (JobStatus.SUCCEEDED, JobStatus.PARTIALLY_SUCCEEDED):
        return []
    data = {
        "jobId": job.job_id,
        "model": {"name": job.model_name, "version": job.model_version},
        "completedAt": job.completed_at,
        "drift": job.drift,
        "metadata": job.metadata,  # every event of a job carries its metadata
    }
    return [model_event(job.tenant_id, job.model_name, DRIFT_DETECTED, data, drift_event_id(job.job_id))]


def after_drift(platform: Platform, job: Job) -> None:
    """Hands a drifted job to retraining (which decides whether the model asks for it); its failure is logged,
    never the job's."""
    if not drifted(job):
        return
    try:
        from shared.services import retraining
    except ImportError:
        return
    try:
        retraining.on_drift(platform, job)
    except Exception:
        logger.exception("retraining on drift of job %s failed", job.job_id, extra={"job_id": job.job_id})


def drift_report(
    platform: Platform,
    tenant_id: str,
    model_name: str,
    *,
    start: str | None,
    end: str | None,
    limit: int = 100,
    continuation: str | None = None,
) -> dict[str, Any]:
    """The tenant's jobs of the model with their drift, completed in [from, to), newest first."""
    platform.models.get_model(tenant_id, model_name)  # UnknownModel (404) for a model the tenant cannot see
    completed_from, completed_before = time_range(start, end)
    cursor = _cursor(continuation)
    jobs, next_cursor = platform.jobs.list_with_drift(
        tenant_id,
        model_name,
        completed_from=completed_from,
        completed_before=completed_before,
        limit=limit,
        continuation=cursor,
    )
    items = [
        {
            "jobId": job.job_id,
            "completedAt": job.completed_at,
            "status": job.status.value,
            "model": {"name": job.model_name, "version": job.model_version},
            "records": job.counts.records,
            "drift": job.drift,
        }
        for job in jobs
    ]
    return {
        "model": model_name,
        "from": completed_from,
        "to": completed_before,
        "items": items,
        "continuationToken": encode_token({"drift": next_cursor}) if next_cursor else None,
    }


def _cursor(token: str | None) -> str | None:
    if not token:
        return None
    cursor = decode_token(token).get("drift")
    if not isinstance(cursor, str) or not _CURSOR.fullmatch(cursor):
        raise InvalidInput(
            "continuationToken is not valid: pass back the continuationToken of the previous page unchanged",
            code="InvalidContinuationToken",
        )
    return cursor
