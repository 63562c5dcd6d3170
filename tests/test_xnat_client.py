"""XnatClient against throw-away loopback HTTP(S) servers: every failure aborts, fail-closed,
with a message naming method, path and status and no registered secret (docs/xnat-api.md §6,
§18)."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from xnat_fleet.xnat.client import (
    SCRUBBED,
    XnatAuthError,
    XnatClient,
    XnatConnectionError,
    XnatError,
    XnatHTTPError,
    XnatSetupPageError,
    seg,
)

PASSWORD = "client-test-pw-5e2a"
ALIAS_SECRET = "alias-secret-93c1d"
OTHER_PASSWORD = "other-pw-1f0b"

Reply = tuple[int, str, str]  # status, content type, body
Responder = Callable[["Hit"], Reply]


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    url: str
    hits: list[Hit] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    responder: Responder
    hits: list[Hit]
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        hit = Hit(self.command, self.path, dict(self.headers.items()), body)
        self.hits.append(hit)
        status, ctype, text = type(self).responder(hit)
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if hit.path == "/data/JSESSION" and status == 200:
            self.send_header("Set-Cookie", "JSESSIONID=ABC123; Path=/")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests print nothing."""


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[ThreadingHTTPServer] = []

    def start(responder: Responder, context: ssl.SSLContext | None = None) -> Server:
        hits: list[Hit] = []
        handler = type("H", (_Handler,), {"responder": staticmethod(responder), "hits": hits})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        if context is not None:
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        servers.append(httpd)
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}).start()
        scheme = "https" if context else "http"
        return Server(f"{scheme}://127.0.0.1:{httpd.server_address[1]}", hits)

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def client(url: str, **kwargs: Any) -> XnatClient:
    options: dict[str, Any] = {
        "use_session": False,
        "retries": 0,
        "timeout": 5.0,
        "backoff": 0.001,
        "secrets": [ALIAS_SECRET],
    }
    options.update(kwargs)
    return XnatClient(url, "svc", PASSWORD, **options)


def leaky(status: int, ctype: str = "text/plain") -> Responder:
    """A server whose error body echoes every secret (as a careless proxy or XNAT might)."""

    def respond(hit: Hit) -> Reply:
        return status, ctype, f"failed for svc:{PASSWORD} token {ALIAS_SECRET}\nline two\n"

    return respond


def assert_clean(message: str) -> None:
    assert PASSWORD not in message
    assert ALIAS_SECRET not in message


# -- failure kinds ---------------------------------------------------------------------------
@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 500])
def test_unaccepted_status_aborts_naming_method_path_status(
    serve: Callable[..., Server], status: int
) -> None:
    srv = serve(leaky(status))
    c = client(srv.url)
    expected = XnatAuthError if status == 401 else XnatHTTPError
    with pytest.raises(expected) as caught:
        c.request("PUT", "/xapi/users/alice", json={"password": PASSWORD})
    err = caught.value
    assert (err.method, err.path, err.status) == ("PUT", "/xapi/users/alice", status)
    message = str(err)
    assert f"PUT /xapi/users/alice answered HTTP {status}" in message
    assert SCRUBBED in message  # the echoed secrets were there, and were replaced
    assert "line two" in message  # the excerpt keeps the body's first lines
    assert_clean(message)
    assert len(srv.hits) == 1  # 4xx and 500 are never retried


@pytest.mark.parametrize("status", [404, 409])
def test_declared_status_is_accepted(serve: Callable[..., Server], status: int) -> None:
    srv = serve(leaky(status))
    response = client(srv.url).request("POST", "/xapi/users", json={}, ok=(201, status))
    assert response.status_code == status
    assert client(srv.url).get_json("/xapi/users/x", ok=(200, status)) is None


def test_registered_secrets_of_as_user_clients_are_scrubbed(serve: Callable[..., Server]) -> None:
    def respond(hit: Hit) -> Reply:
        return 400, "text/plain", f"{PASSWORD} {OTHER_PASSWORD} {ALIAS_SECRET}"

    srv = serve(respond)
    other = client(srv.url).as_user("admin", OTHER_PASSWORD, use_session=False)
    with pytest.raises(XnatHTTPError) as caught:
        other.get_json("/xapi/siteConfig")
    message = str(caught.value)
    assert_clean(message)
    assert OTHER_PASSWORD not in message
    assert message.count(SCRUBBED) == 3


def test_add_secret_is_scrubbed(serve: Callable[..., Server]) -> None:
    late = "late-secret-aa11"
    srv = serve(lambda hit: (500, "text/plain", f"boom {late}"))
    c = client(srv.url)
    c.add_secret(late)
    with pytest.raises(XnatHTTPError) as caught:
        c.get_text("/xapi/anything")
    assert late not in str(caught.value)
    assert "GET /xapi/anything answered HTTP 500" in str(caught.value)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried_then_fail(serve: Callable[..., Server], status: int) -> None:
    srv = serve(leaky(status))
    c = client(srv.url, retries=2)
    with pytest.raises(XnatHTTPError) as caught:
        c.get_json("/xapi/siteConfig")
    assert caught.value.status == status
    assert f"GET /xapi/siteConfig answered HTTP {status}" in str(caught.value)
    assert_clean(str(caught.value))
    assert len(srv.hits) == 3  # first try + 2 retries


def test_gateway_error_then_success(serve: Callable[..., Server]) -> None:
    replies = iter([(503, "text/plain", "starting"), (502, "text/plain", "proxy")])

    def respond(hit: Hit) -> Reply:
        return next(replies, (200, "application/json", '{"ok": true}'))

    srv = serve(respond)
    assert client(srv.url, retries=3).get_json("/xapi/siteConfig") == {"ok": True}
    assert len(srv.hits) == 3


def test_connection_refused_is_retried_then_fails() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port any more.
    c = client(f"http://127.0.0.1:{port}", retries=2)
    with pytest.raises(XnatConnectionError) as caught:
        c.request("POST", "/xapi/siteConfig", json={"siteId": "X"})
    message = str(caught.value)
    assert "POST /xapi/siteConfig" in message
    assert "after 3 attempts" in message
    assert_clean(message)


def test_html_setup_page_on_a_json_endpoint_is_a_failure(serve: Callable[..., Server]) -> None:
    page = "<html><body>XNAT initial setup</body></html>"
    srv = serve(lambda hit: (200, "text/html;charset=UTF-8", page))
    c = client(srv.url)
    with pytest.raises(XnatSetupPageError) as caught:
        c.get_json("/xapi/users")
    err = caught.value
    assert (err.method, err.path, err.status) == ("GET", "/xapi/users", 200)
    assert "setup or login page" in str(err)
    # A caller that does not expect JSON gets the text (e.g. the stand-in's "/" page).
    assert c.get_text("/") == page


def test_non_json_body_on_a_json_endpoint_is_a_failure(serve: Callable[..., Server]) -> None:
    srv = serve(lambda hit: (200, "application/json", "not json"))
    with pytest.raises(XnatHTTPError) as caught:
        client(srv.url).get_json("/xapi/siteConfig")
    assert "not JSON" in str(caught.value)


# -- authentication --------------------------------------------------------------------------
def test_session_login_then_cookie(serve: Callable[..., Server]) -> None:
    def respond(hit: Hit) -> Reply:
        if hit.path == "/data/JSESSION":
            return 200, "text/plain", "ABC123"
        if "JSESSIONID=ABC123" in hit.headers.get("Cookie", ""):
            return 200, "application/json", "[]"
        return 401, "text/plain", "no session"

    srv = serve(respond)
    c = client(srv.url, use_session=True)
    assert c.get_json("/xapi/users") == []
    assert c.get_json("/xapi/users") == []
    assert [(h.method, h.path) for h in srv.hits] == [
        ("POST", "/data/JSESSION"),
        ("GET", "/xapi/users"),
        ("GET", "/xapi/users"),
    ]
    assert "Authorization" in srv.hits[0].headers  # Basic only for the login
    assert "Authorization" not in srv.hits[1].headers


def test_expired_session_logs_in_again_once(serve: Callable[..., Server]) -> None:
    state = {"sessions": 0, "expired": True}

    def respond(hit: Hit) -> Reply:
        if hit.path == "/data/JSESSION":
            state["sessions"] += 1
            return 200, "text/plain", "ABC123"
        if state["expired"]:
            state["expired"] = False
            return 401, "text/plain", "session timed out"
        return 200, "application/json", '{"x": 1}'

    srv = serve(respond)
    c = client(srv.url, use_session=True)
    assert c.get_json("/xapi/siteConfig") == {"x": 1}
    assert state["sessions"] == 2
    assert len(srv.hits) == 4


def test_refused_login_aborts(serve: Callable[..., Server]) -> None:
    srv = serve(leaky(401))
    c = client(srv.url, use_session=True)
    with pytest.raises(XnatAuthError) as caught:
        c.get_json("/xapi/siteConfig")
    assert "POST /data/JSESSION answered HTTP 401" in str(caught.value)
    assert_clean(str(caught.value))
    assert len(srv.hits) == 1  # nothing else is tried without a session


def test_basic_auth_without_session(serve: Callable[..., Server]) -> None:
    srv = serve(lambda hit: (200, "application/json", "true"))
    assert client(srv.url).get_json("/xapi/siteConfig/initialized") is True
    assert [h.path for h in srv.hits] == ["/xapi/siteConfig/initialized"]
    assert srv.hits[0].headers["Authorization"].startswith("Basic ")


def test_bodies_and_headers(serve: Callable[..., Server]) -> None:
    srv = serve(lambda hit: (200, "text/plain", ""))
    c = client(srv.url)
    c.request("POST", "/a", json={"k": [1, True]}, content_type="text/plain")
    c.request("PUT", "/b", text='version "6.1"\n')
    c.request("GET", "/c", params={"format": "json"})
    assert srv.hits[0].headers["Content-Type"] == "text/plain"
    assert srv.hits[0].body == b'{"k": [1, true]}'
    assert srv.hits[1].headers["Content-Type"] == "text/plain"
    assert srv.hits[1].body == b'version "6.1"\n'
    assert srv.hits[2].path == "/c?format=json"


def test_seg_encodes_one_path_segment() -> None:
    assert seg("a/b c") == "a%2Fb%20c"
    assert seg(42) == "42"


# -- URL and TLS rules -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    ["http://xnat.example.org", "http://10.0.0.5:8080", "http://[2001:db8::1]/", "ftp://127.0.0.1"],
)
def test_plain_http_off_loopback_is_refused(url: str) -> None:
    with pytest.raises(XnatError) as caught:
        XnatClient(url, "svc", PASSWORD)
    assert url in str(caught.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1"])
def test_plain_http_on_loopback_is_allowed(url: str) -> None:
    assert XnatClient(url, "svc", PASSWORD).url == url


def test_https_anywhere_is_allowed_at_construction() -> None:
    assert XnatClient("https://xnat.example.org/", "svc", PASSWORD).url == (
        "https://xnat.example.org"
    )


def _ca(name: str, tmp: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = tmp / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def _server_context(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, tmp: Path
) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "server.pem", tmp / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


def _tls_server(serve: Callable[..., Server], tmp_path: Path) -> tuple[Server, Path, Path]:
    ca_key, ca_cert, ca_file = _ca("study-ca", tmp_path)
    _, _, wrong_ca = _ca("other-ca", tmp_path)
    context = _server_context(ca_key, ca_cert, tmp_path)
    srv = serve(lambda hit: (200, "application/json", "true"), context)
    assert srv.url.startswith("https://")
    return srv, ca_file, wrong_ca


def test_tls_verified_against_the_study_ca(
    serve: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client passes the CA per request; the environment's bundles are tested below.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    srv, ca_file, wrong_ca = _tls_server(serve, tmp_path)
    assert client(srv.url, ca_file=str(ca_file)).get_json("/xapi/siteConfig/initialized") is True

    refused = client(srv.url, ca_file=str(wrong_ca), retries=2)
    with pytest.raises(XnatConnectionError) as caught:
        refused.get_json("/xapi/siteConfig/initialized")
    message = str(caught.value)
    assert "TLS verification failed" in message
    assert "GET /xapi/siteConfig/initialized" in message
    assert_clean(message)
    assert len(srv.hits) == 1  # only the verified client's request got through

    # Default trust store (no study CA): refused as well.
    with pytest.raises(XnatConnectionError):
        client(srv.url).get_json("/xapi/siteConfig/initialized")
    assert len(srv.hits) == 1


def test_tls_study_ca_wins_over_ca_bundle_environment(
    serve: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, ca_file, _ = _tls_server(serve, tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "other-ca.pem"))
    assert client(srv.url, ca_file=str(ca_file)).get_json("/xapi/siteConfig/initialized") is True
