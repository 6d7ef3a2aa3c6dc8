"""Rollouts: an alias's canary (a share of jobs) and shadow version, compared on records and decided by gates.

Where the state lives: `rollouts[alias]` in the model's aliases.json, beside the alias and its history, so the
alias and its rollout change together in one conditional write (Publisher.update_aliases, If-Match).

- Admission (`assign`): a job of an alias with a canary goes to the canary when sha256(job id) % 100 < percent
  (deterministic: a replayed upload lands in the same arm); the job records its arm.
- Shards (`comparing`): the other version (stable for a canary job, the shadow for a stable job) also runs on the
  first COMPARE_RECORDS_PER_SHARD records of each shard; only the agreement statistics are kept, never its
  outputs, and its time is not metered to the tenant.
- Finalise (`on_job_finished`): the job's figures join the rollout's evidence (once per job), the gates are
  evaluated; a failed gate rolls back at once, enough evidence with every gate passed promotes. Each decision is
  in the alias history and the audit log with its figures, and is an AIaaS.Model.Promoted / RolledBack event.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.domain.errors import InvalidInput, InvalidRecord, UnknownModel
from shared.domain.events import PROMOTED, ROLLED_BACK, PlatformEvent, model_event
from shared.domain.jobs import Job, utcnow
from shared.domain.models import DEFAULT_ALIAS, SELECTOR_PATTERN, ModelCard, ModelRef
from shared.ports import Predictor
from shared.services.platform import Platform

logger = logging.getLogger(__name__)

ROLLOUT_ACTOR = "platform:rollouts"
# The bound on the extra cost of comparing: the other version scores at most this many records per shard.
COMPARE_RECORDS_PER_SHARD = 200
DEFAULT_EVIDENCE = {"jobs": 3, "records": 300}
# Job ids already counted (a finalise retried after a crash must not count twice), and tenants that used a
# public model's rollout (who hear of its decision): both bounded, aliases.json stays small.
MAX_COUNTED_JOBS = 1000
MAX_TENANTS = 100
# Each gate and the canary figure it reads.
GATE_FIGURE = {
    "maxErrorRate": "errorRate",
    "maxSecondsPerRecord": "secondsPerRecord",
    "maxDriftShare": "driftShare",
    "noDrift": "driftedJobs",
    "minAgreement": "agreement",
}
GATE_NAMES = tuple(GATE_FIGURE)


def canary_bucket(job_id: str) -> int:
    """0-99, the same for a job id on every machine."""
    return int(hashlib.sha256(job_id.encode()).hexdigest(), 16) % 100


def arm_for(job_id: str, percent: int) -> str:
    return "canary" if canary_bucket(job_id) < percent else "stable"


def _bad(message: str) -> InvalidInput:
    return InvalidInput(message, code="InvalidRollout")


def _number(value: Any, name: str, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= float(value) <= high:
        raise _bad(f"gate {name} must be a number from {low:g} to {high:g}")
    return float(value)


def parse_gates(raw: Any) -> dict[str, Any]:
    """The gates of a canary (or of a card's "rollout"), checked; unknown names are refused, not ignored."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _bad("gates must be an object")
    unknown = sorted(set(raw) - set(GATE_NAMES))
    if unknown:
        raise _bad(f"unknown gate(s) {', '.join(unknown)}; gates are {', '.join(GATE_NAMES)}")
    gates: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None:
            continue
        if name == "noDrift":
            if not isinstance(value, bool):
                raise _bad("gate noDrift must be true or false")
            if value:
                gates[name] = True
        elif name == "maxSecondsPerRecord":
            gates[name] = _number(value, name, low=0.0, high=3600.0)
        else:
            gates[name] = _number(value, name, low=0.0, high=1.0)
    return gates


def parse_canary(raw: dict[str, Any], card_gates: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"version", "percent" 1-99, "gates" (the card's, overridden by the rollout's), "evidence"}."""
    version = str(raw.get("version") or "")
    if not SELECTOR_PATTERN.fullmatch(version):
        raise _bad("canary.version must name a version of the model")
    percent = raw.get("percent")
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 99:
        raise _bad("canary.percent must be a whole number from 1 to 99 (of jobs)")
    evidence = dict(DEFAULT_EVIDENCE)
    for key, value in (raw.get("evidence") or {}).items():
        if key not in evidence:
            raise _bad(f"unknown evidence field {key!r}; it takes jobs and records")
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "jobs" else 0):
            raise _bad(f"canary.evidence.{key} must be a whole number (jobs at least 1)")
        evidence[key] = value
    gates = {**parse_gates(card_gates), **parse_gates(raw.get("gates"))}
    return {"version": version, "percent": percent, "gates": gates, "evidence": evidence}


# Evidence and gates (pure)


def _empty_arm() -> dict[str, Any]:
    return {
        "jobs": 0,
        "records": 0,
        "failed": 0,
        "computeSeconds": 0.0,
        "driftChecked": 0,
        "drifted": 0,
        "compared": 0,
        "agreement": 0.0,
        "otherFailed": 0,
    }


def job_figures(job: Job) -> dict[str, Any]:
    """What one finished job adds to its arm's evidence."""
    figures = _empty_arm()
    figures.update(
        jobs=1,
        records=job.counts.records,
        failed=job.counts.failed,
        computeSeconds=round(job.compute_seconds, 6),
    )
    drift = getattr(job, "drift", None)
    if isinstance(drift, dict) and drift.get("status") in ("ok", "drifted"):
        figures.update(driftChecked=1, drifted=int(drift["status"] == "drifted"))
    for stats in job.shard_comparisons.values():
        figures["compared"] += int(stats.get("compared", 0))
        figures["agreement"] += float(stats.get("agreement", 0.0))
        figures["otherFailed"] += int(stats.get("otherFailed", 0))
    return figures


def add_figures(total: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    out = {**_empty_arm(), **total}
    for key, value in more.items():
        out[key] = round(out.get(key, 0) + value, 6) if isinstance(value, float) else out.get(key, 0) + value
    return out


def rates(arm: dict[str, Any]) -> dict[str, Any]:
    """An arm's figures with the rates the gates read (None: no data for that rate yet)."""
    arm = {**_empty_arm(), **arm}
    records, compared, checked = arm["records"], arm["compared"], arm["driftChecked"]
    return {
        "jobs": arm["jobs"],
        "records": records,
        "failed": arm["failed"],
        "errorRate": round(arm["failed"] / records, 6) if records else None,
        "secondsPerRecord": round(arm["computeSeconds"] / records, 6) if records else None,
        "driftedJobs": arm["drifted"],
        "driftShare": round(arm["drifted"] / checked, 6) if checked else None,
        "compared": compared,
        "agreement": round(arm["agreement"] / compared, 6) if compared else None,
    }


def evaluate(state: dict[str, Any]) -> dict[str, Any]:
    """The verdict on a canary so far: {"decision": "promote" | "rollback" | None, "gates": [...], "evidence",
    "figures"}. A gate fails as soon as its figure crosses the threshold (rolled back at once); promotion needs
    the evidence (jobs and records on the canary) and every gate measured and passed."""
    canary = state.get("canary") or {}
    observed = state.get("observed") or {}
    figures = rates(observed.get("canary") or {})
    results = []
    for name, threshold in sorted((canary.get("gates") or {}).items()):
        value = figures[GATE_FIGURE[name]]
        if name == "noDrift":  # the count of drifted jobs, once any job had a drift verdict
            value = figures["driftedJobs"] if figures["driftShare"] is not None else None
        if value is None:
            status = "pending"
        elif name == "minAgreement":
            status = "passed" if value >= threshold else "failed"
        elif name == "noDrift":
            status = "passed" if value == 0 else "failed"
        else:
            status = "passed" if value <= threshold else "failed"
        results.append({"name": name, "threshold": threshold, "value": value, "status": status})
    needed = canary.get("evidence") or DEFAULT_EVIDENCE
    evidence = {
        "jobs": {"needed": needed["jobs"], "observed": figures["jobs"]},
        "records": {"needed": needed["records"], "observed": figures["records"]},
    }
    decision = None
    if any(gate["status"] == "failed" for gate in results):
        decision = "rollback"
    elif (
        figures["jobs"] >= needed["jobs"]
        and figures["records"] >= needed["records"]
        and all(gate["status"] == "passed" for gate in results)
    ):
        decision = "promote"
    return {
        "decision": decision,
        "gates": results,
        "evidence": evidence,
        "figures": {"canary": figures, "stable": rates(observed.get("stable") or {})},
    }


def public_rollout(state: dict[str, Any]) -> dict[str, Any]:
    """A rollout as GET .../aliases shows it: its set-up, the evidence so far and the gates' verdicts."""
    view = {
        k: v for k, v in state.items() if k in ("id", "stableVersion", "canary", "shadow", "startedAt", "startedBy")
    }
    if state.get("canary"):
        view["status"] = evaluate(state)
    if state.get("shadow"):
        view["shadow"] = {**state["shadow"], "figures": rates((state.get("observed") or {}).get("shadow") or {})}
    return view


def present(view: dict[str, Any]) -> dict[str, Any]:
    """The registry's aliases view as the API and CLI answer it (tenants and counted job ids left out)."""
    out = {k: v for k, v in view.items() if k != "owner"}
    out["rollouts"] = {alias: public_rollout(state) for alias, state in (view.get("rollouts") or {}).items()}
    return out


# Starting (the API for tenants' models, the CLI for built-ins, retraining for new versions)


def start_rollout(
    platform: Platform,
    *,
    owner: str | None,
    name: str,
    alias: str,
    canary: dict[str, Any] | None = None,
    shadow: dict[str, Any] | None = None,
    by: str,
) -> dict[str, Any]:
    """Sets the whole rollout of `alias` (a new one, with no evidence yet); both None ends it. Returns the
    aliases view. Raises InvalidInput (InvalidRollout) or UnknownModel."""
    if not SELECTOR_PATTERN.fullmatch(alias):
        raise _bad(f"alias {alias!r} is not valid")
    tenant = owner or ""
    for version in [c["version"] for c in (canary, shadow) if c]:
        if not SELECTOR_PATTERN.fullmatch(str(version)):
            raise _bad(f"version {version!r} is not valid")
    canary_card = _version_card(platform, tenant, name, str(canary["version"])) if canary else None
    if shadow:
        _version_card(platform, tenant, name, str(shadow["version"]))
    card_gates = (canary_card.raw.get("rollout") or {}).get("gates") if canary_card else None
    parsed = parse_canary(canary, card_gates) if canary else None
    shadow_doc = {"version": str(shadow["version"])} if shadow else None

    def change(doc: dict[str, Any]) -> dict[str, Any] | None:
        stable = doc["aliases"].get(alias)
        if stable is None:
            raise _bad(f"{name!r} has no alias {alias!r}; point it at a version first")
        for other in (parsed, shadow_doc):
            if other and other["version"] == stable:
                raise _bad(f"{alias!r} is already version {stable}; a rollout needs another version")
        entry: dict[str, Any] = {"alias": alias, "from": stable, "to": stable, "by": by, "at": utcnow()}
        if parsed is None and shadow_doc is None:
            if doc["rollouts"].pop(alias, None) is None:
                return None
            entry["rollout"] = "cancelled"
        else:
            state: dict[str, Any] = {
                "id": uuid.uuid4().hex,
                "stableVersion": stable,
                "startedAt": entry["at"],
                "startedBy": by,
                "observed": {},
                "countedJobs": [],
                "tenants": [owner] if owner else [],
            }
            if parsed:
                state["canary"] = parsed
                entry["canary"] = parsed
            if shadow_doc:
                state["shadow"] = shadow_doc
                entry["shadow"] = shadow_doc
            entry["rollout"] = "started"
            doc["rollouts"][alias] = state
        doc["history"].append(entry)
        return doc

    view = platform.models.update_aliases(name, change, owner=owner)
    logger.info("rollout of %s@%s set by %s: canary %s, shadow %s", name, alias, by, parsed, shadow_doc)
    return present(view)


def _version_card(platform: Platform, tenant: str, name: str, version: str) -> ModelCard:
    try:
        card = platform.models.resolve(tenant, ModelRef(name, version))
    except UnknownModel:
        raise UnknownModel(f"model {name!r} has no version {version!r}") from None
    if card.version != version:  # the name of an alias, not of a version
        raise _bad(f"{version!r} is an alias of {name!r}; a rollout names versions")
    return card


# Admission


def assign(platform: Platform, tenant_id: str, ref: ModelRef, card: ModelCard, job_id: str) -> tuple[ModelCard, Any]:
    """The card the job runs and its rollout record (None when the alias it named has no rollout).

    Never raises: a rollout that cannot be read leaves the job on the stable version the alias resolved to."""
    alias = ref.selector or DEFAULT_ALIAS
    try:
        doc = platform.models.get_aliases(tenant_id, ref.name)
        state = (doc.get("rollouts") or {}).get(alias)
        if not state or doc["aliases"].get(alias) != card.version or state.get("stableVersion") != card.version:
            return card, None
        info: dict[str, Any] = {
            "alias": alias,
            "arm": "stable",
            "stableVersion": card.version,
            "rolloutId": state["id"],
        }
        canary, shadow = state.get("canary"), state.get("shadow")
        if shadow:
            info["shadowVersion"] = shadow["version"]
        if canary:
            info["canaryVersion"] = canary["version"]
            if arm_for(job_id, int(canary["percent"])) == "canary":
                chosen = platform.models.resolve(tenant_id, ModelRef(ref.name, str(canary["version"])))
                info.update(arm="canary", compareWith=card.version)
                return chosen, info
        if shadow:
            info["compareWith"] = shadow["version"]
        return card, info
    except Exception:  # the rollout is an experiment; the job still runs on the stable version
        logger.warning(
            "rollout of %s@%s unreadable; job %s stays on %s", ref.name, alias, job_id, card.version, exc_info=True
        )
        return card, None


# Shards: the other version on the same records


@dataclass
class _Prepared:
    primary: Any
    record: Any


class ComparingPredictor:
    """The job's predictor, also running the other version on the first `limit` records it scores; keeps
    only how often they agree (label for classifiers, cosine for embeddings), never the other's outputs."""

    def __init__(self, primary: Predictor, other: Predictor, *, limit: int | None = None) -> None:
        self.card = primary.card
        self._primary, self._other = primary, other
        self._limit = COMPARE_RECORDS_PER_SHARD if limit is None else limit
        self.stats: dict[str, Any] = {
            "version": other.card.version,
            "compared": 0,
            "agreement": 0.0,
            "otherFailed": 0,
            "otherSeconds": 0.0,
        }

    def __getattr__(self, name: str) -> Any:  # whatever else the shard asks of the model is the primary's
        return getattr(self._primary, name)

    def prepare(self, record: Any) -> _Prepared:
        return _Prepared(self._primary.prepare(record), record)

    def predict(self, prepared: list[Any]) -> list[dict[str, Any]]:
        outputs = self._primary.predict([item.primary for item in prepared])
        room = self._limit - self.stats["compared"] - self.stats["otherFailed"]
        if room > 0:
            start = time.perf_counter()
            try:
                self._compare(prepared[:room], outputs[:room])
            except Exception:  # the comparison never fails the job's records
                logger.warning("comparing with %s failed", self.stats["version"], exc_info=True)
            self.stats["otherSeconds"] += time.perf_counter() - start
        return outputs

    def _compare(self, prepared: list[_Prepared], outputs: list[dict[str, Any]]) -> None:
        pairs: list[tuple[Any, dict[str, Any]]] = []
        for item, output in zip(prepared, outputs, strict=True):
            try:
                pairs.append((self._other.prepare(item.record), output))
            except InvalidRecord:
                self.stats["otherFailed"] += 1
        if not pairs:
            return
        try:
            others = self._other.predict([p for p, _ in pairs])
        except Exception:
            self.stats["otherFailed"] += len(pairs)
            return
        for (_, mine), theirs in zip(pairs, others, strict=True):
            score = agreement(mine, theirs)
            if score is not None:
                self.stats["compared"] += 1
                self.stats["agreement"] += score


def agreement(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """1/0 for the same label, cosine for embeddings; None when the outputs carry neither."""
    if "label" in a and "label" in b:
        return 1.0 if a["label"] == b["label"] else 0.0
    x, y = a.get("embedding"), b.get("embedding")
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y) and x:
        dot = sum(float(p) * float(q) for p, q in zip(x, y, strict=True))
        norm = math.sqrt(sum(float(p) ** 2 for p in x)) * math.sqrt(sum(float(q) ** 2 for q in y))
        return round(dot / norm, 6) if norm else 0.0
    return None


def comparing(platform: Platform, job: Job, predictor: Predictor) -> Predictor:
    """The shard's predictor: compared with the other version when the job's rollout asks for it."""
    version = (job.rollout or {}).get("compareWith")
    if not version:
        return predictor
    try:
        card = platform.models.resolve(job.tenant_id, ModelRef(job.model_name, str(version)))
        other = platform.models.load(card)
        if job.parameters:
            other = other.with_parameters(job.parameters)  # type: ignore[attr-defined]
    except Exception:
        logger.warning("job %s: version %s not loadable for comparison", job.job_id, version, exc_info=True)
        return predictor
    return ComparingPredictor(predictor, other)


def comparison_of(predictor: Any) -> tuple[dict[str, Any] | None, float]:
    """(the shard's comparison stats, seconds the other version took: not the tenant's compute)."""
    if not isinstance(predictor, ComparingPredictor):
        return None, 0.0
    stats = {k: round(v, 6) if isinstance(v, float) else v for k, v in predictor.stats.items()}
    return stats, float(predictor.stats["otherSeconds"])


# Finalise: evidence, gates, decisions


def on_job_finished(platform: Platform, job: Job) -> dict[str, Any] | None:
    """Adds a finished job of a rollout to its evidence and decides; returns the decision made, if any."""
    info = job.rollout
    if not info or not job.terminal:
        return None
    alias, arm = str(info["alias"]), str(info["arm"])
    view = platform.models.get_aliases(job.tenant_id, job.model_name)
    owner = str(view.get("owner") or "") or None
    figures = job_figures(job)
    decided: dict[str, Any] = {}

    def change(doc: dict[str, Any]) -> dict[str, Any] | None:
        decided.clear()
        state = doc["rollouts"].get(alias)
        if not state or state.get("id") != info.get("rolloutId") or job.job_id in state.get("countedJobs", []):
            return None  # ended, replaced, or this job is counted already
        observed = state.setdefault("observed", {})
        mine = {k: v for k, v in figures.items() if k not in ("compared", "agreement", "otherFailed")}
        observed[arm] = add_figures(observed.get(arm) or {}, mine if arm == "stable" else figures)
        if arm == "stable" and info.get("compareWith") and info.get("compareWith") == info.get("shadowVersion"):
            shadow = {k: figures[k] for k in ("compared", "agreement", "otherFailed")}
            observed["shadow"] = add_figures(observed.get("shadow") or {}, {"jobs": 1, **shadow})
        state["countedJobs"] = [*state.get("countedJobs", []), job.job_id][-MAX_COUNTED_JOBS:]
        if job.tenant_id not in state.setdefault("tenants", []) and len(state["tenants"]) < MAX_TENANTS:
            state["tenants"].append(job.tenant_id)
        if not state.get("canary"):
            return doc
        verdict = evaluate(state)
        if verdict["decision"] is None:
            return doc
        stable, candidate = state["stableVersion"], state["canary"]["version"]
        promote = verdict["decision"] == "promote"
        entry = {
            "alias": alias,
            "from": stable,
            "to": candidate if promote else stable,
            "by": ROLLOUT_ACTOR,
            "at": utcnow(),
            "rollout": "promoted" if promote else "rolledBack",
            "canaryVersion": candidate,
            "gates": verdict["gates"],
            "evidence": verdict["evidence"],
            "figures": verdict["figures"],
        }
        if owner:  # the job that tipped it; a public model's would name another tenant's job
            entry["decidedBy"] = job.job_id
        if doc["aliases"].get(alias) == stable:  # moved by hand meanwhile: that move already ended it
            doc["aliases"][alias] = entry["to"]
        doc["history"].append(entry)
        doc["rollouts"].pop(alias)
        decided.update(entry=entry, tenants=list(state["tenants"]), rolloutId=state["id"])
        return doc

    platform.models.update_aliases(job.model_name, change, owner=owner)
    if not decided:
        return None
    entry = decided["entry"]
    logger.info(
        "rollout of %s@%s %s: canary %s (gates %s)",
        job.model_name,
        alias,
        entry["rollout"],
        entry["canaryVersion"],
        ", ".join(f"{g['name']}={g['value']} {g['status']}" for g in entry["gates"]) or "none",
        extra={"tenant_id": job.tenant_id, "job_id": job.job_id},
    )
    recipients = [owner] if owner else decided["tenants"] or [job.tenant_id]
    _record_decision(platform, job.model_name, entry, recipients, str(decided["rolloutId"]))
    return dict(entry)


def _record_decision(
    platform: Platform, name: str, entry: dict[str, Any], tenants: Sequence[str], rollout_id: str
) -> None:
    """The audit entry and the event, for every tenant the decision concerns (a private model's owner; for a
    public model every tenant whose jobs were in the rollout, since each saw its canary)."""
    from shared.services.audit import record
    from shared.services.events import publish_events

    promoted = entry["rollout"] == "promoted"
    details: dict[str, Any] = {
        k: entry[k]
        for k in ("alias", "from", "to", "canaryVersion", "gates", "evidence", "figures", "decidedBy")
        if k in entry
    }
    events: list[PlatformEvent] = []
    for tenant in tenants:
        try:
            record(
                platform,
                tenant,
                actor_kind="operator",
                actor_id=ROLLOUT_ACTOR,
                action="models.rollout.promote" if promoted else "models.rollout.rollback",
                target=f"models/{name}/aliases/{entry['alias']}",
                outcome="succeeded",
                request_id=rollout_id,
                details=details,
            )
        except Exception:  # the decision stands (it is in the alias history); the audit store may be down
            logger.warning("audit of the rollout decision on %s for %s failed", name, tenant, exc_info=True)
        event_id = hashlib.sha256(f"rollout:{rollout_id}:{entry['rollout']}:{tenant}".encode()).hexdigest()[:32]
        data: dict[str, Any] = {"decision": entry["rollout"], **details}
        events.append(model_event(tenant, name, PROMOTED if promoted else ROLLED_BACK, data, event_id))
    publish_events(platform, events)
