"""The failed-login throttle is exact across worker processes (PostgreSQL + Redis + gunicorn -w 4).

Each attempt takes its slot in Redis (django-ratelimit's atomic add/incr) before a password is
hashed, so concurrent attempts spread over four workers cannot all slip under the limit between
a check and a count. The burst starts right after its key's window opens (pitfalls.md).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from brokers.login_throttle import login_name_key
from tests.factories import UserFactory
from tests.multiprocess.test_rate_limit_gunicorn import _seconds_left_in_window

pytestmark = pytest.mark.multiprocess

PASSWORD = "pass-1234-word"


@pytest.fixture
def real_hashing(settings):
    """The server's own hasher (the suite's fast test hasher is not in the server's settings)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]


def a_login_name_in_a_fresh_window(prefix: str, need: int = 25) -> str:
    """A login name whose budget's window has at least `need` seconds to run: no waiting."""
    return next(f"{prefix}{n}" for n in range(1000)
                if _seconds_left_in_window(login_name_key(f"{prefix}{n}")) >= need)


def burst(base: str, logins: list[tuple[str, str]]) -> list[requests.Response]:
    def attempt(login):
        return requests.post(base + "/api/auth/token", json={"username": login[0], "password": login[1]}, timeout=60)

    with ThreadPoolExecutor(max_workers=len(logins)) as pool:
        return list(pool.map(attempt, logins))


def tally(replies) -> dict[int, int]:
    codes = [r.status_code for r in replies]
    return {code: codes.count(code) for code in sorted(set(codes))}


def test_40_concurrent_wrong_passwords_for_one_login_give_exactly_5_401_and_35_429(gunicorn_server, real_hashing):
    name = a_login_name_in_a_fresh_window("victim")
    UserFactory(username=name, password=PASSWORD)
    UserFactory(username="colleague", password=PASSWORD)
    base = gunicorn_server().base
    replies = burst(base, [(name, f"guess-{n}") for n in range(40)])
    assert tally(replies) == {401: 5, 429: 35}, [(r.status_code, r.text[:120]) for r in replies][:5]
    assert all(r.json()["code"] == "RATE_LIMIT_EXCEEDED" and int(r.headers["Retry-After"]) >= 1
               for r in replies if r.status_code == 429)
    locked = requests.post(base + "/api/auth/token", json={"username": name, "password": PASSWORD}, timeout=30)
    assert locked.status_code == 429, locked.text
    other = requests.post(base + "/api/auth/token", json={"username": "colleague", "password": PASSWORD}, timeout=30)
    assert other.status_code == 200 and other.json()["access"], other.text


def test_40_concurrent_failed_logins_from_one_address_give_exactly_the_address_limit(gunicorn_server, real_hashing):
    UserFactory(username="colleague", password=PASSWORD)
    left = _seconds_left_in_window("127.0.0.1", 3600)  # the peer address of every request here
    if left < 25:
        time.sleep(left + 1)
    base = gunicorn_server(env={"RATE_LIMIT_LOGIN_FAILURES_PER_ADDRESS": "10/h"}).base
    assert _seconds_left_in_window("127.0.0.1", 3600) >= 15
    replies = burst(base, [(f"sprayed-{n}", "guess") for n in range(40)])
    assert tally(replies) == {401: 10, 429: 30}, [(r.status_code, r.text[:120]) for r in replies][:5]
    assert all("from this address" in r.json()["detail"] for r in replies if r.status_code == 429)
    locked = requests.post(base + "/api/auth/token", json={"username": "colleague", "password": PASSWORD}, timeout=30)
    assert locked.status_code == 429, locked.text
