"""DELETE /api/equity/orders: cancel every open order of the caller on one connection, each
outcome reported, partial broker failures reported, never a 500 (SPEC.md "Trader controls")."""

from __future__ import annotations

import pytest

from audit.models import BrokerOrderEvent
from brokers.adapters.sim import SimAdapter
from brokers.errors import BrokerUnavailable
from equity.models import Order
from tests.equity.helpers import assert_error, crypto_limit, crypto_market, place
from tests.factories import BrokerAccountFactory, OrderFactory

pytestmark = pytest.mark.django_db

ORDERS = "/api/equity/orders"


def cancel_all(client, query="asset_class=crypto"):
    return client.delete(f"{ORDERS}?{query}")


def test_open_orders_are_canceled_final_ones_left_and_a_broker_fault_in_the_middle_reported(
        api_client, sim_crypto, monkeypatch):
    first = place(api_client, crypto_limit(limit_price=30000)).json()
    faulty = place(api_client, crypto_limit(limit_price=30500)).json()
    last = place(api_client, crypto_limit(limit_price=31000)).json()
    filled = place(api_client, crypto_market()).json()
    assert filled["status"] == "filled"
    real_cancel = SimAdapter.cancel_order

    def broker_down_for_one(self, broker_order_id, *, symbol=None):
        if broker_order_id == faulty["broker_order_id"]:
            raise BrokerUnavailable("simulated outage: connection reset")
        return real_cancel(self, broker_order_id, symbol=symbol)

    monkeypatch.setattr(SimAdapter, "cancel_order", broker_down_for_one)
    resp = cancel_all(api_client)
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["canceled"] == [first["order_id"], last["order_id"]]  # the one after the fault too
    assert body["failed"] == [{"order_id": faulty["order_id"], "code": "BROKER_UNAVAILABLE",
                               "detail": "simulated outage: connection reset"}]
    statuses = dict(Order.objects.values_list("client_order_id", "status"))
    assert (statuses[first["order_id"]], statuses[faulty["order_id"]], statuses[last["order_id"]],
            statuses[filled["order_id"]]) == ("canceled", "accepted", "canceled", "filled")
    events = list(BrokerOrderEvent.objects.filter(event_type__in=["canceled", "cancel_rejected"]).order_by("id")
                  .values_list("client_order_id", "event_type", "error_code"))
    assert events == [(first["order_id"], "canceled", ""), (faulty["order_id"], "cancel_rejected",
                                                             "BROKER_UNAVAILABLE"), (last["order_id"], "canceled", "")]


def test_an_order_whose_outcome_is_still_unknown_is_reported_failed_not_guessed(api_client, sim_crypto):
    OrderFactory(user=api_client.user, connection=sim_crypto, status="pending", broker_order_id=None,
                 client_order_id="lost-reply")
    body = cancel_all(api_client).json()
    assert body["canceled"] == []
    assert [(f["order_id"], f["code"]) for f in body["failed"]] == [("lost-reply", "BROKER_UNAVAILABLE")]


def test_an_order_final_at_the_broker_meanwhile_is_reported_with_the_brokers_refusal(api_client, sim_crypto):
    resting = place(api_client, crypto_limit()).json()
    from brokers.sim_exchange import set_quote
    set_quote("crypto", "BTC/USD", "29000")  # the resting buy fills at the broker; our row still says accepted
    Order.objects.filter(client_order_id=resting["order_id"]).update(status="accepted")
    body = cancel_all(api_client).json()
    assert body["canceled"] == []
    assert [(f["order_id"], f["code"]) for f in body["failed"]] == [(resting["order_id"], "BROKER_REJECTED")]


def test_an_unexpected_error_in_one_cancel_is_reported_and_never_a_500(api_client, sim_crypto, monkeypatch):
    one = place(api_client, crypto_limit()).json()
    two = place(api_client, crypto_limit(limit_price=31000)).json()
    real_cancel = SimAdapter.cancel_order

    def buggy(self, broker_order_id, *, symbol=None):
        if broker_order_id == one["broker_order_id"]:
            raise KeyError("a bug")
        return real_cancel(self, broker_order_id, symbol=symbol)

    monkeypatch.setattr(SimAdapter, "cancel_order", buggy)
    resp = cancel_all(api_client)
    assert resp.status_code == 200
    assert resp.json()["canceled"] == [two["order_id"]]
    assert [f["order_id"] for f in resp.json()["failed"]] == [one["order_id"]]


def test_only_the_callers_orders_on_that_connection_and_symbol(make_client, user, other_user, quotes):
    mine = BrokerAccountFactory(user=user, asset_class="crypto")
    BrokerAccountFactory(user=other_user, asset_class="crypto")
    alice, bob = make_client(user), make_client(other_user)
    btc = place(alice, crypto_limit()).json()
    eth = place(alice, crypto_limit(symbol="ETH/USD", limit_price=2000)).json()
    bobs = place(bob, crypto_limit()).json()
    assert mine.pk
    assert cancel_all(alice, "asset_class=crypto&symbol=ETH/USD").json() == {"canceled": [eth["order_id"]],
                                                                              "failed": []}
    assert cancel_all(alice).json() == {"canceled": [btc["order_id"]], "failed": []}
    assert Order.objects.get(client_order_id=bobs["order_id"]).status == "accepted"
    assert cancel_all(alice).json() == {"canceled": [], "failed": []}


def test_without_a_connection_it_is_broker_not_configured_and_asset_class_is_required(api_client, user):
    assert_error(cancel_all(api_client, "asset_class=kr_equity"), 403, "BROKER_NOT_CONFIGURED")
    assert_error(cancel_all(api_client, "symbol=AAPL"), 400, "VALIDATION_ERROR")


def test_a_resting_bracket_is_canceled_once_and_a_filled_ones_open_legs_each(api_client, sim_crypto):
    resting = place(api_client, crypto_limit(limit_price=30000, bracket={"take_profit": 40000,
                                                                         "stop_loss": 25000})).json()
    filled = place(api_client, crypto_limit(limit_price=50000, client_order_id="filled-bracket",
                                            bracket={"take_profit": 60000, "stop_loss": 45000})).json()
    assert filled["status"] == "filled"
    api_client.get("/api/equity/orders", {"asset_class": "crypto"})  # the legs are seen (mirrored) on a read
    legs = sorted(Order.objects.filter(parent__client_order_id="filled-bracket").values_list("client_order_id",
                                                                                             flat=True))
    assert len(legs) == 2
    body = cancel_all(api_client).json()
    assert body["failed"] == []
    assert sorted(body["canceled"]) == sorted([resting["order_id"], *legs])
    assert set(Order.objects.filter(parent__client_order_id="filled-bracket").values_list("status", flat=True)) \
        == {"canceled"}
