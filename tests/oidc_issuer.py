"""A local OpenID issuer for the tests: Entra-shaped metadata and JWKS per tenant on loopback, throwaway RSA keys."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

AUDIENCE = "api://aiaas-tests"


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def new(cls) -> SigningKey:
        return cls(uuid.uuid4().hex, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}


class OidcIssuer:
    """Serves `<base>/<tid>/v2.0/.well-known/openid-configuration` and `<base>/<tid>/discovery/v2.0/keys` for any
    tid; `rotate()` publishes a new key, `down = True` makes every answer a 503; `fetches` counts key fetches."""

    def __init__(self) -> None:
        self.keys = [SigningKey.new()]
        self.down = False
        self.fetches: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.base_url = "http://issuer.invalid"

    # the documents

    def respond(self, path: str) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        if self.down:
            return 503, {"error": "temporarily_unavailable"}
        if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            tid = parts[0]
            return 200, {
                "issuer": f"{self.base_url}/{tid}/v2.0",
                "jwks_uri": f"{self.base_url}/{tid}/discovery/v2.0/keys",
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        if len(parts) == 4 and parts[1:] == ["discovery", "v2.0", "keys"]:
            with self._lock:
                self.fetches.append(parts[0])
                return 200, {"keys": [key.jwk() for key in self.keys]}
        return 404, {"error": "not_found"}

    def mock_transport(self) -> httpx.MockTransport:
        """The same documents without a socket (unit tests)."""

        def handle(request: httpx.Request) -> httpx.Response:
            status, body = self.respond(request.url.path)
            return httpx.Response(status, json=body)

        return httpx.MockTransport(handle)

    def rotate(self, *, keep_old: bool = False) -> SigningKey:
        key = SigningKey.new()
        with self._lock:
            self.keys = [*self.keys, key] if keep_old else [key]
        return key

    # tokens

    def claims(self, tid: str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": f"{self.base_url}/{tid}/v2.0",
            "aud": AUDIENCE,
            "tid": tid,
            "oid": str(uuid.uuid4()),
            "sub": "subject-" + uuid.uuid4().hex[:8],
            "iat": now,
            "nbf": now - 5,
            "exp": now + 3600,
            "roles": ["AIaaS.Submitter"],
            "ver": "2.0",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}  # None: leave the claim out

    def token(
        self,
        tid: str,
        *,
        key: SigningKey | None = None,
        kid: str | None = None,
        claims: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        key = key or self.keys[-1]
        payload = claims if claims is not None else self.claims(tid, **overrides)
        return jwt.encode(payload, key.private, algorithm="RS256", headers={"kid": kid or key.kid})

    # the server

    def start(self) -> OidcIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = issuer.respond(self.path.split("?", 1)[0])
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="oidc-issuer", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(signature)}"


def refused_tokens(issuer: OidcIssuer, tid: str, other_tid: str) -> dict[str, str]:
    """Every forged, broken or foreign token the contract says is a 401, for a tid that maps to a tenant
    (`other_tid` maps to another one)."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    key = issuer.keys[-1]
    claims = issuer.claims(tid, roles=["AIaaS.Admin"])
    now = int(time.time())
    public_pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    hs_signing_input = _unsigned(hs_header, claims).rsplit(".", 1)[0]
    hs_signature = hmac.new(public_pem, hs_signing_input.encode(), hashlib.sha256).digest()
    valid = issuer.token(tid, claims=claims)
    head, _, signature = valid.split(".")
    tampered_claims = {**claims, "tid": tid, "roles": ["AIaaS.Admin"], "oid": "someone-else"}
    tokens = {
        "alg-none": _unsigned({"alg": "none", "typ": "JWT", "kid": key.kid}, claims),
        "alg-none-signed": _unsigned({"alg": "none", "typ": "JWT", "kid": key.kid}, claims, b"x" * 32),
        "hs256-with-the-public-key": f"{hs_signing_input}.{_b64(hs_signature)}",
        "unknown-kid": issuer.token(tid, claims=claims, kid=uuid.uuid4().hex),
        "no-kid": jwt.encode(claims, key.private, algorithm="RS256"),
        "right-kid-wrong-key": issuer.token(tid, claims=claims, key=SigningKey(key.kid, SigningKey.new().private)),
        "rs512": jwt.encode(claims, key.private, algorithm="RS512", headers={"kid": key.kid}),
        "ps256": jwt.encode(claims, key.private, algorithm="PS256", headers={"kid": key.kid}),
        "expired": issuer.token(tid, claims={**claims, "exp": now - 3600, "nbf": now - 7200}),
        "nbf-in-the-future": issuer.token(tid, claims={**claims, "nbf": now + 3600}),
        "wrong-aud": issuer.token(tid, claims={**claims, "aud": "api://someone-else"}),
        "wrong-iss": issuer.token(tid, claims={**claims, "iss": f"https://login.example.com/{tid}/v2.0"}),
        "v1-iss": issuer.token(tid, claims={**claims, "iss": f"https://sts.windows.net/{tid}/"}),
        "iss-tid-mismatch": issuer.token(tid, claims={**claims, "iss": f"{issuer.base_url}/{other_tid}/v2.0"}),
        "tid-iss-mismatch": issuer.token(other_tid, claims={**claims, "tid": other_tid}),
        "tampered-payload": f"{head}.{_b64(json.dumps(tampered_claims).encode())}.{signature}",
        "tampered-signature": f"{head}.{valid.split('.')[1]}.{signature[:-4]}AAAA",
        "malformed-segments": "eyJhbGciOiJSUzI1NiJ9.not-base64!.x",
        "malformed-header": "eyJub3Rqc29u.e30.e30",
        "malformed-two-parts": "eyJhbGciOiJSUzI1NiJ9.e30",
        "not-a-credential": "Zm9vYmFy",
    }
    for claim in ("iss", "aud", "exp", "nbf", "tid"):
        tokens[f"missing-{claim}"] = issuer.token(tid, claims={k: v for k, v in claims.items() if k != claim})
    return tokens
