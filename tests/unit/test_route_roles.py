"""Every route declares its role in one place (shared/api/auth.py), and each role is held to it over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from shared.api import apidocs
from shared.api.app import create_app
from shared.api.auth import required_role
from shared.domain.tenants import ADMIN, READER, ROLES, SUBMITTER
from shared.services.platform import Platform
from shared.services.tenants import create_key
from tests.fakes import MODEL_NAME, add_tenant

# Routes anyone may call: liveness and readiness (a load balancer's or App Service's health probe carries no
# credential; readiness answers only which dependency is down, never a host or an error text), the documents
# that describe the API, the V2 server's health and metadata (the protocol's unauthenticated probes), the V2
# catch-all that answers 404 for a path that is no endpoint, and
# the relay of callback subscriptions: Event Grid calls it with no tenant credential, so it authenticates each
# delivery by the subscription's own relay header instead (shared.services.relay; its OPTIONS is the CloudEvents
# abuse-protection request, which carries no header of ours). And the web console's page and assets (static, no
# data: its calls are the tenant's own /api/v1 with the key), and the Swagger UI page over /api/openapi.json with
# its vendored assets (shared/api/apidocs: static, describing what /api/openapi.json already shows anyone).
PUBLIC = {
    ("GET", apidocs.DOCS_PATH),
    ("GET", f"{apidocs.ASSETS_PATH}/{{asset}}"),
    ("GET", "/console"),
    ("GET", "/console/"),
    ("GET", "/console/static/{asset:path}"),
    ("POST", "/api/relay/{tenant_id}/{subscription_id}"),
    ("OPTIONS", "/api/relay/{tenant_id}/{subscription_id}"),
    ("GET", "/api/health"),
    ("GET", "/api/health/ready"),
    ("GET", "/api/v2/health/live"),
    ("GET", "/api/v2/health/ready"),
    ("GET", "/api/v2"),
    *((method, "/api/v2/{rest:path}") for method in ("GET", "POST", "PUT", "DELETE", "PATCH")),
}


def roles_of(dependant: Dependant) -> set[str]:
    found = set()
    for dependency in dependant.dependencies:
        if dependency.call is not None and (role := required_role(dependency.call)):
            found.add(role)
        found |= roles_of(dependency)
    return found


def api_routes(app: FastAPI) -> Iterator[tuple[str, str, set[str]]]:
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            for method in sorted(context.methods or ()):
                yield method, str(context.path), roles_of(route.dependant)


@pytest.fixture
def app(platform: Platform) -> FastAPI:
    return create_app(lambda: platform)


def test_every_route_but_the_public_ones_declares_exactly_one_role(app: FastAPI) -> None:
    routes = list(api_routes(app))
    undeclared = [(m, p) for m, p, roles in routes if not roles and (m, p) not in PUBLIC]
    ambiguous = [(m, p, roles) for m, p, roles in routes if len(roles) > 1]
    public_with_role = [(m, p) for m, p, roles in routes if roles and (m, p) in PUBLIC]

    assert len(routes) > 20
    assert undeclared == [] and ambiguous == [] and public_with_role == []


def test_a_new_route_without_a_role_fails_the_check(app: FastAPI) -> None:
    @app.post("/api/v1/forgotten")
    def forgotten() -> dict[str, str]:
        return {}

    assert [(m, p) for m, p, roles in api_routes(app) if not roles and (m, p) not in PUBLIC] == [
        ("POST", "/api/v1/forgotten")
    ]


def test_every_state_changing_route_needs_more_than_reader(app: FastAPI) -> None:
    readers = [(m, p) for m, p, roles in api_routes(app) if m not in ("GET", "HEAD") and READER in roles]

    assert readers == []


# Each role against each class of route, through HTTP


@pytest.fixture
def clients(platform: Platform, app: FastAPI) -> dict[str, TestClient]:
    add_tenant(platform, "globex")
    out = {}
    for role in ROLES:
        key = create_key(platform, "acme", role.lower(), role)[1]
        out[role] = TestClient(app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {key}"})
    return out


CALLS: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", "/api/v1/jobs", None, READER),
    ("GET", "/api/v1/models", None, READER),
    ("GET", "/api/v1/subscriptions", None, READER),
    ("POST", "/api/v1/uploads", {"model": MODEL_NAME, "filename": "a.csv"}, SUBMITTER),
    ("POST", "/api/v1/jobs", {"model": MODEL_NAME, "blobPath": "inbox/x/none.csv"}, SUBMITTER),
    ("POST", "/api/v1/subscriptions", {"endpointUrl": "https://example.com/hook"}, ADMIN),
    ("GET", "/api/v1/events", None, READER),
    ("GET", "/api/v1/subscriptions/0123456789abcdef0123456789abcdef/deadletters", None, READER),
    ("POST", "/api/v1/subscriptions/0123456789abcdef0123456789abcdef/redeliver", {"eventIds": ["e"]}, ADMIN),
    ("DELETE", "/api/v1/subscriptions/0123456789abcdef0123456789abcdef", None, ADMIN),
    ("POST", "/api/v1/keys", {"name": "k", "role": READER}, ADMIN),
    ("GET", "/api/v1/keys", None, ADMIN),
    ("DELETE", "/api/v1/keys/0123456789abcdef0123456789abcdef", None, ADMIN),
    ("GET", "/api/v1/audit", None, ADMIN),
]


@pytest.mark.parametrize(("method", "path", "body", "needed"), CALLS, ids=[f"{c[0]} {c[1]}" for c in CALLS])
def test_each_role_may_call_what_its_rank_allows_and_gets_403_otherwise(
    clients: dict[str, TestClient], method: str, path: str, body: dict[str, Any] | None, needed: str
) -> None:
    for role, client in clients.items():
        response = client.request(method, path, json=body)
        if ROLES.index(role) < ROLES.index(needed):
            assert response.status_code == 403, (role, response.text)
            assert response.json() == {"error": {"code": "Forbidden", "message": "not allowed"}}
        else:
            assert response.status_code not in (401, 403), (role, response.text)
