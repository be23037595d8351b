"""Real transport failures on 127.0.0.1, for tests that need what `requests` actually raises, and a
real loopback HTTP server for stateful broker fakes."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import urlsplit

import requests


def raised_by(send: Callable[[], object]) -> requests.RequestException:
    """The exception `send` raised; fails the test if the request went through."""
    try:
        send()
    except requests.RequestException as exc:
        return exc
    raise AssertionError("the request did not fail")


def reset(conn: socket.socket) -> None:
    """Close with a TCP reset (RST) instead of an orderly FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


# --- a real HTTP server for stateful broker fakes -------------------------------------------------

class DropConnection(Exception):  # noqa: N818  (a signal to the server, not an error)
    """Raised by a callback: reset the connection instead of answering (the reply is lost)."""


class LoopbackHTTP:
    """A real HTTP server on 127.0.0.1, in a thread, serving `responses`-style callbacks.

    A fake broker installs its routes on it as on a RequestsMock: add_callback(method, url,
    callback), where callback(request) gets .method, .url, .headers and .body (bytes) and returns
    (status, headers, body). A callback that raises DropConnection has its connection reset after
    it acted, so the client meets the very error `requests` raises for a lost reply. Requests are
    handled one at a time (the fakes are not thread-safe). Use as a context manager; `url` is the
    base URL to point the adapter at.
    """

    def __init__(self):
        self.routes: list[tuple[str, str, Callable]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _dispatch(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                path = urlsplit(self.path).path
                callback = next((cb for method, route, cb in outer.routes
                                 if method == self.command and route == path), None)
                if callback is None:
                    self.send_error(404)
                    return
                request = SimpleNamespace(method=self.command, url=outer.url + self.path, headers=self.headers,
                                          body=body)
                try:
                    with outer._lock:
                        status, headers, text = callback(request)
                except DropConnection:
                    self.close_connection = True
                    reset(self.connection)
                    return
                payload = text.encode("utf-8") if isinstance(text, str) else (text or b"")
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _dispatch  # noqa: N815

            def finish(self):
                try:
                    super().finish()
                except OSError:
                    pass  # the connection was reset on purpose

            def log_message(self, format, *args):  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def add_callback(self, method: str, url: str, callback: Callable, **kwargs) -> None:
        self.routes.append((method, urlsplit(url).path, callback))

    def __enter__(self) -> LoopbackHTTP:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
