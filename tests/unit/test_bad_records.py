"""Bad records in a batch job over the fakes: each one error with its line (and field), the rest scored, in order."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
import pytest

from shared.domain.jobs import Job, JobStatus
from shared.services.ingest import admit_blob_created
from shared.services.platform import Platform
from shared.services.shards import run_shard
from tests.fakes import MODEL_NAME, add_tenant, make_platform, sample_bytes, upload


def sample_rows() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in sample_bytes("breast-cancer.jsonl").splitlines() if line.strip()]


def features() -> list[str]:
    return [name for name in sample_rows()[0] if name not in ("id", "expected")]


def run_job(platform: Platform, name: str, data: bytes) -> Job:
    path = f"inbox/{MODEL_NAME}/{name}"
    job = admit_blob_created(platform, "acme", path, upload(platform, "acme", path, data))
    assert job is not None
    while messages := platform.queue.drain():  # type: ignore[attr-defined]
        for message in messages:
            run_shard(platform, message)
    return platform.jobs.get_job("acme", job.job_id)


def pages(platform: Platform, job: Job) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    found = list(platform.results.iter_pages("acme", job.job_id))
    return [i for p in found for i in p.items], [e for p in found for e in p.errors]


@pytest.fixture
def platform() -> Platform:
    platform = make_platform(batch_size=7, shard_bytes=2048)
    platform.blobs.chunk_size = 5  # type: ignore[attr-defined]
    add_tenant(platform, "acme")
    return platform


def test_values_beyond_float32_are_record_errors_naming_the_field_not_silent_infinities(platform: Platform) -> None:
    rows = sample_rows()[:6]
    name = features()[2]
    rows[1] = {**rows[1], name: 3.5e38}
    rows[3] = {**rows[3], name: -1e300}
    rows[4] = {**rows[4], name: 3.4028235e38}  # float32's largest value itself is a value

    done = run_job(platform, "overflow.jsonl", b"".join(orjson.dumps(row) + b"\n" for row in rows))

    items, errors = pages(platform, done)
    assert done.status == JobStatus.PARTIALLY_SUCCEEDED
    assert [(e["recordIndex"], e["line"], e["field"]) for e in errors] == [(1, 2, name), (3, 4, name)]
    assert all("float32" in e["message"] for e in errors)
    assert [i["recordIndex"] for i in items] == [0, 2, 4, 5]


def test_a_sharded_csv_with_quoted_newlines_and_bad_rows_gives_every_record_once(platform: Platform) -> None:
    """The file is planned into many 2 KiB shards; records span lines; bad ones are errors at their line."""
    names = features()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["id", *names])
    expected_lines, line, bad = [], 2, {}
    for i, row in enumerate(sample_rows() * 2):
        record_id = f'row {i}\nsays "hi", then\n\nends' if i % 2 else f"row {i}"
        values = [row[n] for n in names]
        if i % 17 == 5:
            values[4] = "4e38"
            bad[i] = names[4]
        writer.writerow([record_id, *values])
        expected_lines.append(line)
        line += 1 + record_id.count("\n")
    data = buffer.getvalue().encode() + b'100,"never closed\r\n'

    done = run_job(platform, "quoted.csv", data)

    items, errors = pages(platform, done)
    assert done.shard_count > 5
    rows = len(expected_lines)
    assert done.counts.to_dict() == {"records": rows + 1, "succeeded": rows - len(bad), "failed": len(bad) + 1}
    assert [(i["recordIndex"], i["id"]) for i in items] == [
        (i, f'row {i}\nsays "hi", then\n\nends' if i % 2 else f"row {i}") for i in range(rows) if i not in bad
    ]
    assert [(e["recordIndex"], e["line"], e["field"]) for e in errors] == [
        *((i, expected_lines[i], field) for i, field in bad.items()),
        (rows, line, None),
    ]
    assert "never closed" in errors[-1]["message"]


def test_a_sharded_csv_with_a_record_over_the_limit_fails_with_that_reason(platform: Platform) -> None:
    rows = b"".join(b"%d," % i + b",".join([b"1"] * 30) + b"\n" for i in range(200))
    field = b'"' + b"z" * 100_000 + b'\n"'
    data = b"id," + ",".join(features()).encode() + b"\n" + rows + b",".join([field] * 50) + b"\n" + rows

    done = run_job(platform, "huge-record.csv", data)

    assert done.status == JobStatus.FAILED and done.error is not None
    assert done.error["code"] == "RecordTooLong" and done.shard_count > 1
