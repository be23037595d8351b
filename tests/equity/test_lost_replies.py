"""When the broker fails during a placement (SPEC.md "Edge cases, decided"): never a second broker order."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import requests
import responses
from django.core.management import call_command
from django.utils import timezone

from audit.models import BrokerOrderEvent
from equity.models import Order
from tests.brokers.venues.alpaca import API_KEY, DATA_URL, LIVE_URL, PAPER_URL, SECRET_KEY, FakeAlpaca, reply
from tests.equity.helpers import assert_error, place

pytestmark = pytest.mark.django_db
ORDERS = f"{PAPER_URL}/v2/orders"
BY_CLIENT_ID = f"{PAPER_URL}/v2/orders:by_client_order_id"


@pytest.fixture
def broker(settings, api_client, equity_orders):
    """An Alpaca paper connection whose first order POST, or lookups, can be made to fail."""
    equity_orders.ALPACA_PAPER_URL, equity_orders.ALPACA_LIVE_URL, equity_orders.ALPACA_DATA_URL = PAPER_URL, LIVE_URL, DATA_URL
    fake = FakeAlpaca(prices={"BTC/USD": Decimal("50000")})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake.mock = mock  # faults are registered first: responses answers with the first match
        yield fake


def connect(client, fake):
    fake.install(fake.mock, base_url=PAPER_URL)
    resp = client.post("/api/brokers/accounts", {"asset_class": "crypto", "exchange": "alpaca",
                                                  "environment": "paper",
                                                  "credentials": {"api_key": API_KEY, "secret_key": SECRET_KEY}},
                       format="json")
    assert resp.status_code == 201, resp.content


def lose_the_reply_after_placing(fake):
    """The first POST reaches the broker, which places the order; its answer never arrives."""
    def callback(request):
        fake._submit(request)
        raise requests.exceptions.ReadTimeout("read timed out")
    fake.mock.add_callback(responses.POST, ORDERS, callback=callback)


def lose_the_request(fake):
    """The first POST times out and the broker never placed anything."""
    def callback(request):
        fake.order_posts.append("lost")
        raise requests.exceptions.ReadTimeout("read timed out")
    fake.mock.add_callback(responses.POST, ORDERS, callback=callback)


def fail_lookups(fake, times=2):
    for _ in range(times):
        fake.mock.add(responses.GET, BY_CLIENT_ID, status=503, body="<html>busy</html>")


def lag_lookups(fake, times):
    """The lookup by client id does not show a new order for its first `times` calls (Alpaca's 404)."""
    for _ in range(times):
        fake.mock.add(responses.GET, BY_CLIENT_ID, status=404, json={"code": 40410000, "message": "order not found"})


BTC = {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01, "order_type": "limit",
       "limit_price": 40000, "client_order_id": "lost-1"}


def placed_orders(fake) -> int:
    return len(fake.orders)


def test_a_lost_reply_for_a_placed_order_is_found_by_our_client_id_and_answered_201(api_client, broker):
    lose_the_reply_after_placing(broker)
    connect(api_client, broker)
    resp = place(api_client, BTC)
    assert resp.status_code == 201, resp.content
    assert resp.json()["broker_order_id"] == next(iter(broker.orders)) and placed_orders(broker) == 1


def test_a_lost_request_not_found_is_resent_under_the_same_client_id_and_is_the_one_order(api_client, broker):
    # SPEC.md: a lookup that finds nothing is no proof of absence; Alpaca's unique client_order_id is.
    lose_the_request(broker)
    connect(api_client, broker)
    resp = place(api_client, BTC)
    assert resp.status_code == 201 and resp.json()["status"] == "accepted", resp.content
    retry = place(api_client, BTC)
    assert retry.status_code == 200 and retry.json()["broker_order_id"] == resp.json()["broker_order_id"]
    assert placed_orders(broker) == 1
    sent_ids = [p["client_order_id"] for p in broker.order_posts if p != "lost"]
    assert sent_ids == [Order.objects.get().broker_client_id]


@pytest.mark.parametrize("lag", [1, 2, 3, 4])
def test_a_lost_reply_with_a_lagging_lookup_is_one_order_however_often_the_client_retries(api_client, broker, lag):
    lose_the_reply_after_placing(broker)
    lag_lookups(broker, lag)
    connect(api_client, broker)
    answers = []
    for _ in range(5):
        resp = place(api_client, BTC)
        answers.append((resp.status_code, resp.json()["status"]))
        if resp.json()["status"] != "pending":
            break
    assert all(code in (200, 201, 202) for code, _ in answers), answers
    assert answers[-1][1] == "accepted", answers
    assert placed_orders(broker) == 1  # the re-sends were refused as duplicates
    assert {p["client_order_id"] for p in broker.order_posts} == {Order.objects.get().broker_client_id}


def test_an_undecidable_outcome_is_202_pending_with_a_null_broker_id(api_client, broker):
    lose_the_reply_after_placing(broker)
    fail_lookups(broker, times=2)
    connect(api_client, broker)
    resp = place(api_client, BTC)
    assert resp.status_code == 202, resp.content
    assert resp.json()["status"] == "pending" and resp.json()["broker_order_id"] is None
    assert BrokerOrderEvent.objects.filter(event_type="pending").count() == 1


def test_a_retry_of_a_pending_order_replays_it_after_one_more_lookup_never_a_second_order(api_client, broker):
    lose_the_reply_after_placing(broker)
    fail_lookups(broker, times=2)
    connect(api_client, broker)
    place(api_client, BTC)
    again = place(api_client, BTC)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["status"] == "accepted" and again.json()["broker_order_id"] == next(iter(broker.orders))
    assert len(broker.order_posts) == 1
    assert BrokerOrderEvent.objects.filter(event_type="resolved").count() == 1


def test_get_of_a_pending_order_by_order_id_looks_it_up_again(api_client, broker):
    lose_the_reply_after_placing(broker)
    fail_lookups(broker, times=2)
    connect(api_client, broker)
    place(api_client, BTC)
    got = api_client.get("/api/equity/orders/lost-1", {"asset_class": "crypto"})
    assert got.status_code == 200 and got.json()["status"] == "accepted"


def test_reconcile_orders_resolves_pending_orders_older_than_a_minute_and_audits_it(api_client, broker):
    lose_the_reply_after_placing(broker)
    fail_lookups(broker, times=2)
    connect(api_client, broker)
    place(api_client, BTC)
    call_command("reconcile_orders")  # too young: left alone
    assert Order.objects.get().status == "pending"
    Order.objects.update(attempt_started_at=timezone.now() - timedelta(minutes=2))
    call_command("reconcile_orders")
    order = Order.objects.get()
    assert order.status == "accepted" and order.broker_order_id == next(iter(broker.orders))
    assert BrokerOrderEvent.objects.filter(event_type="resolved").count() == 1


def test_reconcile_calls_an_order_absent_only_after_the_settling_time(api_client, broker, equity_orders):
    equity_orders.BROKER_ABSENT_AFTER_SECONDS = 600
    lose_the_request(broker)
    fail_lookups(broker, times=2)
    connect(api_client, broker)
    assert place(api_client, BTC).status_code == 202
    Order.objects.update(attempt_started_at=timezone.now() - timedelta(minutes=2))
    call_command("reconcile_orders")  # not found, but a lookup may lag: still pending
    assert Order.objects.get().status == "pending"
    assert not BrokerOrderEvent.objects.filter(event_type="resolved").exists()
    Order.objects.update(attempt_started_at=timezone.now() - timedelta(minutes=11))
    call_command("reconcile_orders")
    assert Order.objects.get().status == "rejected"
    assert BrokerOrderEvent.objects.filter(event_type="resolved").count() == 1
    assert placed_orders(broker) == 0 and broker.order_posts == ["lost"]  # reconcile never re-sends


def test_a_connection_error_that_may_have_been_sent_is_resent_under_the_same_client_id(api_client, broker):
    # Built without its urllib3 cause, never_sent cannot prove it never left: an unknown outcome.
    broker.mock.add(responses.POST, ORDERS, body=requests.exceptions.ConnectionError("connection refused"))
    connect(api_client, broker)
    assert place(api_client, BTC).status_code == 201
    assert placed_orders(broker) == 1


def test_a_resend_refused_for_another_reason_leaves_the_order_pending_not_rejected(api_client, broker):
    # The first order may be holding the funds that the re-send is refused for.
    lose_the_request(broker)
    broker.mock.add(responses.POST, ORDERS, status=403,
                    json={"code": 40310000, "message": "insufficient balance for USD"})
    connect(api_client, broker)
    resp = place(api_client, BTC)
    assert resp.status_code == 202 and resp.json()["status"] == "pending", resp.content
    assert placed_orders(broker) == 0


def test_a_5xx_on_submit_leads_to_a_lookup_not_a_resend(api_client, broker):
    def callback(request):
        broker._submit(request)
        return reply(500, {"code": 50010000, "message": "internal server error"})
    broker.mock.add_callback(responses.POST, ORDERS, callback=callback)
    connect(api_client, broker)
    assert place(api_client, BTC).status_code == 201
    assert len(broker.order_posts) == 1


def test_a_retry_of_a_pending_order_is_not_resent_while_a_kill_switch_covers_it(api_client, broker):
    # The re-send may be what places the order: a halt set since the first send stops it too.
    lose_the_request(broker)
    fail_lookups(broker, times=2)
    connect(api_client, broker)
    assert place(api_client, BTC).status_code == 202
    assert api_client.put("/api/equity/kill-switch", {"mode": "halted"}, format="json").status_code == 200
    again = place(api_client, BTC)
    assert again.status_code == 200 and again.json()["status"] == "pending"
    assert broker.order_posts == ["lost"]
    assert api_client.delete("/api/equity/kill-switch").status_code == 204
    resent = place(api_client, BTC)
    assert resent.status_code == 201 and resent.json()["status"] == "accepted", resent.content
    assert placed_orders(broker) == 1
