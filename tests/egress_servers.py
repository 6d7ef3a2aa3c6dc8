"""Loopback HTTP(S) servers that misbehave on purpose, and a connector stub, for the egress policy's tests."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpcore

Behaviour = Callable[[BaseHTTPRequestHandler], None]


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Behaviour:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return reply


def redirect(location: str) -> Behaviour:
    return answer(302, headers={"Location": location})


def echo_validation(handler: BaseHTTPRequestHandler) -> None:
    """A correct Event Grid handshake answer (and 200 to anything else)."""
    import json

    length = int(handler.headers.get("Content-Length", 0))
    body = json.loads(handler.rfile.read(length) or b"null")
    if isinstance(body, list) and body and "validationCode" in (body[0].get("data") or {}):
        answer(200, json.dumps({"validationResponse": body[0]["data"]["validationCode"]}).encode())(handler)
    else:
        answer(200)(handler)


class LoopbackServer:
    """Serves `behaviour` on a free loopback port (127.0.0.1 or ::1), optionally over TLS with a self-signed
    certificate; `hits` counts the requests that reached it. `stall` makes every request wait until stop."""

    def __init__(
        self,
        behaviour: Behaviour = echo_validation,
        *,
        host: str = "127.0.0.1",
        tls: bool = False,
        stall: bool = False,
        cert_files: tuple[str, str] | None = None,
    ) -> None:
        self.hits = 0
        self.host_headers: list[str] = []
        self.sni_names: list[str | None] = []
        self.released = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                server.hits += 1
                server.host_headers.append(self.headers.get("Host", ""))
                if stall:
                    server.released.wait(30)
                    return
                behaviour(self)

            do_GET = do_POST = do_OPTIONS = _handle

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

        self._httpd = Server((host, 0), Handler)
        self.port = self._httpd.server_address[1]
        self.host = host
        self.scheme = "https" if tls or cert_files else "http"
        if tls or cert_files:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*(cert_files or _self_signed_files()))
            context.sni_callback = lambda _sock, name, _ctx: self.sni_names.append(name)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/hook"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()


_CERT: tuple[str, str] | None = None


def _self_signed_files() -> tuple[str, str]:
    """A throwaway self-signed certificate for 127.0.0.1 and ::1 (made once per process)."""
    global _CERT
    if _CERT is None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egress-test")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
                ),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        directory = Path(tempfile.mkdtemp(prefix="egress-cert-"))
        (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        _CERT = (str(directory / "cert.pem"), str(directory / "key.pem"))
    return _CERT


def ca_and_certificate(dns_name: str) -> tuple[ssl.SSLContext, tuple[str, str]]:
    """A throwaway CA (as a client trust store) and a certificate it signed for `dns_name` (cert and key files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egress-test-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory = Path(tempfile.mkdtemp(prefix="egress-ca-"))
    (directory / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    trust = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return trust, (str(directory / "cert.pem"), str(directory / "key.pem"))


class RecordingConnector(httpcore.NetworkBackend):
    """A socket layer that opens no socket: it records where it was asked to connect and refuses."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        self.calls.append((host, port))
        raise httpcore.ConnectError("the test connector opens no socket")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise AssertionError("no unix sockets")

    def sleep(self, seconds: float) -> None:
        raise AssertionError("no sleeping")
