"""/api/docs is Swagger UI whose every asset the platform serves itself: no CDN, nothing from another host."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from shared.api.apidocs import ASSETS_PATH, VENDORED
from shared.api.app import create_app
from shared.services.platform import Platform

ROOT = Path(__file__).resolve().parents[2]
NODE_PACKAGE = ROOT / "node_modules" / "swagger-ui-dist"
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class Links(HTMLParser):
    """Every src and href on a page, and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value for name, value in attrs if name in ("src", "href") and value is not None}
        self.urls.extend(found.values())
        self._in_inline_script = tag == "script" and "src" not in found

    def handle_endtag(self, tag: str) -> None:
        self._in_inline_script = False

    def handle_data(self, data: str) -> None:
        if self._in_inline_script:
            self.inline_scripts.append(data)


@pytest.fixture
def client(platform: Platform) -> TestClient:
    return TestClient(create_app(lambda: platform), raise_server_exceptions=False)


def page_links(client: TestClient) -> tuple[Links, str]:
    response = client.get("/api/docs")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    links = Links()
    links.feed(response.text)
    return links, response.text


def test_the_docs_page_names_no_other_host(client: TestClient) -> None:
    links, html = page_links(client)
    assert len(links.urls) == 3, links.urls  # stylesheet, icon, script
    for url in links.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, url
    assert "://" not in html  # nor in the inline script (the document's own URL is a path)
    assert "url: '/api/openapi.json'" in html


def test_every_asset_of_the_page_is_served_with_its_type(client: TestClient) -> None:
    links, _ = page_links(client)
    for url in links.urls:
        response = client.get(url)
        assert response.status_code == 200, url
        name = url.rsplit("/", 1)[1]
        assert response.headers["content-type"].startswith(CONTENT_TYPES[Path(name).suffix]), url
        assert response.content == (VENDORED / name).read_bytes(), url


def test_the_page_is_openly_readable_and_its_document_too(client: TestClient) -> None:
    """No key needed for the page, as for /api/openapi.json it loads; a key changes nothing."""
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/api/docs", headers={"Authorization": "Bearer not-a-key"}).status_code == 200


def test_the_policy_lets_the_pages_own_script_run_and_nothing_from_elsewhere(client: TestClient) -> None:
    response = client.get("/api/docs")
    links, _ = page_links(client)
    policy = dict(
        directive.strip().split(" ", 1) for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'self'"
    assert policy["connect-src"] == policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    allowed = set(policy["script-src"].split())
    assert allowed - {"'self'"} and "'unsafe-inline'" not in allowed
    for script in links.inline_scripts:  # a browser runs the inline start-up script only if its hash is allowed
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in allowed
    assert response.headers["x-frame-options"] == "DENY"


def test_an_unknown_asset_is_a_404_with_the_error_body(client: TestClient) -> None:
    for url in (f"{ASSETS_PATH}/LICENSE", f"{ASSETS_PATH}/..%2F..%2F__init__.py", f"{ASSETS_PATH}/index.html"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert set(response.json()["error"]) == {"code", "message"}


def test_the_docs_routes_are_not_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/api/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/api/docs")]
    assert client.get("/docs/oauth2-redirect").status_code == 404  # no OAuth2 flow: no redirect page


@pytest.mark.skipif(not NODE_PACKAGE.is_dir(), reason="no node_modules/swagger-ui-dist (npm ci not run)")
def test_the_committed_copy_is_the_installed_swagger_ui_dist() -> None:
    """An upgrade in package.json without `python scripts/vendor_swagger_ui.py` fails here."""
    version = re.search(r'"version":\s*"([^"]+)"', (NODE_PACKAGE / "package.json").read_text())
    assert version is not None
    assert VENDORED.name == f"swagger-ui-{version.group(1)}"
    for vendored in VENDORED.iterdir():
        assert vendored.read_bytes() == (NODE_PACKAGE / vendored.name).read_bytes(), vendored.name
