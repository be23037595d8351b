"""Faults in front of the real adapters' wire fakes (FakeAlpaca, FakeKis, FakeUpbit).

A FaultGate stands between `responses` and a fake broker: the fake installs its routes through
the gate, so every request meets the gate first. An armed fault either strikes before the broker
sees the request (nothing reached it) or after the broker acted on it (its answer is lost or
spoiled). The transport failures are the very exceptions `requests` raises, captured once from
loopback sockets: a refused connect, a read timeout, a reset after the request was sent.
"""

from __future__ import annotations

import copy
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import urlencode, urlsplit

import pytest
import requests
import responses
import time_machine

from audit.models import BrokerOrderEvent
from brokers.adapters import kis, upbit
from tests.brokers.venues import alpaca as alpaca_venue
from tests.brokers.venues import kis as kis_venue
from tests.brokers.venues import upbit as upbit_venue
from tests.equity.test_gates import set_flag
from tests.factories import BrokerAccountFactory, TraderProfileFactory
from tests.loopback import raised_by, reset
from tests.multiprocess.conftest import gunicorn_server  # noqa: F401  (a fixture, for test_own_dependencies)

KRX_OPEN = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Seoul; crypto never closes


# --- real transport failures ----------------------------------------------------------------------

_CAPTURED: dict[str, requests.RequestException] = {}


def _loopback_server(serve: Callable[[socket.socket], None] | None) -> tuple[socket.socket, int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    if serve is not None:
        threading.Thread(target=lambda: serve(server), daemon=True).start()
    return server, server.getsockname()[1]


def _capture_transport_failures() -> dict[str, requests.RequestException]:
    """What requests raises for each failure, produced for real on loopback (no mock is active yet)."""
    closed, port = _loopback_server(None)
    closed.close()  # nothing listens there any more: the connect is refused
    refused = raised_by(lambda: requests.post(f"http://127.0.0.1:{port}/order", json={}, timeout=1))

    silent, port = _loopback_server(None)  # accepts (backlog) and never answers
    timeout = raised_by(lambda: requests.post(f"http://127.0.0.1:{port}/order", json={}, timeout=0.05))
    silent.close()

    def reset_after_reading(server: socket.socket) -> None:
        conn, _ = server.accept()
        time.sleep(0.05)
        conn.recv(65536)  # the request arrived...
        reset(conn)  # ...and the connection is reset instead of answered

    resetting, port = _loopback_server(reset_after_reading)
    reset_after_sending = raised_by(lambda: requests.post(f"http://127.0.0.1:{port}/order", json={}, timeout=2))
    resetting.close()
    return {"connect_refused": refused, "read_timeout": timeout, "connection_reset": reset_after_sending}


@pytest.fixture(scope="session", autouse=True)
def _transport_failures():
    if not _CAPTURED:
        _CAPTURED.update(_capture_transport_failures())
    assert isinstance(_CAPTURED["read_timeout"], requests.exceptions.ReadTimeout)
    assert "Connection reset" in repr(_CAPTURED["connection_reset"].args[0]), _CAPTURED["connection_reset"]


def transport_failure(kind: str) -> requests.RequestException:
    return copy.copy(_CAPTURED[kind])  # a fresh instance: raising one twice would chain tracebacks


# --- faults -------------------------------------------------------------------------------------------

Reply = tuple[int, dict, str]
Handler = Callable[[object], Reply]


def _connect_refused(request, broker: Handler) -> Reply:
    raise transport_failure("connect_refused")


def _read_timeout(request, broker: Handler) -> Reply:
    broker(request)  # the broker acted; its answer never arrives
    raise transport_failure("read_timeout")


def _connection_reset(request, broker: Handler) -> Reply:
    raise transport_failure("connection_reset")  # sent, then reset before the broker acted


def _server_error(request, broker: Handler) -> Reply:
    broker(request)  # the broker acted, then failed to answer
    return 500, {"Content-Type": "application/json"}, '{"message": "internal server error"}'


def _html_body(request, broker: Handler) -> Reply:
    return 200, {"Content-Type": "text/html; charset=utf-8"}, \
        "<!DOCTYPE html><html><body><h1>Service maintenance</h1></body></html>"


def _truncated_json(request, broker: Handler) -> Reply:
    status, headers, body = broker(request)  # the broker acted; its answer is cut short
    text = body.decode() if isinstance(body, bytes) else (body or "")
    return (200 if status == 204 else status), headers, (text[: len(text) // 2] if text else '{"')


@dataclass(frozen=True)
class Fault:
    name: str
    reaches_broker: bool  # the broker acted on the request before the fault struck
    strike: Callable[[object, Handler], Reply] = field(repr=False)

    def __str__(self) -> str:
        return self.name


FAULTS = {f.name: f for f in (
    Fault("connect_refused", False, _connect_refused),
    Fault("read_timeout", True, _read_timeout),
    Fault("connection_reset", False, _connection_reset),
    Fault("server_error", True, _server_error),
    Fault("html_body", False, _html_body),
    Fault("truncated_json", True, _truncated_json),
)}


@dataclass
class _Armed:
    fault: Fault
    method: str
    path: re.Pattern
    times: int | None  # None: every matching request, for as long as the test runs


class FaultGate:
    """What a fake installs its routes on, in place of the RequestsMock: faults strike first."""

    def __init__(self, mock: responses.RequestsMock):
        self.mock = mock
        self._armed: list[_Armed] = []
        self.reached: list[tuple[str, str]] = []  # (method, path) of every request the broker handled

    def add_callback(self, method, url, callback, **kwargs) -> None:
        self.mock.add_callback(method, url, callback=self._guarded(callback), **kwargs)

    def arm(self, fault: Fault, method: str, path: str, *, times: int | None = 1) -> None:
        self._armed.append(_Armed(fault, method, re.compile(path), times))

    def disarm(self) -> None:
        """The broker is healthy again."""
        self._armed.clear()

    def reached_count(self, method: str, path: str) -> int:
        pattern = re.compile(path)
        return sum(1 for m, p in self.reached if m == method and pattern.fullmatch(p))

    def _guarded(self, handler: Handler) -> Handler:
        def broker(request) -> Reply:
            self.reached.append((request.method, urlsplit(request.url).path))
            return handler(request)

        def callback(request) -> Reply:
            path = urlsplit(request.url).path
            armed = next((a for a in self._armed if a.method == request.method and a.path.fullmatch(path)
                          and (a.times is None or a.times > 0)), None)
            if armed is None:
                return broker(request)
            if armed.times is not None:
                armed.times -= 1
            return armed.fault.strike(request, broker)

        return callback


# --- one user's connection to each real broker, behind a gate ---------------------------------------

@dataclass
class BrokerRig:
    name: str
    asset_class: str
    live: bool
    symbol: str
    resting: dict  # a limit buy far from the market: it rests, open, at the broker
    routes: dict[str, tuple[str, str]]  # our route -> (method, path) of the broker call it makes
    gate: FaultGate
    broker_orders: Callable[[], int]  # how many orders the broker holds
    fake: object = None  # the fake broker itself, for a change made at the broker (a fill, a cancel)

    def order(self, **fields) -> dict:
        return {**self.resting, **fields}

    def query(self) -> dict:
        return {"asset_class": self.asset_class, "live_mode": str(self.live).lower(), "symbol": self.symbol}

    def query_string(self) -> str:
        return urlencode(self.query())

    def arm(self, fault: Fault, route: str, *, times: int | None = 1) -> None:
        self.gate.arm(fault, *self.routes[route], times=times)

    def order_posts_received(self) -> int:
        return self.gate.reached_count(*self.routes["place"])


def _alpaca(*, user, mock, equity_orders) -> BrokerRig:
    equity_orders.ALPACA_PAPER_URL = alpaca_venue.PAPER_URL
    equity_orders.ALPACA_LIVE_URL = alpaca_venue.LIVE_URL
    equity_orders.ALPACA_DATA_URL = alpaca_venue.DATA_URL
    fake = alpaca_venue.FakeAlpaca(prices={"BTC/USD": Decimal("50000")})
    gate = FaultGate(mock)
    fake.install(gate, base_url=alpaca_venue.PAPER_URL)
    BrokerAccountFactory(user=user, asset_class="crypto", exchange="alpaca", environment="paper",
                         credentials={"api_key": alpaca_venue.API_KEY, "secret_key": alpaca_venue.SECRET_KEY})
    return BrokerRig(
        name="alpaca", asset_class="crypto", live=False, symbol="BTC/USD",
        resting={"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01, "order_type": "limit",
                 "limit_price": 40000},
        routes={"place": ("POST", "/v2/orders"), "lookup": ("GET", "/v2/orders:by_client_order_id"),
                "get": ("GET", "/v2/orders/[^/]+"), "list": ("GET", "/v2/orders"),
                "cancel": ("DELETE", "/v2/orders/[^/]+"), "positions": ("GET", "/v2/positions"),
                "account": ("GET", "/v2/account")},
        gate=gate, broker_orders=lambda: len(fake.orders), fake=fake)


def _kis(*, user, mock, equity_orders) -> BrokerRig:
    fake = kis_venue.FakeKis(prices={"005930": Decimal("70000")})
    gate = FaultGate(mock)
    fake.install(gate)
    BrokerAccountFactory(user=user, asset_class="kr_equity", exchange="kis", environment="paper",
                         credentials=kis_venue.credentials())
    return BrokerRig(
        name="kis", asset_class="kr_equity", live=False, symbol="005930",
        resting={"asset_class": "kr_equity", "symbol": "005930", "side": "buy", "qty": 10, "order_type": "limit",
                 "limit_price": 60000},
        routes={"place": ("POST", kis_venue.PATHS["order"]), "lookup": ("GET", kis_venue.PATHS["daily"]),
                "get": ("GET", kis_venue.PATHS["daily"]), "list": ("GET", kis_venue.PATHS["daily"]),
                "cancel": ("POST", kis_venue.PATHS["cancel"]), "positions": ("GET", kis_venue.PATHS["balance"]),
                "account": ("GET", kis_venue.PATHS["balance"])},
        gate=gate, broker_orders=lambda: sum(1 for row in fake.rows if not row["orgn_odno"]), fake=fake)


def _upbit(*, user, mock, equity_orders) -> BrokerRig:
    fake = upbit_venue.FakeUpbit(equity_orders.UPBIT_URL, prices={"KRW-BTC": Decimal("100000000")},
                                 krw=Decimal("10000000"))
    gate = FaultGate(mock)
    fake.install(gate)
    BrokerAccountFactory(user=user, asset_class="crypto", exchange="upbit", environment="live",
                         credentials={"access_key": upbit_venue.ACCESS_KEY, "secret_key": upbit_venue.SECRET_KEY})
    set_flag("FEATURE_EQUITY_LIVE", True)  # Upbit is live-only
    TraderProfileFactory(user=user, live_enabled=True)
    return BrokerRig(
        name="upbit", asset_class="crypto", live=True, symbol="KRW-BTC",
        resting={"asset_class": "crypto", "symbol": "KRW-BTC", "side": "buy", "qty": 0.001, "order_type": "limit",
                 "limit_price": 90000000, "live_mode": True},
        routes={"place": ("POST", "/v1/orders"), "lookup": ("GET", "/v1/order"), "get": ("GET", "/v1/order"),
                "list": ("GET", "/v1/orders/(open|closed)"), "cancel": ("DELETE", "/v1/order"),
                "positions": ("GET", "/v1/accounts"), "account": ("GET", "/v1/accounts")},
        gate=gate, broker_orders=lambda: len(fake.orders), fake=fake)


RIGS = {"alpaca": _alpaca, "kis": _kis, "upbit": _upbit}
ADAPTERS = list(RIGS)


@pytest.fixture
def trading_hours():
    """Inside the KRX session (kr_equity placements are subject to market hours), the clock running."""
    with time_machine.travel(KRX_OPEN, tick=True) as traveller:
        yield traveller


@pytest.fixture
def broker(request, db, user, settings, monkeypatch, trading_hours, equity_orders) -> BrokerRig:
    """The user's connection to the real adapter named by the parameter, its fake behind a FaultGate."""
    monkeypatch.setattr(kis, "_pause", lambda seconds: None)  # retry pacing, not behaviour
    monkeypatch.setattr(upbit, "READ_RETRY_DELAYS", (0, 0))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield RIGS[request.param](user=user, mock=mock, equity_orders=equity_orders)


@pytest.fixture
def trader(make_client, user, trading_hours):
    """The user's API client, with a real JWT issued inside the frozen session."""
    return make_client(user)


def events_of(client_order_id: str) -> list[tuple[str, str]]:
    """(event_type, error_code) of an order's audit rows, oldest first."""
    return list(BrokerOrderEvent.objects.filter(client_order_id=client_order_id).order_by("id")
                .values_list("event_type", "error_code"))


# --- a Redis of the test's own, to stop and start (never the machine's shared one) -------------------

class RedisServer:
    """A throwaway `redis-server` on a free loopback port: no persistence, killed and restarted at will."""

    def __init__(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@pytest.fixture
def own_redis():
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server on PATH")
    server = RedisServer()
    server.start()
    yield server
    server.kill()
