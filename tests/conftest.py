"""Shared fixtures. The network is closed to tests: broker HTTP is mocked with `responses`."""

from __future__ import annotations

import socket

import pytest

# The host project runs only in its own venv and processes (tests/test_host_project.py): its
# `config` package must never be imported beside the demo site's.
collect_ignore = ["host_project"]


class EquityOrdersOverride:
    """One test's EQUITY_ORDERS keys: `equity_orders.RATE_LIMIT_ORDERS = "2/m"`; reads give the apps' value.

    Each assignment replaces settings.EQUITY_ORDERS through pytest-django's `settings` fixture, so
    brokers.conf re-reads it at once and the test's values are undone when it ends.
    """

    def __init__(self, settings):
        object.__setattr__(self, "_settings", settings)

    def __getattr__(self, name):
        from brokers.conf import conf

        return getattr(conf, name)

    def __setattr__(self, name, value):
        from brokers.conf import KEYS

        if name not in KEYS:
            raise AttributeError(f"EQUITY_ORDERS has no key {name!r}")
        self._settings.EQUITY_ORDERS = {**self._settings.EQUITY_ORDERS, name: value}


@pytest.fixture
def equity_orders(settings):
    return EquityOrdersOverride(settings)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """The production hasher costs ~0.5 s a password by design; tests are not what it protects."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Any real outbound connection (not loopback) fails the test loudly."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")):
            return real_connect(self, address)
        raise RuntimeError(f"tests must not reach the network (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", guarded)


def _clear_all_caches():
    from django.core.cache import caches

    for alias in caches:
        try:
            caches[alias].clear()
        except Exception:  # a test may point an alias at a dead server on purpose
            pass


@pytest.fixture(autouse=True, scope="session")
def _allow_flushing_the_audit_table():
    """A transactional test ends with a flush (TRUNCATE of every table); the audit table's trigger
    refuses TRUNCATE, rightly, and no session setting switches it off (audit migration 0002).

    The test database is owned by the role the tests connect as, and only a table's owner may
    `ALTER TABLE … DISABLE TRIGGER`: the flush does that inside its own transaction (DDL is
    transactional in PostgreSQL, so a failed flush leaves the trigger on). A deployed service
    connects as a role that owns nothing (README "Least-privilege deployment") and cannot do this,
    which tests/audit/test_least_privilege.py shows.
    """
    from django.db import transaction
    from django.db.backends.postgresql.operations import DatabaseOperations

    original = DatabaseOperations.execute_sql_flush
    trigger = "broker_order_events_append_only"

    def flush_as_the_table_owner(self, sql_list):
        if not any("broker_order_events" in sql for sql in sql_list):
            return original(self, sql_list)
        with transaction.atomic(using=self.connection.alias), self.connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE broker_order_events DISABLE TRIGGER {trigger}")
            original(self, sql_list)
            cursor.execute(f"ALTER TABLE broker_order_events ENABLE ALWAYS TRIGGER {trigger}")

    DatabaseOperations.execute_sql_flush = flush_as_the_table_owner
    yield
    DatabaseOperations.execute_sql_flush = original


@pytest.fixture(autouse=True)
def _clear_cache():
    _clear_all_caches()
    yield
    _clear_all_caches()


class VirtualPacingClock:
    """brokers.pacing's clock and sleep for tests: a wait moves the clock instead of the test."""

    def __init__(self):
        import time

        self._time, self.offset, self.waits = time.time, 0.0, []

    def now(self) -> float:
        return self._time() + self.offset

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.offset += seconds


@pytest.fixture(autouse=True)
def pacing_clock(monkeypatch) -> VirtualPacingClock:
    """Broker request pacing keeps its budget (slots are claimed in the cache) but never sleeps."""
    from brokers import pacing

    clock = VirtualPacingClock()
    monkeypatch.setattr(pacing, "_clock", clock.now)
    monkeypatch.setattr(pacing, "_sleep", clock.sleep)
    pacing._local.clear()
    return clock


@pytest.fixture
def make_client():
    """An APIClient authenticated with a real JWT access token for the given user."""
    from rest_framework.test import APIClient
    from rest_framework_simplejwt.tokens import RefreshToken

    def make(user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
        client.user = user
        return client

    return make


@pytest.fixture
def user(db):
    from tests.factories import UserFactory

    return UserFactory(username="alice")


@pytest.fixture
def other_user(db):
    from tests.factories import UserFactory

    return UserFactory(username="bob")


@pytest.fixture
def api_client(make_client, user):
    return make_client(user)


@pytest.fixture
def quotes(db):
    from brokers.sim_exchange import set_quote

    for asset_class, symbol, price in [("crypto", "BTC/USD", "50000"), ("crypto", "ETH/USD", "3000"),
                                       ("us_equity", "AAPL", "188.20"), ("kr_equity", "005930", "70000")]:
        set_quote(asset_class, symbol, price)


@pytest.fixture
def sim_crypto(user, quotes):
    from tests.factories import BrokerAccountFactory

    return BrokerAccountFactory(user=user, asset_class="crypto")
