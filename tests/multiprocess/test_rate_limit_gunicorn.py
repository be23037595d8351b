"""The 30/min limit is exact across worker processes (PostgreSQL + Redis + gunicorn -w 4)."""

from __future__ import annotations

import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from rest_framework_simplejwt.tokens import RefreshToken

from brokers.sim_exchange import set_quote
from tests.factories import BrokerAccountFactory, UserFactory

pytestmark = pytest.mark.multiprocess


def _seconds_left_in_window(key: str, period: int = 60) -> int:
    """django-ratelimit's fixed window for this key (core._get_window), as seconds to its end."""
    ts = int(time.time())
    w = ts - (ts % period) + (zlib.crc32(key.encode()) % period)
    return (w + period if w < ts else w) - ts


def _wait_for_a_fresh_window(key: str, need: int = 25) -> None:
    left = _seconds_left_in_window(key)
    if left < need:
        time.sleep(left + 1)


def test_100_concurrent_posts_from_one_user_give_exactly_30_201_and_70_429(gunicorn):
    set_quote("crypto", "BTC/USD", "50000")
    user, other = UserFactory(username="burst"), UserFactory(username="calm")
    for u in (user, other):
        BrokerAccountFactory(user=u, asset_class="crypto")
    headers = {"Authorization": f"Bearer {RefreshToken.for_user(user).access_token}"}
    body = {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01, "order_type": "limit",
            "limit_price": 30000}
    _wait_for_a_fresh_window(str(user.pk))

    def post(_):
        return requests.post(gunicorn + "/api/equity/orders", json=body, headers=headers, timeout=60)

    with ThreadPoolExecutor(max_workers=50) as pool:
        replies = list(pool.map(post, range(100)))
    codes = [r.status_code for r in replies]
    odd = [(r.status_code, r.text[:200]) for r in replies if r.status_code not in (201, 429)]
    assert codes.count(201) == 30 and codes.count(429) == 70, (sorted(codes), odd[:5])
    assert all(r.json()["code"] == "RATE_LIMIT_EXCEEDED" and int(r.headers["Retry-After"]) >= 1
               for r in replies if r.status_code == 429)
    other_headers = {"Authorization": f"Bearer {RefreshToken.for_user(other).access_token}"}
    calm = requests.post(gunicorn + "/api/equity/orders", json=body, headers=other_headers, timeout=30)
    assert calm.status_code == 201, calm.text
