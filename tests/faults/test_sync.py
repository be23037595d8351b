"""Broker state sync (equity.sync, the worker's periodic task): a fill made at the real broker
(fake Alpaca, KIS, Upbit on their wire shapes) becomes exactly one event and one delivery per
matching subscription however many passes see it; every broker fault of the matrix is survived,
and one broker's outage never stops the sync of the others."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from brokers.sim_exchange import set_quote
from equity import sync
from equity.models import Order, OrderEvent, WebhookDelivery, WebhookSubscription
from tests.equity.helpers import place
from tests.faults.conftest import ADAPTERS, FAULTS

pytestmark = pytest.mark.django_db


def fill_at_the_broker(broker, order: Order) -> None:
    """The order fills at the broker itself (its dashboard, its app, the market moving)."""
    fake = broker.fake
    if broker.name == "alpaca":
        fake._fill(fake.orders[order.broker_order_id], Decimal("40000"))
    elif broker.name == "kis":
        fake._fill(next(r for r in fake.rows if not r["orgn_odno"]), Decimal("60000"))
    else:
        fake.set_price("KRW-BTC", Decimal("90000000"))


def subscriptions(user) -> None:
    for events in (["*"], ["order.filled"], ["order.canceled"]):
        WebhookSubscription.objects.create(user=user, url="https://hooks.example.com/x", events=events,
                                           signing={"secret": "whsec_c2VjcmV0"}, created_at=Order.objects.get(
                                               client_order_id="resting").submitted_at)


@pytest.mark.parametrize("broker", ADAPTERS, indirect=True)
def test_a_fill_at_the_broker_seen_by_the_sync_is_one_event_and_one_delivery_per_matching_subscription(
        broker, trader, user):
    assert place(trader, broker.order(client_order_id="resting")).json()["status"] == "accepted"
    subscriptions(user)
    order = Order.objects.get(client_order_id="resting")
    assert sync.sync_open_orders().changed == 0
    fill_at_the_broker(broker, order)
    reports = [sync.sync_open_orders() for _ in range(3)]
    assert [r.changed for r in reports] == [1, 0, 0] and not any(r.faults for r in reports)
    assert list(OrderEvent.objects.order_by("id").values_list("type", flat=True)) == ["order.accepted",
                                                                                       "order.filled"]
    filled = OrderEvent.objects.get(type="order.filled")
    assert filled.data["status"] == "filled" and filled.data["filled_qty"] == float(broker.resting["qty"])
    assert sorted(WebhookDelivery.objects.filter(event=filled).values_list("subscription__events", flat=True)) == [
        ["*"], ["order.filled"]]
    # A read through the API afterwards observes the same fill again: still one event.
    assert trader.get(f"/api/equity/orders/{order.broker_order_id}", broker.query()).status_code == 200
    assert OrderEvent.objects.filter(type="order.filled").count() == 1


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("broker", ADAPTERS, indirect=True)
def test_the_sync_survives_every_broker_fault_and_catches_up_after_it(broker, trader, user, fault,
                                                                      trading_hours):
    place(trader, broker.order(client_order_id="resting"))
    order = Order.objects.get(client_order_id="resting")
    fill_at_the_broker(broker, order)
    broker.arm(FAULTS[fault], "list", times=None)
    report = sync.sync_open_orders()  # never raises
    assert report.changed == 0 and list(report.faults) == [order.connection_id]
    assert sync.sync_open_orders().skipped == 1  # backing off that connection
    broker.gate.disarm()
    trading_hours.shift(timedelta(minutes=6))  # past the longest backoff
    assert sync.sync_open_orders().changed == 1
    assert OrderEvent.objects.filter(order=order, type="order.filled").count() == 1


def _sim_order_of_another_user(other_user, make_client) -> dict:
    from tests.factories import BrokerAccountFactory

    set_quote("crypto", "BTC/USD", "50000")
    BrokerAccountFactory(user=other_user, asset_class="crypto")  # the simulator
    return place(make_client(other_user), {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01,
                                           "order_type": "limit", "limit_price": 45000}).json()


@pytest.mark.parametrize("broker", ADAPTERS, indirect=True)
def test_one_brokers_outage_never_stops_the_sync_of_the_others(broker, trader, other_user, make_client,
                                                               equity_orders):
    equity_orders.SYNC_CONCURRENCY = 1  # one thread: the test's transaction is this thread's (threads: below)
    sim_order = _sim_order_of_another_user(other_user, make_client)
    place(trader, broker.order(client_order_id="resting"))
    broker.arm(FAULTS["read_timeout"], "list", times=None)
    set_quote("crypto", "BTC/USD", "44000")  # the simulator's order fills
    report = sync.sync_open_orders()
    assert report.connections == 2 and report.changed == 1
    assert list(report.faults) == [Order.objects.get(client_order_id="resting").connection_id]
    assert OrderEvent.objects.filter(order__client_order_id=sim_order["client_order_id"],
                                     type="order.filled").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("broker", ["alpaca"], indirect=True)
def test_connections_are_synced_in_parallel_threads_each_on_its_own_database_connection(
        broker, trader, other_user, make_client, equity_orders):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("threads on their own connections need PostgreSQL")
    equity_orders.SYNC_CONCURRENCY = 4
    sim_order = _sim_order_of_another_user(other_user, make_client)
    place(trader, broker.order(client_order_id="resting"))
    fill_at_the_broker(broker, Order.objects.get(client_order_id="resting"))
    set_quote("crypto", "BTC/USD", "44000")
    reports = [sync.sync_open_orders() for _ in range(2)]
    assert [r.changed for r in reports] == [2, 0] and not reports[0].faults
    assert OrderEvent.objects.filter(type="order.filled").count() == 2
    assert sim_order["status"] == "accepted"
