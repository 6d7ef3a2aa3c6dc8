"""schemathesis over the real API (fakes-backed, a real API key): no 5xx, no undocumented status, no broken schema."""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.api.app import create_app
from shared.domain.tenants import ADMIN, READER
from shared.services.platform import Platform
from shared.services.tenants import create_key
from tests.fakes import MODEL_NAME
from tests.unit.test_api import make_job

# Per operation and variant (below): about 70 operation variants x 8 take some 40 s on the fakes.
EXAMPLES_PER_OPERATION = 8
CHECKS = {
    not_a_server_error: "server errors",
    status_code_conformance: "undocumented statuses",
    response_schema_conformance: "schema failures",
    content_type_conformance: "content-type failures",
}


def _variants(operation: dict[str, Any], known: dict[str, str]) -> list[tuple[GenerationMode, dict[str, str]]]:
    """Positive cases; negative ones where there is something to break (a body or a query parameter: an
    unconstrained path string has no invalid value, hypothesis would search in vain); and positive ones again
    with the path naming a real model and job, so the answers are the 2xx ones and not only 404s."""
    parameters = operation.get("parameters", [])
    variants = [(GenerationMode.POSITIVE, {})]
    if "requestBody" in operation or any(p["in"] == "query" for p in parameters):
        variants.append((GenerationMode.NEGATIVE, {}))
    fixed = {p["name"]: known[p["name"]] for p in parameters if p["in"] == "path" and p["name"] in known}
    if fixed:
        variants.append((GenerationMode.POSITIVE, fixed))
    return variants


@dataclass
class Tally:
    """What the run saw: cases per operation variant, statuses, and each check's failures (where, what)."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[str, list[str]] = field(default_factory=dict)

    def fail(self, kind: str, where: str) -> None:
        self.failures.setdefault(kind, []).append(where)


def _run(strategy: Any, label: str, headers: dict[str, str], tally: Tally, examples: int) -> None:
    """Up to `examples` cases of one operation variant, each checked by every check in CHECKS."""

    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same cases every run: a failure here is reproducible
    )
    def run(case: Any) -> None:
        tally.cases[label] += 1
        case.headers = {**(case.headers or {}), **headers}
        try:
            response = case.call()
        except Exception as err:  # the app's 500, re-raised by the ASGI test client
            tally.fail(CHECKS[not_a_server_error], f"{case.method} {case.formatted_path}: {err!r}")
            return
        tally.statuses[response.status_code] += 1
        for check, kind in CHECKS.items():
            try:
                case.validate_response(response, checks=[check])
            except (Failure, FailureGroup):
                tally.fail(
                    kind, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}"
                )

    with contextlib.suppress(Unsatisfiable):  # no example exists for this variant
        run()


def test_generated_requests_get_only_documented_answers_that_match_their_schemas(platform: Platform) -> None:
    # An admin key: every operation is reachable, so its answers are the real ones and not only 403s.
    key = create_key(platform, "acme", "schemathesis", ADMIN)[1]
    reader = create_key(platform, "acme", "schemathesis-reader", READER)[1]
    app = create_app(lambda: platform)
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    known = {"name": MODEL_NAME, "job_id": make_job(platform, "acme", "schemathesis.jsonl")}
    document = app.openapi()
    tally = Tally()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, fixed in _variants(document["paths"][operation.path][operation.method.lower()], known):
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)
            label = f"{operation.label} [{mode.value}{', known ' + ', '.join(fixed) if fixed else ''}]"
            _run(strategy, label, {"Authorization": f"Bearer {key}"}, tally, EXAMPLES_PER_OPERATION)
    # The refusals, last: a reader's key (403 where more is needed), then a wrong secret (401; enough of them
    # lock the tenant out for a while, 429, which is documented too).
    for who, credential in (("reader", reader), ("wrong secret", "aiaas_acme.not-the-secret")):
        for result in schema.get_all_operations():
            operation = result.ok()
            label = f"{operation.label} [{who}]"
            _run(operation.as_strategy(), label, {"Authorization": f"Bearer {credential}"}, tally, 2)

    total = sum(tally.cases.values())
    counts = {kind: len(tally.failures.get(kind, [])) for kind in CHECKS.values()}
    print(f"\nschemathesis: {total} cases over {len(tally.cases)} operation variants; {counts}")
    print(f"  statuses: {dict(sorted(tally.statuses.items()))}")
    for kind, where in tally.failures.items():
        print(f"  {kind}: {len(where)}, e.g. {where[0]}")
    assert len(tally.cases) >= len(document["paths"]), "every operation ran"
    assert not tally.failures, {kind: where[:3] for kind, where in tally.failures.items()}
