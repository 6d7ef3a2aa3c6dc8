"""Who is calling and what they may do: every route declares its role here, and one dependency checks it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from shared.domain.errors import Forbidden

READER, SUBMITTER, ADMIN = "AIaaS.Reader", "AIaaS.Submitter", "AIaaS.Admin"
ROLES = (READER, SUBMITTER, ADMIN)
# Each role holds every right of the roles before it.
_RANK = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Caller:
    """The credential, resolved once per request: whose tenant, which actor, which role."""

    tenant_id: str
    role: str
    actor_kind: str  # "key" or "entra"
    actor_id: str

    def may(self, role: str) -> bool:
        return _RANK.get(self.role, -1) >= _RANK[role]


# How the app turns a request's Authorization header into a Caller (set by create_app on app.state).
Authenticator = Callable[[Request, str | None], Caller]


def _dependency(role: str) -> Callable[..., Caller]:
    def authorize(request: Request, authorization: Annotated[str | None, Header()] = None) -> Caller:
        authenticate: Authenticator = request.app.state.authenticate
        caller = authenticate(request, authorization)
        if not caller.may(role):
            raise Forbidden(f"this call needs the role {role}")
        request.state.caller = caller
        return caller

    authorize.required_role = role  # type: ignore[attr-defined]  # what the route-coverage test reads
    return authorize


_MARKERS: dict[str, Any] = {role: Depends(_dependency(role)) for role in ROLES}


def requires(role: str) -> Any:
    """The Depends() marker of a route that needs `role`; the same marker for every route of that role."""
    return _MARKERS[role]


def required_role(dependency: Callable[..., Any]) -> str | None:
    return getattr(dependency, "required_role", None)


# The markers as module-level values, for routes that take them as parameter defaults.
AS_READER, AS_SUBMITTER, AS_ADMIN = (requires(role) for role in ROLES)
