"""Usage records (one per finished job), their aggregation, and the quotas a tenant's work is held to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from shared.domain.errors import InvalidInput
from shared.domain.jobs import Job

GROUP_BY = ("model", "day")
DEFAULT_RANGE_DAYS = 30


def usage_id(job_id: str) -> str:
    """One usage document per job, named by the job: a second write of it replaces, never adds."""
    return f"usage-{job_id}"


@dataclass(frozen=True)
class UsageRecord:
    """What one finished job used, written once when it ends (whatever retries happened before)."""

    tenant_id: str
    job_id: str
    status: str
    model_name: str
    model_version: str | None
    records: int
    succeeded: int
    failed: int
    bytes_read: int
    compute_seconds: float
    ended_at: str
    # The stamp that metered it (regional stamps): the job's region.
    region: str = ""

    @property
    def day(self) -> str:
        return self.ended_at[:10]

    @property
    def model(self) -> str:
        return f"{self.model_name}@{self.model_version}" if self.model_version else self.model_name

    @classmethod
    def of_job(cls, job: Job) -> UsageRecord:
        """Deterministic in the job: every writer of a job's record writes the same document."""
        return cls(
            tenant_id=job.tenant_id,
            job_id=job.job_id,
            status=job.status.value,
            model_name=job.model_name,
            model_version=job.model_version,
            records=job.counts.records,
            succeeded=job.counts.succeeded,
            failed=job.counts.failed,
            # The input blob's size: a rejected job read none of it, but its size is what it asked for and
            # what billing by volume would count; every job carries it.
            bytes_read=job.content_length,
            compute_seconds=round(job.compute_seconds, 6),
            ended_at=job.completed_at or job.updated_at,
            region=job.region,
        )

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": usage_id(self.job_id),
            "kind": "usage",
            "tenantId": self.tenant_id,
            "jobId": self.job_id,
            "status": self.status,
            "model": {"name": self.model_name, "version": self.model_version},
            "records": self.records,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "bytes": self.bytes_read,
            "computeSeconds": self.compute_seconds,
            "endedAt": self.ended_at,
            "day": self.day,
            "region": self.region,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> UsageRecord:
        model = doc.get("model") or {}
        return cls(
            tenant_id=doc["tenantId"],
            job_id=doc["jobId"],
            status=str(doc.get("status", "")),
            model_name=str(model.get("name", "")),
            model_version=model.get("version"),
            records=int(doc.get("records", 0)),
            succeeded=int(doc.get("succeeded", 0)),
            failed=int(doc.get("failed", 0)),
            bytes_read=int(doc.get("bytes", 0)),
            compute_seconds=float(doc.get("computeSeconds", 0.0)),
            ended_at=str(doc["endedAt"]),
            region=str(doc.get("region") or ""),
        )


@dataclass
class UsageTotals:
    jobs: int = 0
    records: int = 0
    succeeded: int = 0
    failed: int = 0
    bytes: int = 0
    compute_seconds: float = 0.0

    def add(self, record: UsageRecord) -> None:
        self.jobs += 1
        self.records += record.records
        self.succeeded += record.succeeded
        self.failed += record.failed
        self.bytes += record.bytes_read
        self.compute_seconds += record.compute_seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "records": self.records,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "bytes": self.bytes,
            "computeSeconds": round(self.compute_seconds, 3),
        }


def aggregate(records: Iterable[UsageRecord], group_by: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Items grouped by model (name@version) or by day (UTC), sorted by their key, and the totals over all."""
    if group_by not in GROUP_BY:
        raise InvalidInput(f"groupBy must be one of {', '.join(GROUP_BY)}", code="InvalidGroupBy")
    groups: dict[str, UsageTotals] = {}
    totals = UsageTotals()
    for record in records:
        key = record.model if group_by == "model" else record.day
        groups.setdefault(key, UsageTotals()).add(record)
        totals.add(record)
    items = [{group_by: key, **groups[key].to_dict()} for key in sorted(groups)]
    return items, totals.to_dict()


def timestamp(moment: datetime) -> str:
    """The form every stored time has (shared.domain.jobs.utcnow), so that strings compare as times."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_bound(name: str, value: str, *, end: bool) -> datetime:
    """A date (the whole day: from its start, or through its end) or a datetime (naive is UTC)."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(), tzinfo=UTC)
            return moment + timedelta(days=1) if end else moment
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{name} must be an ISO 8601 date (2026-01-31) or date and time (2026-01-31T12:00:00Z), not {value[:40]!r}",
            code="InvalidTimeRange",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def time_range(start: str | None, end: str | None, *, now: datetime | None = None) -> tuple[str, str]:
    """[from, to) as stored timestamps. A `to` date counts through that day; the default is the last 30 days
    (29 whole days and today)."""
    now = now or datetime.now(UTC)
    today = datetime.combine(now.date(), time(), tzinfo=UTC)
    upper = _parse_bound("to", end, end=True) if end else today + timedelta(days=1)
    lower = _parse_bound("from", start, end=False) if start else today - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if lower > upper or (end and lower > _parse_bound("to", end, end=False)):  # a `to` date: its start
        raise InvalidInput("from must not be after to", code="InvalidTimeRange")
    return timestamp(lower), timestamp(upper)


def seconds_to_next_day(now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), time(), tzinfo=UTC)
    return max(1, int((midnight - now).total_seconds()) + 1)


# Quotas

QUOTA_FIELDS = {
    "recordsPerDay": "records_per_day",
    "concurrentJobs": "concurrent_jobs",
    "maxFileBytes": "max_file_bytes",
    "requestsPerMinute": "requests_per_minute",
}


@dataclass(frozen=True)
class Quota:
    """A tenant's limits; 0 is no limit."""

    records_per_day: int = 0
    concurrent_jobs: int = 0
    max_file_bytes: int = 0
    requests_per_minute: int = 0

    def with_overrides(self, overrides: dict[str, int | None]) -> Quota:
        """These limits with the tenant's own (the operator's `set-quota`) in place of the defaults."""
        changes = {
            QUOTA_FIELDS[key]: int(value)
            for key, value in overrides.items()
            if key in QUOTA_FIELDS and value is not None
        }
        return replace(self, **changes)


@dataclass(frozen=True)
class TenantActivity:
    """What a tenant has under way now: its jobs not ended, and the records they have processed so far."""

    unfinished_jobs: int = 0
    records_in_flight: int = 0
    # (createdAt, jobId) of each: the order in which they took the tenant's job slots.
    jobs: tuple[tuple[str, str], ...] = ()

    def ahead_of(self, created_at: str, job_id: str) -> int:
        """How many of these jobs may hold a slot before that one: those created earlier, and every other job of the
        same instant. A tie counts against both (at worst both wait and retry), never for both: a tie broken by id
        let a job pass that sorted before one already admitted, and the tenant ran over its limit."""
        return sum(1 for when, other in self.jobs if when < created_at or (when == created_at and other != job_id))


def rate_window(now: datetime) -> tuple[str, int]:
    """The minute a request counts in (`YYYYMMDDTHHMM`, UTC) and the seconds left in it (at least 1)."""
    key = now.astimezone(UTC).strftime("%Y%m%dT%H%M")
    left = 60 - now.second - now.microsecond / 1e6
    return key, max(1, int(left + 0.999))
