"""No double order, ever, against a broker reached over real HTTP (SPEC.md "When the broker fails during
a placement"; issue 11 item 1).

An Upbit fake on a loopback server behaves as Upbit documents: the identifier is single-use, a reply
can be lost after the order was placed (the connection reset before the answer), and the lookup by
identifier can lag behind a new order. However often the client retries the POST with its key, the
exchange holds exactly one order, every POST carries the same identifier, and the client sees
201/200/202, never 502.
"""

from __future__ import annotations

import io
import logging
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from audit.models import BrokerOrderEvent
from brokers.adapters import upbit
from equity.models import Order
from tests.brokers.venues.upbit import ACCESS_KEY, KST, SECRET_KEY, LaggingUpbit
from tests.equity.helpers import place
from tests.equity.test_gates import set_flag
from tests.factories import BrokerAccountFactory, TraderProfileFactory
from tests.loopback import LoopbackHTTP

pytestmark = pytest.mark.django_db

ORDER = {"asset_class": "crypto", "symbol": "KRW-BTC", "side": "buy", "qty": 0.001, "order_type": "limit",
         "limit_price": 90000000, "live_mode": True, "client_order_id": "lost-upbit"}
RETRIES = 6


@pytest.fixture
def exchange(equity_orders, monkeypatch, user):
    """The user's live Upbit connection to a LaggingUpbit served on 127.0.0.1."""
    monkeypatch.setattr(upbit, "READ_RETRY_DELAYS", (0, 0))  # retry pacing, not behaviour
    with LoopbackHTTP() as server:
        fake = LaggingUpbit(server.url, prices={"KRW-BTC": Decimal("100000000")}, krw=Decimal("10000000"))
        fake.install(server)
        equity_orders.UPBIT_URL = server.url
        BrokerAccountFactory(user=user, asset_class="crypto", exchange="upbit", environment="live",
                             credentials={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY})
        set_flag("FEATURE_EQUITY_LIVE", True)  # Upbit is live-only
        TraderProfileFactory(user=user, live_enabled=True)
        yield fake


def place_until_decided(client) -> list[int]:
    """POST the same order (same key) until it is no longer pending, as a client retrying would."""
    statuses = []
    for _ in range(RETRIES):
        resp = place(client, ORDER)
        statuses.append(resp.status_code)
        assert resp.status_code in (200, 201, 202), resp.content[:500]
        if resp.json()["status"] != "pending":
            assert resp.json()["status"] == "accepted" and resp.json()["broker_order_id"]
            break
        # Still undecided: 202 the first time, a 200 replay of the pending order after that.
        assert resp.status_code == (202 if len(statuses) == 1 else 200) and resp.json()["broker_order_id"] is None
    return statuses


@pytest.mark.parametrize("lag", [0, 1, 2, 3, 5])
def test_a_lost_upbit_reply_with_a_lagging_lookup_is_exactly_one_order_however_often_the_client_retries(
        api_client, exchange, lag):
    exchange.lookup_lag = lag
    exchange.lose_replies = 1
    statuses = place_until_decided(api_client)

    assert Order.objects.get(client_order_id="lost-upbit").status == "accepted", statuses  # decided, never 502
    assert len(exchange.orders) == 1
    order = Order.objects.get(client_order_id="lost-upbit")
    assert set(exchange.posted_identifiers) == {order.broker_client_id}  # re-sent, never under a new id
    assert order.broker_order_id == next(iter(exchange.orders))

    again = place(api_client, ORDER)  # and every later retry replays the one order
    assert again.status_code == 200 and again.json()["broker_order_id"] == order.broker_order_id
    assert len(exchange.orders) == 1


def test_without_a_lag_the_lost_reply_is_found_at_once_and_not_resent(api_client, exchange):
    exchange.lose_replies = 1
    resp = place(api_client, ORDER)
    assert resp.status_code == 201 and resp.json()["status"] == "accepted", resp.content[:500]
    assert len(exchange.posted_identifiers) == 1 and len(exchange.orders) == 1


def test_a_lagging_lookup_makes_the_first_answer_202_pending_never_502(api_client, exchange):
    exchange.lookup_lag = 2  # the lookup, and the lookup after the duplicate refusal, both miss it
    exchange.lose_replies = 1
    resp = place(api_client, ORDER)
    assert resp.status_code == 202 and resp.json()["status"] == "pending", resp.content[:500]
    assert len(exchange.orders) == 1 and len(exchange.posted_identifiers) == 2  # the re-send was refused


def test_a_request_lost_before_upbit_acted_is_placed_once_by_the_resend_under_the_same_identifier(
        api_client, exchange):
    exchange.lose_requests = 1  # reset before Upbit read it: the client cannot tell it from a lost reply
    resp = place(api_client, ORDER)
    assert resp.status_code == 201 and resp.json()["status"] == "accepted", resp.content[:500]
    order = Order.objects.get(client_order_id="lost-upbit")
    assert exchange.posted_identifiers == [order.broker_client_id] and len(exchange.orders) == 1


def test_retries_through_repeated_losses_still_make_one_order(api_client, exchange):
    exchange.lookup_lag = 1
    exchange.lose_replies = 3  # the first send and the next two re-sends all lose their answers
    statuses = place_until_decided(api_client)
    assert Order.objects.get(client_order_id="lost-upbit").status == "accepted", statuses
    assert len(exchange.orders) == 1
    assert len(set(exchange.posted_identifiers)) == 1


def foreign_order(exchange, **fields) -> None:
    """An order Upbit holds that this service did not place, of a kind it does not know (issue 11 item 2)."""
    row = {"uuid": str(uuid.uuid4()), "identifier": None, "market": "KRW-BTC", "side": "bid", "ord_type": "twap",
           "price": Decimal("80000000"), "volume": Decimal("0.001"), "state": "wait",
           "created_at": datetime.now(KST), "executed_volume": Decimal("0"), "trades": [], "time_in_force": None,
           "locked": Decimal("0")}
    row.update(fields)
    exchange.orders[row["uuid"]] = row


def test_a_foreign_order_at_upbit_never_breaks_the_list_or_reconcile(api_client, exchange, monkeypatch, caplog):
    monkeypatch.setattr(upbit, "_FOREIGN_LOGGED", set())
    caplog.set_level(logging.WARNING, logger="brokers.adapters.upbit")
    resting = place(api_client, dict(ORDER, client_order_id="resting"))  # open: the list asks Upbit for it
    assert resting.status_code == 201, resting.content[:500]
    foreign_order(exchange)
    foreign_order(exchange, ord_type="limit", time_in_force="gtd")
    exchange.lookup_lag = 2
    exchange.lose_replies = 1
    assert place(api_client, ORDER).status_code == 202

    listed = api_client.get("/api/equity/orders", {"asset_class": "crypto", "live_mode": "true"})
    assert listed.status_code == 200, listed.content[:500]
    assert sorted(o["order_id"] for o in listed.json()["items"]) == ["lost-upbit", "resting"]
    assert sum("left out of the listing" in r.getMessage() for r in caplog.records) == 2  # twap, gtd

    with time_machine.travel(timezone.now() + timedelta(minutes=2), tick=True):
        call_command("reconcile_orders", stdout=io.StringIO())
    order = Order.objects.get(client_order_id="lost-upbit")
    assert order.status == "accepted" and order.broker_order_id in exchange.orders
    assert BrokerOrderEvent.objects.filter(client_order_id="lost-upbit", event_type="resolved").count() == 1
    assert len(exchange.posted_identifiers) == 3  # resting, the lost send and its one re-send; none by reconcile


def test_a_retry_that_resends_and_gets_the_order_answers_201_then_replays_200(api_client, exchange):
    exchange.lookup_lag = 3  # the placement's two lookups and the retry's first all miss it
    exchange.lose_replies = 1
    assert place_until_decided(api_client) == [202, 201]
    assert place(api_client, ORDER).status_code == 200
    assert len(exchange.orders) == 1 and len(exchange.posted_identifiers) == 3  # the first send, two re-sends


def test_a_retry_of_a_pending_order_after_live_trading_was_switched_off_sends_nothing(api_client, exchange):
    exchange.lose_requests = 2  # the send and the placement's re-send: both reset before Upbit acted
    assert place(api_client, ORDER).status_code == 202
    set_flag("FEATURE_EQUITY_LIVE", False)
    retry = place(api_client, ORDER)
    assert retry.status_code == 200 and retry.json()["status"] == "pending", retry.content[:500]
    assert exchange.posted_identifiers == [] and exchange.orders == {}
    set_flag("FEATURE_EQUITY_LIVE", True)
    assert place(api_client, ORDER).status_code == 201  # switched on again: the retry's re-send places it
    assert len(exchange.orders) == 1


@pytest.mark.parametrize("settled_by", ["retry", "reconcile"])
def test_a_pending_live_order_placed_later_is_the_users_first_live_order_marked_once_and_alerted(
        api_client, exchange, monkeypatch, django_capture_on_commit_callbacks, settled_by):
    # SPEC.md: the first live order a user ever places is marked, however its outcome became known.
    alerted = []
    monkeypatch.setattr("equity.services.send_first_live_alert", lambda order: alerted.append(order.client_order_id))
    exchange.lookup_lag = 3 if settled_by == "retry" else 2
    exchange.lose_replies = 1
    with django_capture_on_commit_callbacks(execute=True):
        assert place(api_client, ORDER).status_code == 202
        assert not BrokerOrderEvent.objects.filter(first_live_order=True).exists()  # nothing known yet
        if settled_by == "retry":
            assert place(api_client, ORDER).status_code == 201
        else:
            with time_machine.travel(timezone.now() + timedelta(minutes=2), tick=True):
                call_command("reconcile_orders", stdout=io.StringIO())
        second = place(api_client, dict(ORDER, client_order_id="second-live"))
    assert second.status_code == 201, second.content[:500]
    flagged = BrokerOrderEvent.objects.filter(first_live_order=True)
    assert [(e.client_order_id, e.event_type) for e in flagged] == [("lost-upbit", "resolved")]
    assert alerted == ["lost-upbit"]
