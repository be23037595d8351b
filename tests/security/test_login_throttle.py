"""Failed logins are throttled per login name and per client address (issue 13, item 5).

100 wrong passwords for one user used to be 100 x 401, the right one still worked, and every one
of them hashed a password. Now, with the defaults, a login name gets 5 failed logins a minute and
a client address 100 (django-ratelimit fixed windows on the shared cache); past either the answer
is 429 RATE_LIMIT_EXCEEDED with Retry-After, before any password is hashed. A login that succeeds
and a refresh of a valid token are not counted. Exactness across gunicorn workers:
tests/multiprocess/test_login_throttle_gunicorn.py.

Time is frozen in each test so that no fixed window can turn in the middle of one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth.hashers import MD5PasswordHasher
from rest_framework.test import APIClient

from tests.equity.helpers import assert_error
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "pass-1234-word"  # tests.factories.UserFactory's
NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


class CountingHasher(MD5PasswordHasher):
    """The test hasher, counting every password it hashes or checks (an unknown login hashes a dummy)."""

    calls = 0

    def salt(self):  # make_password: a new hash (set_password, the dummy hash of an unknown login)
        type(self).calls += 1
        return super().salt()

    def verify(self, password, encoded):  # check_password (it encodes inside: counted once here)
        type(self).calls += 1
        return super().verify(password, encoded)


@pytest.fixture(autouse=True)
def counted_hashing(settings):
    settings.PASSWORD_HASHERS = ["tests.security.test_login_throttle.CountingHasher"]
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def hashed(user):
    """How many passwords were hashed or checked since the test's users were made."""
    UserFactory(username="carol")
    CountingHasher.calls = 0
    return lambda: CountingHasher.calls


def log_in(username, password, *, address="192.0.2.10", **headers):
    return APIClient().post("/api/auth/token", {"username": username, "password": password}, format="json",
                            REMOTE_ADDR=address, **headers)


def assert_throttled(resp, whose: str):
    body = assert_error(resp, 429, "RATE_LIMIT_EXCEEDED")
    assert whose in body["detail"], body
    assert 1 <= int(resp["Retry-After"]) <= 60
    assert "access" not in body and "refresh" not in body


def test_five_wrong_passwords_then_429_for_any_password_with_no_password_hashed(user, hashed):
    for _ in range(5):
        assert_error(log_in("alice", "wrong"), 401, "NOT_AUTHENTICATED")
    assert hashed() == 5
    for password in ("wrong", PASSWORD):  # the right one too: the name is locked for the window
        assert_throttled(log_in("alice", password), "for this login")
    assert hashed() == 5
    assert log_in("carol", PASSWORD).status_code == 200  # another name from the same address


def test_the_lock_ends_when_the_window_does_and_retry_after_says_when(user, counted_hashing):
    for _ in range(5):
        log_in("alice", "wrong")
    retry = int(log_in("alice", PASSWORD)["Retry-After"])
    counted_hashing.shift(timedelta(seconds=retry - 1))
    assert log_in("alice", PASSWORD).status_code == 429
    counted_hashing.shift(timedelta(seconds=1))
    assert log_in("alice", PASSWORD).status_code == 200


def test_one_budget_per_login_however_its_case_or_unicode_form_is_written(user, hashed):
    for name in ("alice", "ALICE", "Alice", "ａｌｉｃｅ", " alice "):
        assert log_in(name, "wrong").status_code == 401
    assert_throttled(log_in("alice", PASSWORD), "for this login")


def test_successful_logins_are_not_counted(user):
    for _ in range(20):
        assert log_in("alice", PASSWORD).status_code == 200
    for _ in range(5):
        assert log_in("alice", "wrong").status_code == 401
    assert_throttled(log_in("alice", "wrong"), "for this login")


def test_refreshes_of_valid_tokens_are_not_counted_and_work_while_the_login_is_locked(user):
    pair = log_in("alice", PASSWORD).json()
    for _ in range(30):
        assert APIClient().post("/api/auth/token/refresh", {"refresh": pair["refresh"]}, format="json",
                                REMOTE_ADDR="192.0.2.10").status_code == 200
    for _ in range(5):
        assert log_in("alice", "wrong").status_code == 401
    assert_throttled(log_in("alice", PASSWORD), "for this login")
    refreshed = APIClient().post("/api/auth/token/refresh", {"refresh": pair["refresh"]}, format="json")
    assert refreshed.status_code == 200 and refreshed.json()["access"]


def test_a_malformed_login_body_is_400_and_not_counted(user, hashed):
    for _ in range(10):
        resp = APIClient().post("/api/auth/token", {"username": "alice"}, format="json")
        assert_error(resp, 400, "VALIDATION_ERROR")
    assert hashed() == 0
    assert log_in("alice", PASSWORD).status_code == 200


def test_an_address_gets_its_own_generous_budget_across_login_names(user, hashed, equity_orders):
    equity_orders.RATE_LIMIT_LOGIN_FAILURES_PER_ADDRESS = "10/m"
    for n in range(10):
        assert log_in(f"guess{n}", "wrong", address="198.51.100.7").status_code == 401
    assert hashed() == 10
    assert_throttled(log_in("alice", PASSWORD, address="198.51.100.7"), "from this address")
    assert_throttled(log_in("new-name", "wrong", address="198.51.100.7"), "from this address")
    assert hashed() == 10
    assert log_in("alice", PASSWORD, address="198.51.100.8").status_code == 200


def test_a_client_supplied_x_forwarded_for_does_not_buy_a_fresh_address_budget(user, equity_orders):
    equity_orders.RATE_LIMIT_LOGIN_FAILURES_PER_ADDRESS = "10/m"
    for n in range(10):
        log_in(f"guess{n}", "wrong", address="198.51.100.7", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
    assert_throttled(log_in("alice", PASSWORD, address="198.51.100.7", HTTP_X_FORWARDED_FOR="203.0.113.99"),
                     "from this address")


def test_an_ipv6_client_is_counted_by_its_64_network(user, equity_orders):
    equity_orders.RATE_LIMIT_LOGIN_FAILURES_PER_ADDRESS = "3/m"
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"):
        assert log_in(f"guess-{host}", "wrong", address=host).status_code == 401
    assert_throttled(log_in("alice", PASSWORD, address="2001:db8:1:2::99"), "from this address")
    assert log_in("alice", PASSWORD, address="2001:db8:1:3::1").status_code == 200


def test_a_refused_attempt_costs_the_address_nothing(user, equity_orders):
    """An attacker hammering a locked name gets 429s, not the office's address budget."""
    equity_orders.RATE_LIMIT_LOGIN_FAILURES_PER_ADDRESS = "8/m"
    for _ in range(5):
        log_in("alice", "wrong")
    for _ in range(20):
        assert log_in("alice", "wrong").status_code == 429
    for n in range(3):  # 5 failures counted for the address so far: 3 more fit in 8
        assert log_in(f"colleague{n}", "wrong").status_code == 401
    assert_throttled(log_in("colleague9", "wrong"), "from this address")


def test_with_the_shared_cache_down_login_is_503_and_no_password_is_hashed(user, hashed, settings):
    settings.CACHES = {**settings.CACHES, "default": {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5}}}
    for password in ("wrong", PASSWORD):
        resp = log_in("alice", password)
        body = assert_error(resp, 503, "SERVICE_UNAVAILABLE")
        assert "failed logins cannot be counted" in body["detail"]
    assert hashed() == 0


def test_requests_without_a_peer_address_share_one_address_budget(user, equity_orders):
    """A Unix-socket deployment has no REMOTE_ADDR: those requests are limited together, never not at all."""
    equity_orders.RATE_LIMIT_LOGIN_FAILURES_PER_ADDRESS = "3/m"
    for n in range(3):
        assert log_in(f"guess{n}", "wrong", address="").status_code == 401
    assert_throttled(log_in("alice", PASSWORD, address=""), "from this address")


def test_behind_a_trusted_proxy_each_client_gets_its_own_address_budget(user, equity_orders):
    """With TRUSTED_PROXY_COUNT = 1 the proxy's X-Forwarded-For names the client: the office behind
    the proxy is not locked out by one guesser elsewhere, and the guesser cannot rotate the header
    past the proxy's own entry."""
    equity_orders.TRUSTED_PROXY_COUNT = 1
    equity_orders.RATE_LIMIT_LOGIN_FAILURES_PER_ADDRESS = "3/m"
    for n in range(3):  # the client writes a fresh left-most entry each time; the proxy appends the real one
        assert log_in(f"guess{n}", "wrong", address="10.0.0.2",
                      HTTP_X_FORWARDED_FOR=f"203.0.113.{n}, 198.51.100.7").status_code == 401
    assert_throttled(log_in("alice", PASSWORD, address="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.7"),
                     "from this address")
    assert log_in("alice", PASSWORD, address="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.8").status_code == 200
