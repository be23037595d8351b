"""brokers.http.never_sent: which failed requests provably never reached the broker.

The exceptions are the ones requests raises, produced for real against loopback servers (a closed
port, a silent listener, a fake proxy, a TLS server with a throwaway certificate) or built the way
requests builds them; `responses` stands in where the adapters' own tests use it. A "may have been
sent" case shows that the loopback server did receive the request. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.client import RemoteDisconnected

import pytest
import requests
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NameResolutionError, NewConnectionError
from urllib3.exceptions import ProxyError as Urllib3ProxyError

from brokers.http import never_sent
from tests.loopback import raised_by, reset

ORDER_PATH = "/v1/orders"
TIMEOUT = 2

Handler = Callable[[socket.socket], None]


# --- loopback servers ---------------------------------------------------------------------------------

@pytest.fixture
def session():
    """A plain Session that ignores *_PROXY variables: only the proxies a test names are used."""
    with requests.Session() as plain:
        plain.trust_env = False
        yield plain


@pytest.fixture
def serve():
    """serve(handler) -> port: a loopback server running handler(conn) for each connection."""
    servers: list[socket.socket] = []

    def start(handler: Handler) -> int:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(5)
        servers.append(server)

        def accept_loop() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return  # the test is over
                threading.Thread(target=_quietly, args=(handler, conn), daemon=True).start()

        threading.Thread(target=accept_loop, daemon=True).start()
        return server.getsockname()[1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there: a connect is refused
    return port


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """(cert path, key path): a throwaway self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture
def tls(certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def _quietly(handler: Handler, conn: socket.socket) -> None:
    try:
        handler(conn)
    except OSError:  # the client gave up first: what it raised is what the test looks at
        pass
    finally:
        conn.close()


def read_request(conn: socket.socket) -> bytes:
    """Everything up to the end of the head, plus whatever body came with it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


# --- never sent: no connection ------------------------------------------------------------------------

def test_refused_connection_was_never_sent(session, closed_port):
    exc = raised_by(lambda: session.post(f"http://127.0.0.1:{closed_port}{ORDER_PATH}", json={}, timeout=TIMEOUT))
    assert type(exc) is requests.ConnectionError
    assert never_sent(exc)


def test_connection_error_over_new_connection_error_was_never_sent():
    refused = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    assert never_sent(requests.ConnectionError(MaxRetryError(None, ORDER_PATH, refused)))


def test_dns_failure_was_never_sent():
    unresolved = NameResolutionError("api.broker.test", None, socket.gaierror(-2, "Name or service not known"))
    assert never_sent(requests.ConnectionError(MaxRetryError(None, ORDER_PATH, unresolved)))


def test_connect_timeout_was_never_sent():
    timed_out = ConnectTimeoutError(None, "Connection to api.broker.test timed out. (connect timeout=7.5)")
    assert never_sent(requests.ConnectTimeout(MaxRetryError(None, ORDER_PATH, timed_out)))


@responses.activate
def test_connect_timeout_mocked_by_responses_was_never_sent(session):
    responses.post(f"https://api.broker.test{ORDER_PATH}", body=requests.ConnectTimeout("connect timed out"))
    assert never_sent(raised_by(lambda: session.post(f"https://api.broker.test{ORDER_PATH}", timeout=TIMEOUT)))


# --- never sent: refused while the request was being prepared -------------------------------------------

@pytest.mark.parametrize(("url", "kind"), [
    ("127.0.0.1/v1/orders", requests.exceptions.MissingSchema),
    ("ftp://127.0.0.1/v1/orders", requests.exceptions.InvalidSchema),
    ("http://", requests.exceptions.InvalidURL),
], ids=["missing-schema", "invalid-schema", "invalid-url"])
def test_url_refused_before_connecting_was_never_sent(session, url, kind):
    exc = raised_by(lambda: session.post(url, json={}, timeout=TIMEOUT))
    assert type(exc) is kind
    assert never_sent(exc)


def test_header_refused_before_connecting_was_never_sent(session, closed_port):
    exc = raised_by(lambda: session.post(f"http://127.0.0.1:{closed_port}{ORDER_PATH}",
                                         headers={"Authorization": "Bearer a\nb"}, timeout=TIMEOUT))
    assert type(exc) is requests.exceptions.InvalidHeader
    assert never_sent(exc)


def test_body_that_cannot_be_encoded_was_never_sent(session, closed_port):
    exc = raised_by(lambda: session.post(f"http://127.0.0.1:{closed_port}{ORDER_PATH}", json={"qty": float("nan")},
                                         timeout=TIMEOUT))
    assert type(exc) is requests.exceptions.InvalidJSONError
    assert never_sent(exc)


# --- never sent: TLS handshake --------------------------------------------------------------------------

def test_tls_handshake_failure_was_never_sent(session, serve):
    received: list[bytes] = []

    def plain_http(conn):
        received.append(conn.recv(65536))  # a TLS ClientHello, answered in plain HTTP
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    port = serve(plain_http)
    exc = raised_by(lambda: session.post(f"https://127.0.0.1:{port}{ORDER_PATH}", json={}, timeout=TIMEOUT))
    assert type(exc) is requests.exceptions.SSLError
    assert ORDER_PATH.encode() not in b"".join(received)
    assert never_sent(exc)


def test_rejected_certificate_was_never_sent(session, serve, tls):
    port = serve(lambda conn: read_request(tls.wrap_socket(conn, server_side=True)))
    exc = raised_by(lambda: session.post(f"https://127.0.0.1:{port}{ORDER_PATH}", json={}, timeout=TIMEOUT))
    assert "CERTIFICATE_VERIFY_FAILED" in str(exc)
    assert never_sent(exc)


# --- never sent: proxies --------------------------------------------------------------------------------

def test_refused_proxy_was_never_sent(session, closed_port):
    proxy = f"http://127.0.0.1:{closed_port}"
    exc = raised_by(lambda: session.post(f"https://127.0.0.1:9{ORDER_PATH}", json={}, timeout=TIMEOUT,
                                         proxies={"https": proxy}))
    assert type(exc) is requests.exceptions.ProxyError
    assert never_sent(exc)


def test_tunnel_closed_after_connect_before_the_tls_handshake_was_never_sent(session, serve, certificate):
    def tunnel_then_close(conn):
        read_request(conn)  # CONNECT 127.0.0.1:9
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        conn.recv(65536)  # the TLS ClientHello; then closed, the request never came

    port = serve(tunnel_then_close)
    exc = raised_by(lambda: session.post(f"https://127.0.0.1:9{ORDER_PATH}", json={}, timeout=TIMEOUT,
                                         proxies={"https": f"http://127.0.0.1:{port}"}, verify=certificate[0]))
    assert type(exc) is requests.exceptions.SSLError
    assert never_sent(exc)


def test_reset_during_the_tls_handshake_was_never_sent(session, serve):
    def reset_after_client_hello(conn):
        conn.recv(65536)
        reset(conn)

    port = serve(reset_after_client_hello)
    exc = raised_by(lambda: session.post(f"https://127.0.0.1:{port}{ORDER_PATH}", json={}, timeout=TIMEOUT))
    assert type(exc) is requests.ConnectionError  # the same class as a reset after the request
    assert never_sent(exc)


def test_refused_connect_tunnel_was_never_sent(session, serve):
    def refuse_tunnel(conn):
        read_request(conn)  # CONNECT 127.0.0.1:9
        conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")

    port = serve(refuse_tunnel)
    exc = raised_by(lambda: session.post(f"https://127.0.0.1:9{ORDER_PATH}", json={}, timeout=TIMEOUT,
                                         proxies={"https": f"http://127.0.0.1:{port}"}))
    assert type(exc) is requests.exceptions.ProxyError
    assert never_sent(exc)


def test_proxy_error_over_a_refused_proxy_connection_was_never_sent():
    refused = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    wrapped = Urllib3ProxyError("Unable to connect to proxy", refused)
    assert never_sent(requests.exceptions.ProxyError(MaxRetryError(None, ORDER_PATH, wrapped)))


# --- may have been sent: the connection was made ----------------------------------------------------------

def test_read_timeout_may_have_been_sent(session):
    silent = socket.socket()  # accepts (the backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        exc = raised_by(lambda: session.post(f"http://127.0.0.1:{silent.getsockname()[1]}{ORDER_PATH}", json={},
                                             timeout=0.1))
    finally:
        silent.close()
    assert type(exc) is requests.exceptions.ReadTimeout
    assert not never_sent(exc)


def test_reset_after_the_request_arrived_may_have_been_sent(session, serve):
    received: list[bytes] = []

    def read_then_reset(conn):
        received.append(read_request(conn))
        reset(conn)

    port = serve(read_then_reset)
    exc = raised_by(lambda: session.post(f"http://127.0.0.1:{port}{ORDER_PATH}", json={}, timeout=TIMEOUT))
    assert received[0].startswith(b"POST " + ORDER_PATH.encode())
    assert not never_sent(exc)


def test_close_without_an_answer_may_have_been_sent(session, serve):
    received: list[bytes] = []
    port = serve(lambda conn: received.append(read_request(conn)))  # then closed, no answer
    exc = raised_by(lambda: session.post(f"http://127.0.0.1:{port}{ORDER_PATH}", json={}, timeout=TIMEOUT))
    assert type(exc) is requests.ConnectionError
    assert received[0].startswith(b"POST " + ORDER_PATH.encode())
    assert not never_sent(exc)


def test_broken_chunked_answer_may_have_been_sent(session, serve):
    def broken_chunks(conn):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{\"uuid\"\r\n")

    port = serve(broken_chunks)
    exc = raised_by(lambda: session.post(f"http://127.0.0.1:{port}{ORDER_PATH}", json={}, timeout=TIMEOUT))
    assert type(exc) is requests.exceptions.ChunkedEncodingError
    assert not never_sent(exc)


def test_answer_with_conflicting_content_lengths_may_have_been_sent(session, serve):
    def conflicting_lengths(conn):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 2, 3\r\n\r\n{}")

    port = serve(conflicting_lengths)
    exc = raised_by(lambda: session.post(f"http://127.0.0.1:{port}{ORDER_PATH}", json={}, timeout=TIMEOUT))
    assert type(exc) is requests.exceptions.InvalidHeader  # the same class as a header refused before sending
    assert not never_sent(exc)


@responses.activate
def test_unreadable_json_answer_may_have_been_sent(session):
    responses.post(f"https://api.broker.test{ORDER_PATH}", status=201, body="<html>maintenance</html>")
    reply = session.post(f"https://api.broker.test{ORDER_PATH}", timeout=TIMEOUT)
    exc = raised_by(reply.json)
    assert isinstance(exc, requests.exceptions.JSONDecodeError)
    assert not never_sent(exc)


@responses.activate
def test_read_timeout_mocked_by_responses_may_have_been_sent(session):
    responses.post(f"https://api.broker.test{ORDER_PATH}", body=requests.ReadTimeout("read timed out"))
    assert not never_sent(raised_by(lambda: session.post(f"https://api.broker.test{ORDER_PATH}", timeout=TIMEOUT)))


@responses.activate
def test_connection_error_that_does_not_say_why_may_have_been_sent(session):
    responses.post(f"https://api.broker.test{ORDER_PATH}", body=requests.ConnectionError("connection aborted"))
    assert not never_sent(raised_by(lambda: session.post(f"https://api.broker.test{ORDER_PATH}", timeout=TIMEOUT)))


# --- may have been sent: TLS after the handshake ----------------------------------------------------------

def test_tls_failure_after_the_request_arrived_may_have_been_sent(session, serve, tls, certificate):
    received: list[bytes] = []

    def corrupt_record_after_reading(conn):
        secure = tls.wrap_socket(conn, server_side=True)
        received.append(read_request(secure))
        raw = socket.fromfd(secure.fileno(), socket.AF_INET, socket.SOCK_STREAM)  # under the TLS layer
        raw.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # an application-data record that fails its MAC
        time.sleep(0.2)
        raw.close()
        secure.close()

    port = serve(corrupt_record_after_reading)
    exc = raised_by(lambda: session.post(f"https://127.0.0.1:{port}{ORDER_PATH}", json={}, timeout=TIMEOUT,
                                         verify=certificate[0]))
    assert type(exc) is requests.exceptions.SSLError  # the same class as a failed handshake
    assert received[0].startswith(b"POST " + ORDER_PATH.encode())
    assert not never_sent(exc)


@responses.activate
def test_ssl_error_that_does_not_show_where_it_was_raised_may_have_been_sent(session):
    responses.post(f"https://api.broker.test{ORDER_PATH}", body=requests.exceptions.SSLError("bad record mac"))
    assert not never_sent(raised_by(lambda: session.post(f"https://api.broker.test{ORDER_PATH}", timeout=TIMEOUT)))


# --- may have been sent: proxies ------------------------------------------------------------------------

def test_forward_proxy_closing_after_the_request_may_have_been_sent(session, serve):
    received: list[bytes] = []
    port = serve(lambda conn: received.append(read_request(conn)))  # then closed, no answer
    exc = raised_by(lambda: session.post(f"http://127.0.0.1:9{ORDER_PATH}", json={}, timeout=TIMEOUT,
                                         proxies={"http": f"http://127.0.0.1:{port}"}))
    assert type(exc) is requests.exceptions.ProxyError  # "Unable to connect to proxy", all the same
    assert received[0].startswith(b"POST http://127.0.0.1:9" + ORDER_PATH.encode())
    assert not never_sent(exc)


def test_tunnel_closing_after_the_request_may_have_been_sent(session, serve, tls, certificate):
    received: list[bytes] = []

    def tunnel_then_close_after_request(conn):
        read_request(conn)  # CONNECT 127.0.0.1:9
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        secure = tls.wrap_socket(conn, server_side=True)  # the broker's side of the tunnel
        received.append(read_request(secure))
        secure.close()  # only now: the client must not fail before the request is on record

    port = serve(tunnel_then_close_after_request)
    exc = raised_by(lambda: session.post(f"https://127.0.0.1:9{ORDER_PATH}", json={}, timeout=TIMEOUT,
                                         proxies={"https": f"http://127.0.0.1:{port}"}, verify=certificate[0]))
    assert type(exc) is requests.exceptions.ProxyError  # "Unable to connect to proxy", all the same
    assert received[0].startswith(b"POST " + ORDER_PATH.encode())
    assert not never_sent(exc)


def test_proxy_error_over_a_disconnect_may_have_been_sent():
    dropped = Urllib3ProxyError("Unable to connect to proxy",
                                RemoteDisconnected("Remote end closed connection without response"))
    assert not never_sent(requests.exceptions.ProxyError(MaxRetryError(None, ORDER_PATH, dropped)))

