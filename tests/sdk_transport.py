"""An azure-core transport for adapters that cannot reach Azure here: the real SDK client sends its own
HttpRequests, which are kept for the test to read, and canned JSON answers them."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

import requests
import urllib3
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import RequestsTransport
from requests.structures import CaseInsensitiveDict

# (status, JSON body) or (status, JSON body, extra headers) for one request.
Answer = tuple[int, dict[str, Any]] | tuple[int, dict[str, Any], dict[str, str]]
Reply = Callable[[requests.PreparedRequest], Answer]


class FakeCredential:
    """A token credential that hands out a fixed token and keeps the scopes it was asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("test-token", int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.scopes.append(scopes)
        return AccessTokenInfo("test-token", int(time.time()) + 3600)


class _CannedAdapter(requests.adapters.BaseAdapter):
    def __init__(self, reply: Reply) -> None:
        super().__init__()
        self._reply = reply

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        answer = self._reply(request)
        status, body = answer[0], answer[1]
        headers = answer[2] if len(answer) == 3 else {}
        content = json.dumps(body).encode()
        response = requests.Response()
        response.status_code, response.url, response.request, response.reason = status, request.url, request, "x"
        response.headers = CaseInsensitiveDict({"content-type": "application/json", "x-ms-request-id": "r", **headers})
        response._content = content
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(content), headers=dict(response.headers), status=status, preload_content=False
        )
        return response

    def close(self) -> None:
        pass


class RecordingTransport(RequestsTransport):
    """Keeps every azure.core HttpRequest the SDK sends for which `keep` is true, and answers from `reply`."""

    def __init__(self, reply: Reply, *, keep: Callable[[Any], bool] = lambda _: True) -> None:
        session = requests.Session()
        session.mount("https://", _CannedAdapter(reply))
        super().__init__(session=session, session_owner=False)
        self._keep = keep
        self.requests: list[Any] = []

    def send(self, request: Any, **kwargs: Any) -> Any:
        if self._keep(request):
            self.requests.append(request)
        return super().send(request, **kwargs)
