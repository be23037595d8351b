"""One behavioural contract, run against every adapter.

Each venue (tests/brokers/venues/<name>.py) is an adapter plus a stateful fake of its broker:
the simulator directly on the database, the real brokers through `responses` mocks built from
their wire shapes. A venue is a context manager; inside it, `venue.adapter` talks to the fake.
"""

from __future__ import annotations

import importlib
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from brokers.types import Bracket, ListScope, OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from brokers.errors import BrokerRejected, OrderNotFound

pytestmark = pytest.mark.django_db

VENUES = ["sim", "alpaca", "kis", "upbit"]


@pytest.fixture(params=VENUES)
def venue(request, db):
    module = importlib.import_module(f"tests.brokers.venues.{request.param}")
    with module.Venue() as v:
        yield v


def order(venue, **overrides) -> OrderRequest:
    fields = dict(asset_class=venue.asset_class, symbol=venue.symbol, side=Side.BUY, qty=venue.qty,
                  order_type=OrderType.LIMIT, time_in_force=venue.time_in_force,
                  broker_client_id=uuid.uuid4().hex, limit_price=venue.price_below_market)
    fields.update(overrides)
    return OrderRequest(**fields)


def test_limit_order_away_from_the_market_rests_as_accepted(venue):
    placed = venue.adapter.place_order(order(venue))
    assert placed.broker_order_id
    assert placed.status == OrderStatus.ACCEPTED
    assert placed.symbol == venue.symbol and placed.side == Side.BUY and placed.order_type == OrderType.LIMIT
    assert placed.qty == venue.qty and placed.filled_qty == 0 and placed.avg_fill_price is None
    assert placed.limit_price == venue.price_below_market
    assert placed.submitted_at.tzinfo is not None and placed.submitted_at.utcoffset() == timedelta(0)


def test_get_returns_the_placed_order(venue):
    placed = venue.adapter.place_order(order(venue))
    got = venue.adapter.get_order(placed.broker_order_id, symbol=venue.symbol)
    assert got.broker_order_id == placed.broker_order_id
    assert got.status == OrderStatus.ACCEPTED and got.qty == venue.qty


def test_list_with_status_scope_finds_open_orders_only_under_open(venue):
    placed = venue.adapter.place_order(order(venue))
    open_ids = {o.broker_order_id for o in venue.adapter.list_orders(scope=ListScope.OPEN)}
    closed_ids = {o.broker_order_id for o in venue.adapter.list_orders(scope=ListScope.CLOSED)}
    assert placed.broker_order_id in open_ids
    assert placed.broker_order_id not in closed_ids


def test_cancel_open_order_then_get_shows_canceled(venue):
    placed = venue.adapter.place_order(order(venue))
    venue.adapter.cancel_order(placed.broker_order_id, symbol=venue.symbol)
    got = venue.adapter.get_order(placed.broker_order_id, symbol=venue.symbol)
    assert got.status == OrderStatus.CANCELED
    closed_ids = {o.broker_order_id for o in venue.adapter.list_orders(scope=ListScope.CLOSED)}
    assert placed.broker_order_id in closed_ids


def test_cancelling_a_final_order_is_broker_rejected(venue):
    placed = venue.adapter.place_order(order(venue))
    venue.adapter.cancel_order(placed.broker_order_id, symbol=venue.symbol)
    with pytest.raises(BrokerRejected):
        venue.adapter.cancel_order(placed.broker_order_id, symbol=venue.symbol)


def test_unknown_order_is_order_not_found(venue):
    with pytest.raises(OrderNotFound):
        venue.adapter.get_order(venue.unknown_order_id, symbol=venue.symbol)


def test_market_buy_fills_and_shows_in_positions(venue):
    placed = venue.adapter.place_order(order(venue, order_type=OrderType.MARKET, limit_price=None,
                                             time_in_force=venue.market_time_in_force))
    got = venue.adapter.get_order(placed.broker_order_id, symbol=venue.symbol)
    assert got.status == OrderStatus.FILLED
    assert got.filled_qty == venue.qty and got.avg_fill_price == venue.price
    held = {p.symbol: p for p in venue.adapter.positions()}
    assert venue.symbol in held
    assert held[venue.symbol].qty >= venue.qty and held[venue.symbol].side == "LONG"


def test_account_reports_equity_cash_and_buying_power_in_its_currency(venue):
    acct = venue.adapter.account()
    assert acct.currency == venue.currency == venue.adapter.currency
    assert isinstance(acct.equity, Decimal) and acct.equity > 0
    assert isinstance(acct.cash, Decimal) and isinstance(acct.buying_power, Decimal)
    assert acct.as_of.utcoffset() == timedelta(0)


def test_stop_order_is_placed_where_supported_else_broker_rejected(venue):
    stop = order(venue, order_type=OrderType.STOP, limit_price=None, stop_price=venue.price_above_market)
    if venue.supports_stop:
        assert venue.adapter.place_order(stop).status in (OrderStatus.ACCEPTED, OrderStatus.PENDING)
    else:
        with pytest.raises(BrokerRejected, match="stop"):
            venue.adapter.place_order(stop)


def test_find_order_finds_a_placed_order(venue):
    req = order(venue)
    before = datetime.now(UTC) - timedelta(seconds=1)
    placed = venue.adapter.place_order(req)
    found = venue.adapter.find_order(req, submitted_at=before)
    assert found is not None and found.broker_order_id == placed.broker_order_id


def test_a_resend_under_the_same_client_id_never_makes_a_second_order_where_the_broker_has_client_ids(venue):
    # SPEC.md "When the broker fails during a placement": the service re-sends a lost order under the
    # same client id only where the adapter says the broker enforces it (client_ids).
    assert isinstance(venue.adapter.client_ids, bool)
    if not venue.adapter.client_ids:
        pytest.skip("no client ids at this broker (KIS): the service never re-sends")
    req = order(venue)
    placed = venue.adapter.place_order(req)
    again = venue.adapter.place_order(req)
    assert again.broker_order_id == placed.broker_order_id
    assert [o.broker_order_id for o in venue.adapter.list_orders(scope=ListScope.OPEN)] == [placed.broker_order_id]


def test_absence_is_settled_only_by_the_adapters_rule_never_at_once(venue):
    now = datetime.now(UTC)
    assert venue.adapter.absence_settled(submitted_at=now, now=now) is False


def test_latest_price_is_a_decimal(venue):
    assert venue.adapter.latest_price(venue.symbol) == venue.price


def test_a_bracket_reports_its_legs_as_orders_of_their_own_or_is_refused(venue):
    """Where the broker has brackets, a filled (sim) or just placed (Alpaca) bracket order carries its
    take-profit limit leg and stop-loss stop leg, on the other side, each readable by its own id."""
    take_profit, stop_loss = venue.price_above_market * 2, venue.price_below_market
    request = order(venue, limit_price=venue.price_above_market,
                    bracket=Bracket(take_profit=take_profit, stop_loss=stop_loss))
    try:
        placed = venue.adapter.place_order(request)
    except BrokerRejected as refused:  # KIS and Upbit have no brackets, and say so
        assert "bracket" in refused.detail.lower()
        return
    take, stop = placed.legs
    assert (take.order_type, take.limit_price, take.side, take.qty) == (OrderType.LIMIT, take_profit, Side.SELL, venue.qty)
    assert (stop.order_type, stop.stop_price, stop.side, stop.qty) == (OrderType.STOP, stop_loss, Side.SELL, venue.qty)
    assert {take.status, stop.status} == {OrderStatus.ACCEPTED}
    for leg in (take, stop):
        assert venue.adapter.get_order(leg.broker_order_id).broker_order_id == leg.broker_order_id
    listed = {o.broker_order_id: o for o in venue.adapter.list_orders(scope=ListScope.ALL)}
    assert listed[placed.broker_order_id].legs == placed.legs
    assert take.broker_order_id not in listed and stop.broker_order_id not in listed  # nested, not on their own
