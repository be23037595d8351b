"""FakeKis over real HTTP on 127.0.0.1, with KIS's per-second limit per app key.

For tests whose clients are other processes (gunicorn workers): the same FakeKis answers
(tests/brokers/venues/kis.py), served by a threading HTTP server instead of `responses`. Over
`per_second` requests of one app key within any one second (a sliding window, stricter than a
per-calendar-second count), a request is refused the way KIS's gateway does: HTTP 500,
rt_cd "1", msg_cd EGW00201 (kis.md sections 10 and 11). Every refusal is recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.brokers.venues.kis import PATHS, FakeKis

ROUTES = {
    ("POST", PATHS["token"]): "_token",
    ("POST", PATHS["order"]): "order",
    ("POST", PATHS["cancel"]): "cancel",
    ("GET", PATHS["daily"]): "daily",
    ("GET", PATHS["balance"]): "balance",
    ("GET", PATHS["psbl"]): "psbl",
    ("GET", PATHS["price"]): "price",
}


@dataclass
class _Request:
    """The parts of a request FakeKis reads (the shape of requests' PreparedRequest)."""

    method: str
    url: str
    headers: dict
    body: bytes | None


class _CaseInsensitive(dict):
    def __init__(self, items):
        super().__init__((k.lower(), v) for k, v in items)

    def get(self, key, default=None):
        return super().get(key.lower(), default)

    def __getitem__(self, key):
        return super().__getitem__(key.lower())

    def __contains__(self, key):
        return super().__contains__(key.lower())


class RateLimitedKis:
    """Serves a FakeKis on http://127.0.0.1:<port>; refuses over `per_second` requests per app key."""

    def __init__(self, fake: FakeKis, *, per_second: int = 2):
        self.fake, self.per_second = fake, per_second
        self.refused: list[tuple[str, str]] = []  # (method, path) of every EGW00201 refusal
        self.accepted: list[tuple[float, str, str]] = []  # (monotonic arrival, method, path)
        self.violations: list[str] = []  # KIS rules the client broke (FakeKis's assertions)
        self._recent: dict[str, deque] = {}
        self._lock = threading.Lock()
        handler = self._handler_class()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> RateLimitedKis:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()

    def refused_orders(self) -> list[tuple[str, str]]:
        return [r for r in self.refused if r[1] == PATHS["order"]]

    def _over_limit(self, app_key: str, arrived: float) -> bool:
        recent = self._recent.setdefault(app_key, deque())
        while recent and arrived - recent[0] >= 1.0:
            recent.popleft()
        if len(recent) >= self.per_second:
            return True
        recent.append(arrived)
        return False

    def _answer(self, request: _Request) -> tuple[int, dict, str]:
        arrived = time.monotonic()
        path = urlsplit(request.url).path
        name = ROUTES.get((request.method, path))
        if name is None:
            return 404, {}, json.dumps({"rt_cd": "1", "msg_cd": "NOTFOUND", "msg1": "no such path"})
        app_key = request.headers.get("appkey") or ""
        if name == "_token":
            app_key = json.loads(request.body or b"{}").get("appkey", "")
        with self._lock:
            if self._over_limit(app_key, arrived):
                self.refused.append((request.method, path))
                return 500, {}, json.dumps({"rt_cd": "1", "msg_cd": "EGW00201",
                                            "msg1": "초당 거래건수를 초과하였습니다."}, ensure_ascii=False)
            self.accepted.append((arrived, request.method, path))
            if name == "_token":
                return self.fake._token(request)
            handler = getattr(self.fake, "_" + name)
            return self.fake._guarded(handler)(request)

    def _handler_class(self):
        venue = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                request = _Request(self.command, f"http://{self.headers.get('Host')}{self.path}",
                                   _CaseInsensitive(self.headers.items()), body)
                try:
                    status, headers, text = venue._answer(request)
                except AssertionError as exc:  # the client broke KIS's rules: answer as a 400 the test sees
                    venue.violations.append(str(exc))
                    status, headers, text = 400, {}, json.dumps({"rt_cd": "1", "msg_cd": "FAKE", "msg1": str(exc)})
                payload = text.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

            def log_message(self, *args):  # quiet
                pass

        return Handler
