"""When our own dependencies fail (SPEC.md "Edge cases, decided"), under a real multi-worker gunicorn.

Redis (the shared cache) unreachable: placements 503 SERVICE_UNAVAILABLE, no order sent; reads and
cancels keep working. The database's connections killed: 503 with the envelope for the requests
that hit it, never a 500 or HTML, and no order half-written. Either way the running workers recover
without a restart once the dependency is back.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests
from django.db import connection
from rest_framework_simplejwt.tokens import RefreshToken

from audit.models import BrokerOrderEvent
from brokers.sim_exchange import set_quote
from equity.models import Attempt, Order
from tests.factories import BrokerAccountFactory, UserFactory
from tests.faults.conftest import events_of

pytestmark = [pytest.mark.multiprocess, pytest.mark.postgres]

ORDERS = "/api/equity/orders"
CRYPTO = {"asset_class": "crypto"}
BTC_LIMIT = {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.001, "order_type": "limit",
             "limit_price": 30000}  # rests at the simulator
BTC_MARKET = {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.001, "order_type": "market"}


def trader_with_sim(username: str) -> requests.Session:
    user = UserFactory(username=username)
    BrokerAccountFactory(user=user, asset_class="crypto")
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {RefreshToken.for_user(user).access_token}"
    return http


def assert_envelope(reply: requests.Response, status: int, code: str) -> None:
    assert reply.status_code == status, (reply.status_code, reply.text[:300])
    assert reply.headers["Content-Type"].startswith("application/json"), reply.headers["Content-Type"]
    body = reply.json()
    assert body["code"] == code and isinstance(body["detail"], str) and body["detail"], body


def test_with_redis_down_placements_are_503_while_reads_and_cancels_work_and_recover_without_restart(
        gunicorn_server, own_redis):
    server = gunicorn_server(redis_url=own_redis.url)
    set_quote("crypto", "BTC/USD", "50000")
    http = trader_with_sim("redis-outage")

    def post(key: str) -> requests.Response:
        return http.post(server.base + ORDERS, json={**BTC_LIMIT, "client_order_id": key}, timeout=30)

    resting = [post(f"before-{i}") for i in range(2)]
    assert [r.status_code for r in resting] == [201, 201], [r.text[:200] for r in resting]
    order_id = resting[0].json()["broker_order_id"]
    reads = [f"{ORDERS}?asset_class=crypto", f"{ORDERS}/{order_id}?asset_class=crypto",
             "/api/equity/positions?asset_class=crypto", "/api/equity/account?asset_class=crypto"] * 3

    own_redis.kill()
    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent, so that every worker meets the outage
        refused = list(pool.map(post, [f"during-{i}" for i in range(8)]))
        read = list(pool.map(lambda path: http.get(server.base + path, timeout=30), reads))
    canceled = http.delete(f"{server.base}{ORDERS}/{order_id}?asset_class=crypto", timeout=30)

    for reply in refused:
        assert_envelope(reply, 503, "SERVICE_UNAVAILABLE")
    assert [r.status_code for r in read] == [200] * len(reads), [r.text[:200] for r in read if r.status_code != 200]
    assert canceled.status_code == 204, canceled.text[:300]
    for i in range(8):  # refused before the broker: audited, nothing sent
        assert events_of(f"during-{i}") == [("rejected", "SERVICE_UNAVAILABLE")]
        assert Order.objects.get(client_order_id=f"during-{i}").broker_order_id is None

    own_redis.start()
    with ThreadPoolExecutor(max_workers=8) as pool:
        after = list(pool.map(post, [f"after-{i}" for i in range(8)]))
    assert [r.status_code for r in after] == [201] * 8, [r.text[:200] for r in after]
    assert server.process.poll() is None and server.booted_workers() == 4  # no worker was restarted


def test_killed_database_connections_are_503_with_the_envelope_and_no_order_is_half_written(
        gunicorn_server, own_redis, settings, equity_orders):
    equity_orders.RATE_LIMIT_ORDERS = "100000/m"  # this storm is about the database, not the rate limit
    server = gunicorn_server(redis_url=own_redis.url)
    set_quote("crypto", "BTC/USD", "50000")
    sessions = [trader_with_sim(f"storm-{i}") for i in range(4)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        own_pid = cursor.fetchone()[0]  # the test's own connection stays
    with ThreadPoolExecutor(max_workers=8) as pool:  # warm every worker up (imports, calendars) before the storm
        warm = list(pool.map(lambda n: sessions[n % 4].post(server.base + ORDERS, json={
            **BTC_MARKET, "client_order_id": f"warm-{n}"}, timeout=30), range(12)))
    assert [r.status_code for r in warm] == [201] * 12, [r.text[:200] for r in warm]
    stop = threading.Event()
    replies: list[tuple[str, str, requests.Response]] = []
    killed = []

    def client(n: int) -> None:
        http = sessions[n % len(sessions)]
        for i in range(10_000):
            if stop.is_set():
                return
            key = f"storm-{n}-{i}"
            replies.append(("place", key, http.post(server.base + ORDERS, json={**BTC_MARKET, "client_order_id": key},
                                                    timeout=30)))
            replies.append(("list", key, http.get(server.base + ORDERS, params=CRYPTO, timeout=30)))
            replies.append(("account", key, http.get(server.base + "/api/equity/account", params=CRYPTO, timeout=30)))

    def killer() -> None:
        db = settings.DATABASES["default"]
        with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"] or None,
                             dbname=db["NAME"], autocommit=True) as conn:
            time.sleep(0.3)
            while not stop.is_set():
                rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> %s",
                                    [own_pid]).fetchall()
                killed.append(len(rows))
                time.sleep(0.4)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)] + [threading.Thread(target=killer)]
    [t.start() for t in threads]
    time.sleep(4)
    stop.set()
    [t.join(60) for t in threads]

    statuses = sorted({r.status_code for _, _, r in replies})
    assert set(statuses) <= {200, 201, 503}, [(k, r.status_code, r.text[:200]) for _, k, r in replies
                                              if r.status_code not in (200, 201, 503)][:5]
    unavailable = [r for _, _, r in replies if r.status_code == 503]
    assert sum(killed) > 0 and unavailable, "no request met a killed connection: the storm proved nothing"
    for reply in unavailable:
        assert_envelope(reply, 503, "SERVICE_UNAVAILABLE")

    # Recovered without a restart: every worker answers again.
    with ThreadPoolExecutor(max_workers=8) as pool:
        after = list(pool.map(lambda n: sessions[n % 4].get(server.base + "/api/equity/account", params=CRYPTO,
                                                              timeout=30), range(16)))
        placed = list(pool.map(lambda n: sessions[n % 4].post(server.base + ORDERS, json={
            **BTC_MARKET, "client_order_id": f"after-{n}"}, timeout=30), range(8)))
    assert [r.status_code for r in after] == [200] * 16, [r.text[:200] for r in after if r.status_code != 200]
    assert [r.status_code for r in placed] == [201] * 8, [r.text[:200] for r in placed if r.status_code != 201]
    assert server.process.poll() is None and server.booted_workers() == 4

    # No order half-written: an order is done exactly when its outcome's audit row exists.
    for key in [k for kind, k, r in replies if kind == "place" and r.status_code == 201]:
        order = Order.objects.get(client_order_id=key)
        assert order.attempt == Attempt.DONE and events_of(key)[-1] == ("placed", "")
    for order in Order.objects.all():
        kinds = [kind for kind, _ in events_of(order.client_order_id)]
        outcome = [k for k in kinds if k in ("placed", "pending")]
        if order.attempt == Attempt.DONE:
            assert kinds[:1] == ["submitted"] and len(outcome) == 1, (order, kinds)
        else:
            assert outcome == [], (order, kinds)
        if order.attempt == Attempt.FAILED:
            assert "rejected" in kinds, (order, kinds)
    for event in BrokerOrderEvent.objects.filter(event_type="placed"):
        order = Order.objects.get(user_id=event.user_id, client_order_id=event.client_order_id)
        assert order.attempt == Attempt.DONE and order.broker_order_id == event.broker_order_id
