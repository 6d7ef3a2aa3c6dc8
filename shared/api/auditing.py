"""The audit log's one writer on the API: every state-changing call and every refused authentication, with the
request's id (also returned as `x-request-id`), written before the answer leaves."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.api.auth import Caller, Refusal
from shared.domain.audit import outcome_of
from shared.services import audit
from shared.services.platform import Platform

logger = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POST routes that change nothing (online inference, a read with a body): no entry unless refused, so that an
# online prediction does not cost a store write.
READ_ONLY_ROUTES = frozenset({"infer", "infer_version"})
REQUEST_ID_HEADER = "x-request-id"
# Route names (the endpoint functions) whose action reads better than the verb_noun rule below makes it.
ACTIONS = {
    "create_upload": "uploads.create",
    "submit_job": "jobs.submit",
    "cancel_job": "jobs.cancel",
    "list_jobs": "jobs.list",
    "get_job": "jobs.get",
    "get_results": "jobs.results",
    "create_subscription": "subscriptions.create",
    "delete_subscription": "subscriptions.delete",
    "list_subscriptions": "subscriptions.list",
    "get_subscription": "subscriptions.get",
    "redeliver_subscription": "subscriptions.redeliver",
    "list_dead_letters": "subscriptions.deadletters",
    "list_models": "models.list",
    "get_model": "models.get",
    "register_model": "models.register",
    "get_aliases": "models.aliases",
    "move_alias": "models.alias",
    "get_model_metadata": "models.metadata",
    "get_model_version_metadata": "models.metadata",
    "model_ready": "models.ready",
    "model_version_ready": "models.ready",
    "infer": "models.infer",
    "infer_version": "models.infer",
    "create_key": "keys.create",
    "list_keys": "keys.list",
    "revoke_key": "keys.revoke",
    "list_audit": "audit.list",
}


def action_for(route_name: str) -> str:
    """`verb_noun_rest` -> `noun-rest.verb` (create_thing -> thing.create) unless ACTIONS names it."""
    if route_name in ACTIONS:
        return ACTIONS[route_name]
    verb, _, noun = route_name.lower().partition("_")
    return f"{noun.replace('_', '-')}.{verb}" if noun else verb


class AuditMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware: it would copy every body): gives each request an id, and writes the
    audit entry when the answer starts, from what the authorize dependency left in the request's state."""

    def __init__(self, app: ASGIApp, platform_factory: Callable[[], Platform]) -> None:
        self.app = app
        self._platform = platform_factory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = False

        async def send_with_audit(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
                await self._audit(scope, int(message["status"]), request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_audit)
        except Exception:
            if not started:  # the app failed before answering: the server answers 500, and that is what happened
                await self._audit(scope, 500, request_id)
            raise

    async def _audit(self, scope: Scope, status: int, request_id: str) -> None:
        fields = self._entry(scope, status, request_id)
        if fields is None:
            return
        try:
            await run_in_threadpool(audit.record, self._platform(), **fields)
        except Exception:  # the call itself is done; the answer goes out, and the loss is an error in the log
            logger.exception("audit entry NOT written: %s", fields)

    @staticmethod
    def _entry(scope: Scope, status: int, request_id: str) -> dict[str, Any] | None:
        state = scope.get("state") or {}
        route = scope.get("route")
        action = action_for(getattr(route, "name", "") or "request")
        common = {
            "action": action,
            "target": str(scope.get("path", ""))[:1024],
            "outcome": outcome_of(status),
            "request_id": request_id,
            "status_code": status,
        }
        refused: Refusal | None = state.get("refused")
        if refused is not None:
            return {
                "tenant_id": refused.tenant_id,
                "actor_kind": refused.actor_kind,
                "actor_id": refused.actor_id,
                **common,
            }
        caller: Caller | None = state.get("caller")
        if caller is None:
            return None
        read_only = scope.get("method") in SAFE_METHODS or getattr(route, "name", "") in READ_ONLY_ROUTES
        if read_only and status != 403:
            return None
        return {"tenant_id": caller.tenant_id, "actor_kind": caller.actor_kind, "actor_id": caller.actor_id, **common}
