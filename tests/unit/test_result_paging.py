"""The results API pages by bytes as well as by count: records of megabytes each never make an answer of gigabytes."""

from __future__ import annotations

from typing import Any

import orjson

from shared.domain.jobs import Job, ResultPage
from shared.services.platform import Platform
from shared.services.queries import RESULTS_RESPONSE_BYTES, list_results


def _all(platform: Platform, job_id: str, limit: int) -> list[list[dict[str, Any]]]:
    answers, token = [], None
    while True:
        answer = list_results(platform, "acme", job_id, limit=limit, continuation=token)
        answers.append(answer["items"])
        token = answer["continuationToken"]
        if not token:
            return answers


def test_results_of_megabytes_each_come_a_few_at_a_time_and_all_of_them(platform: Platform) -> None:
    platform.jobs.create_job(Job("acme", "j1", "m", "1", "inbox/m/big.jsonl", "0x1"))
    items = [{"recordIndex": i, "id": None, "output": str(i) * (3 * 1024 * 1024)} for i in range(5)]
    items.append({"recordIndex": 5, "id": None, "output": "9" * (RESULTS_RESPONSE_BYTES + 1)})  # over it alone
    platform.results.put_page(ResultPage("acme", "j1", 0, 0, 5, items, []))

    answers = _all(platform, "j1", limit=1000)
    assert [item for answer in answers for item in answer] == items
    assert [len(answer) for answer in answers] == [2, 2, 1, 1]
    assert all(sum(len(orjson.dumps(i)) for i in answer) <= RESULTS_RESPONSE_BYTES for answer in answers[:-1])


def test_small_results_still_come_limit_at_a_time(platform: Platform) -> None:
    platform.jobs.create_job(Job("acme", "j2", "m", "1", "inbox/m/rows.jsonl", "0x1"))
    items = [{"recordIndex": i, "id": f"r{i}", "output": {"label": i % 2}} for i in range(2500)]
    platform.results.put_page(ResultPage("acme", "j2", 0, 0, 2499, items, []))
    answers = _all(platform, "j2", limit=1000)
    assert [len(answer) for answer in answers] == [1000, 1000, 500]
    assert [item for answer in answers for item in answer] == items
