"""The simulator (SPEC.md "The simulator"), through SimAdapter and set_quote, on the test database.

Prices are small round numbers: BTC/USD is quoted at 100 and accounts start with 10000 USD.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from brokers import sim_exchange
from brokers.models import BrokerAccount, SimAccount, SimOrder
from brokers.registry import build_adapter
from brokers.sim_exchange import set_quote
from brokers.types import Bracket, ListScope, OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from brokers import calendars
from brokers.errors import BrokerRejected, CredentialsRefused, InsufficientFunds, OrderNotFound
from tests.factories import BrokerAccountFactory

pytestmark = pytest.mark.django_db

TUESDAY_NOON_UTC = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # a crypto day; NYSE opens 14:30, closes 21:00 UTC


# --- how these tests build things -------------------------------------------------------------

def make_connection(asset_class="crypto", starting_cash="10000") -> BrokerAccount:
    credentials = {} if starting_cash is None else {"starting_cash": starting_cash}
    user = get_user_model().objects.create_user(f"sim-{uuid.uuid4().hex[:12]}")  # no password: no slow hashing
    return BrokerAccountFactory(user=user, asset_class=asset_class, credentials=credentials)


def make_sim(asset_class="crypto", starting_cash="10000"):
    return build_adapter(make_connection(asset_class, starting_cash))


@pytest.fixture
def sim():
    set_quote("crypto", "BTC/USD", "100")
    return make_sim()


def order(**fields) -> OrderRequest:
    values = dict(asset_class="crypto", symbol="BTC/USD", side=Side.BUY, qty=D("1"), order_type=OrderType.LIMIT,
                  time_in_force=TimeInForce.GTC, broker_client_id=uuid.uuid4().hex, limit_price=D("95"))
    values.update(fields)
    return OrderRequest(**values)


def market(side=Side.BUY, qty="1", **fields) -> OrderRequest:
    return order(side=side, qty=D(qty), order_type=OrderType.MARKET, limit_price=None, **fields)


def limit(price, side=Side.BUY, qty="1", **fields) -> OrderRequest:
    return order(side=side, qty=D(qty), limit_price=D(price), **fields)


def stop(price, side=Side.BUY, qty="1", stop_limit=None, **fields) -> OrderRequest:
    return order(side=side, qty=D(qty), order_type=OrderType.STOP, limit_price=None, stop_price=D(price),
                 stop_limit_price=None if stop_limit is None else D(stop_limit), **fields)


def status(sim, placed) -> OrderStatus:
    return sim.get_order(placed.broker_order_id).status


def held(sim) -> dict:
    return {p.symbol: p for p in sim.positions()}


def legs_of(placed) -> dict[str, SimOrder]:
    """The bracket legs of a parent, by order type: limit = take-profit, stop = stop-loss."""
    return {leg.order_type: leg for leg in SimOrder.objects.filter(parent__broker_order_id=placed.broker_order_id)}


@pytest.fixture
def fresh_calendars():
    """Calendars built under the travelled date, so that the test holds whatever today is."""
    calendars.reset_calendars()
    yield
    calendars.reset_calendars()


# --- market orders ----------------------------------------------------------------------------

def test_market_buy_fills_at_once_at_the_quote(sim):
    placed = sim.place_order(market(qty="2"))
    assert placed.status == OrderStatus.FILLED
    assert placed.filled_qty == 2 and placed.avg_fill_price == 100


@pytest.mark.parametrize("request_", [market(symbol="NOPE/USD"), limit("1", symbol="NOPE/USD")])
def test_order_for_a_symbol_without_a_quote_is_broker_rejected_saying_so(sim, request_):
    with pytest.raises(BrokerRejected, match="no simulator quote for NOPE/USD; set one with manage.py sim_quote"):
        sim.place_order(request_)


def test_symbol_longer_than_32_characters_is_broker_rejected(sim):
    with pytest.raises(BrokerRejected, match="symbol must be 1 to 32 characters"):
        sim.place_order(market(symbol="X" * 33))


def test_quote_of_another_asset_class_does_not_price_an_order(sim):
    set_quote("us_equity", "AAPL", "188.20")
    with pytest.raises(BrokerRejected, match="no simulator quote for AAPL"):
        sim.place_order(market(symbol="AAPL"))


# --- limit orders -----------------------------------------------------------------------------

def test_marketable_buy_limit_fills_at_once_at_the_quote(sim):
    placed = sim.place_order(limit("105"))
    assert placed.status == OrderStatus.FILLED and placed.avg_fill_price == 100


def test_marketable_sell_limit_fills_at_once_at_the_quote(sim):
    sim.place_order(market(qty="1"))
    placed = sim.place_order(limit("95", side=Side.SELL))
    assert placed.status == OrderStatus.FILLED and placed.avg_fill_price == 100


def test_buy_limit_below_the_quote_rests_as_accepted(sim):
    placed = sim.place_order(limit("95"))
    assert placed.status == OrderStatus.ACCEPTED and placed.filled_qty == 0 and placed.avg_fill_price is None


def test_resting_buy_limit_fills_at_its_limit_price_when_a_quote_crosses_it(sim):
    placed = sim.place_order(limit("95"))
    set_quote("crypto", "BTC/USD", "90")
    got = sim.get_order(placed.broker_order_id)
    assert got.status == OrderStatus.FILLED and got.filled_qty == 1 and got.avg_fill_price == 95


def test_resting_sell_limit_fills_at_its_limit_price_when_a_quote_crosses_it(sim):
    sim.place_order(market(qty="1"))
    placed = sim.place_order(limit("110", side=Side.SELL))
    set_quote("crypto", "BTC/USD", "120")
    got = sim.get_order(placed.broker_order_id)
    assert got.status == OrderStatus.FILLED and got.avg_fill_price == 110


def test_quote_that_does_not_reach_a_resting_limit_leaves_it_accepted(sim):
    placed = sim.place_order(limit("95"))
    assert set_quote("crypto", "BTC/USD", "96") == 0
    assert status(sim, placed) == OrderStatus.ACCEPTED


def test_resting_limit_fills_when_the_quote_touches_its_price(sim):
    placed = sim.place_order(limit("95"))
    set_quote("crypto", "BTC/USD", "95")
    assert status(sim, placed) == OrderStatus.FILLED


# --- stop and stop-limit orders ---------------------------------------------------------------

def test_buy_stop_rests_while_the_quote_is_below_the_stop(sim):
    placed = sim.place_order(stop("110"))
    set_quote("crypto", "BTC/USD", "109")
    assert placed.status == OrderStatus.ACCEPTED and status(sim, placed) == OrderStatus.ACCEPTED


def test_buy_stop_fills_at_the_quote_that_reaches_the_stop(sim):
    placed = sim.place_order(stop("110"))
    set_quote("crypto", "BTC/USD", "112")
    got = sim.get_order(placed.broker_order_id)
    assert got.status == OrderStatus.FILLED and got.avg_fill_price == 112


def test_sell_stop_fills_at_the_quote_that_falls_to_the_stop(sim):
    sim.place_order(market(qty="1"))
    placed = sim.place_order(stop("90", side=Side.SELL))
    set_quote("crypto", "BTC/USD", "91")
    assert status(sim, placed) == OrderStatus.ACCEPTED
    set_quote("crypto", "BTC/USD", "88")
    got = sim.get_order(placed.broker_order_id)
    assert got.status == OrderStatus.FILLED and got.avg_fill_price == 88


def test_stop_already_crossed_at_placement_triggers_at_once(sim):
    placed = sim.place_order(stop("95"))
    assert placed.status == OrderStatus.FILLED and placed.avg_fill_price == 100


def test_triggered_stop_limit_fills_at_the_quote_when_its_limit_is_marketable(sim):
    placed = sim.place_order(stop("110", stop_limit="112"))
    set_quote("crypto", "BTC/USD", "111")
    got = sim.get_order(placed.broker_order_id)
    assert got.status == OrderStatus.FILLED and got.avg_fill_price == 111


def test_stop_limit_triggered_past_its_limit_rests_as_a_limit(sim):
    placed = sim.place_order(stop("110", stop_limit="111"))
    set_quote("crypto", "BTC/USD", "115")
    got = sim.get_order(placed.broker_order_id)
    assert got.status == OrderStatus.ACCEPTED
    assert SimOrder.objects.get(broker_order_id=placed.broker_order_id).triggered


def test_triggered_stop_limit_fills_at_its_limit_when_the_quote_comes_back(sim):
    placed = sim.place_order(stop("110", stop_limit="111"))
    set_quote("crypto", "BTC/USD", "115")
    set_quote("crypto", "BTC/USD", "109")  # below the stop again: a triggered stop stays triggered
    got = sim.get_order(placed.broker_order_id)
    assert got.status == OrderStatus.FILLED and got.avg_fill_price == 111


def test_stop_limit_is_reported_as_a_stop_carrying_its_stop_limit_price(sim):
    placed = sim.place_order(stop("110", stop_limit="111"))
    assert placed.order_type == OrderType.STOP
    assert placed.stop_price == 110 and placed.stop_limit_price == 111 and placed.limit_price is None


def test_triggered_stop_buy_whose_cost_exceeds_buying_power_is_canceled(sim):
    placed = sim.place_order(stop("110", qty="90"))  # reserves 9900 of 10000
    set_quote("crypto", "BTC/USD", "120")  # 90 x 120 = 10800
    assert status(sim, placed) == OrderStatus.CANCELED
    acct = sim.account()
    assert acct.cash == 10000 and acct.buying_power == 10000 and held(sim) == {}


# --- time in force ----------------------------------------------------------------------------

@pytest.mark.parametrize("tif", [TimeInForce.IOC, TimeInForce.FOK])
def test_ioc_and_fok_limit_that_cannot_fill_at_once_is_canceled(sim, tif):
    placed = sim.place_order(limit("95", time_in_force=tif))
    assert placed.status == OrderStatus.CANCELED and placed.filled_qty == 0
    assert sim.account().buying_power == 10000


@pytest.mark.parametrize("tif", [TimeInForce.IOC, TimeInForce.FOK])
def test_ioc_and_fok_limit_that_can_fill_at_once_fills_completely(sim, tif):
    placed = sim.place_order(limit("105", qty="3", time_in_force=tif))
    assert placed.status == OrderStatus.FILLED and placed.filled_qty == 3


def test_ioc_stop_that_is_not_triggered_at_once_is_canceled(sim):
    placed = sim.place_order(stop("110", time_in_force=TimeInForce.IOC))
    assert placed.status == OrderStatus.CANCELED


@pytest.mark.parametrize("tif", [TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK])
def test_market_order_fills_whatever_its_time_in_force(sim, tif):
    assert sim.place_order(market(time_in_force=tif)).status == OrderStatus.FILLED


def test_gtc_limit_is_still_open_the_next_day(sim):
    with time_machine.travel(TUESDAY_NOON_UTC, tick=False) as traveller:
        placed = sim.place_order(limit("95"))
        traveller.move_to(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
        assert status(sim, placed) == OrderStatus.ACCEPTED


def test_crypto_day_order_is_open_until_the_end_of_the_utc_day(sim):
    with time_machine.travel(TUESDAY_NOON_UTC, tick=False) as traveller:
        placed = sim.place_order(limit("95", time_in_force=TimeInForce.DAY))
        traveller.move_to(datetime(2026, 11, 24, 23, 59, 59, tzinfo=UTC))
        assert status(sim, placed) == OrderStatus.ACCEPTED


def test_crypto_day_order_expires_at_the_end_of_the_utc_day(sim):
    with time_machine.travel(TUESDAY_NOON_UTC, tick=False) as traveller:
        placed = sim.place_order(limit("95", time_in_force=TimeInForce.DAY))
        traveller.move_to(datetime(2026, 11, 25, 0, 0, tzinfo=UTC))
        assert status(sim, placed) == OrderStatus.EXPIRED


def test_us_equity_day_order_expires_at_the_nyse_close(fresh_calendars):
    set_quote("us_equity", "AAPL", "188.20")
    aapl = make_sim("us_equity")
    with time_machine.travel(datetime(2026, 11, 24, 15, 0, tzinfo=UTC), tick=False) as traveller:
        placed = aapl.place_order(limit("180", symbol="AAPL", asset_class="us_equity",
                                        time_in_force=TimeInForce.DAY))
        traveller.move_to(datetime(2026, 11, 24, 20, 59, tzinfo=UTC))
        assert status(aapl, placed) == OrderStatus.ACCEPTED
        traveller.move_to(datetime(2026, 11, 24, 21, 0, tzinfo=UTC))  # 16:00 New York
        assert status(aapl, placed) == OrderStatus.EXPIRED


def test_us_equity_day_order_placed_after_the_close_lives_until_the_next_close(fresh_calendars):
    set_quote("us_equity", "AAPL", "188.20")
    aapl = make_sim("us_equity")
    with time_machine.travel(datetime(2026, 11, 24, 22, 0, tzinfo=UTC), tick=False) as traveller:
        placed = aapl.place_order(limit("180", symbol="AAPL", asset_class="us_equity",
                                        time_in_force=TimeInForce.DAY))
        traveller.move_to(datetime(2026, 11, 25, 20, 59, tzinfo=UTC))
        assert status(aapl, placed) == OrderStatus.ACCEPTED
        traveller.move_to(datetime(2026, 11, 25, 21, 0, tzinfo=UTC))
        assert status(aapl, placed) == OrderStatus.EXPIRED


def test_expiry_releases_the_reserved_cash(sim):
    with time_machine.travel(TUESDAY_NOON_UTC, tick=False) as traveller:
        sim.place_order(limit("95", qty="10", time_in_force=TimeInForce.DAY))
        assert sim.account().buying_power == 10000 - 950
        traveller.move_to(datetime(2026, 11, 25, 0, 0, 1, tzinfo=UTC))
        assert sim.account().buying_power == 10000


def test_set_quote_expires_due_orders_before_matching_them(sim):
    with time_machine.travel(TUESDAY_NOON_UTC, tick=False) as traveller:
        placed = sim.place_order(limit("95", time_in_force=TimeInForce.DAY))
        traveller.move_to(datetime(2026, 11, 25, 0, 0, 1, tzinfo=UTC))
        assert set_quote("crypto", "BTC/USD", "90") == 1
    assert status(sim, placed) == OrderStatus.EXPIRED and held(sim) == {}


# --- brackets ---------------------------------------------------------------------------------

def bracketed(price="95", take="110", stop_loss="90", stop_loss_limit=None, **fields) -> OrderRequest:
    return limit(price, bracket=Bracket(take_profit=D(take), stop_loss=D(stop_loss),
                                        stop_loss_limit=None if stop_loss_limit is None else D(stop_loss_limit)),
                 **fields)


def test_bracket_legs_go_live_only_when_the_parent_fills(sim):
    placed = sim.place_order(bracketed())
    assert legs_of(placed) == {}
    set_quote("crypto", "BTC/USD", "95")
    legs = legs_of(placed)
    assert {t: (leg.side, leg.qty, leg.status) for t, leg in legs.items()} == {
        "limit": ("sell", 1, "accepted"), "stop": ("sell", 1, "accepted")}
    assert legs["limit"].limit_price == 110 and legs["stop"].stop_price == 90


def test_take_profit_fill_cancels_the_stop_loss(sim):
    placed = sim.place_order(bracketed())
    set_quote("crypto", "BTC/USD", "95")
    set_quote("crypto", "BTC/USD", "111")
    legs = legs_of(placed)
    assert legs["limit"].status == "filled" and legs["limit"].avg_fill_price == 110
    assert legs["stop"].status == "canceled"
    assert held(sim) == {} and sim.account().cash == 10000 - 95 + 110


def test_stop_loss_fill_cancels_the_take_profit(sim):
    placed = sim.place_order(bracketed())
    set_quote("crypto", "BTC/USD", "95")
    set_quote("crypto", "BTC/USD", "89")
    legs = legs_of(placed)
    assert legs["stop"].status == "filled" and legs["stop"].avg_fill_price == 89
    assert legs["limit"].status == "canceled"
    assert held(sim) == {} and sim.account().cash == 10000 - 95 + 89


def test_stop_loss_with_stop_loss_limit_rests_as_a_limit_once_triggered(sim):
    placed = sim.place_order(bracketed(stop_loss_limit="89"))
    set_quote("crypto", "BTC/USD", "95")
    set_quote("crypto", "BTC/USD", "85")  # through the stop (90) and below its limit (89)
    legs = legs_of(placed)
    assert legs["stop"].status == "accepted" and legs["stop"].triggered
    assert held(sim)["BTC/USD"].qty == 1


def test_stop_loss_already_crossed_when_the_parent_fills_sells_at_once(sim):
    placed = sim.place_order(bracketed())
    set_quote("crypto", "BTC/USD", "80")  # the parent fills at its limit 95; the quote is below the stop 90
    legs = legs_of(placed)
    assert legs["stop"].status == "filled" and legs["stop"].avg_fill_price == 80
    assert held(sim) == {}


def test_filled_parent_stays_filled_while_its_legs_work(sim):
    placed = sim.place_order(bracketed())
    set_quote("crypto", "BTC/USD", "95")
    set_quote("crypto", "BTC/USD", "111")
    got = sim.get_order(placed.broker_order_id)
    assert got.status == OrderStatus.FILLED and got.avg_fill_price == 95


def test_bracket_legs_are_listed_nested_in_their_parent_take_profit_first(sim):
    placed = sim.place_order(bracketed())
    assert [o.legs for o in sim.list_orders()] == [()]  # no legs before the entry fills
    set_quote("crypto", "BTC/USD", "95")
    listed = sim.list_orders()
    assert [o.broker_order_id for o in listed] == [placed.broker_order_id]
    take, stop_loss = listed[0].legs
    assert (take.order_type, take.limit_price, take.side, take.status) == (OrderType.LIMIT, 110, Side.SELL, "accepted")
    assert (stop_loss.order_type, stop_loss.stop_price, stop_loss.status) == (OrderType.STOP, 90, "accepted")
    assert sim.get_order(placed.broker_order_id).legs == listed[0].legs


def test_bracket_leg_is_read_and_canceled_by_its_own_id(sim):
    placed = sim.place_order(bracketed())
    set_quote("crypto", "BTC/USD", "95")
    legs = legs_of(placed)
    assert sim.get_order(legs["limit"].broker_order_id).limit_price == 110
    sim.cancel_order(legs["limit"].broker_order_id)
    assert status(sim, legs["limit"]) == OrderStatus.CANCELED and status(sim, legs["stop"]) == OrderStatus.ACCEPTED
    assert status(sim, placed) == OrderStatus.FILLED


def test_cancelling_the_take_profit_leaves_the_stop_loss_holding_the_shares(sim):
    placed = sim.place_order(bracketed())
    set_quote("crypto", "BTC/USD", "95")
    sim.cancel_order(legs_of(placed)["limit"].broker_order_id)
    with pytest.raises(InsufficientFunds, match="no shorting"):  # the 1 held is still behind the stop-loss
        sim.place_order(market(side=Side.SELL, qty="1"))
    set_quote("crypto", "BTC/USD", "89")
    assert legs_of(placed)["stop"].status == "filled" and held(sim) == {}


def test_cancelling_the_stop_loss_of_a_sell_bracket_keeps_the_cash_behind_the_take_profit(sim):
    sim.place_order(market(qty="1"))
    placed = sim.place_order(bracketed(price="105", take="95", stop_loss="115", side=Side.SELL))
    set_quote("crypto", "BTC/USD", "106")
    reserved = SimAccount.objects.get().reserved_cash
    assert reserved == 115  # the pair reserves once, at its higher price
    sim.cancel_order(legs_of(placed)["stop"].broker_order_id)
    assert SimAccount.objects.get().reserved_cash == reserved
    sim.cancel_order(legs_of(placed)["limit"].broker_order_id)
    assert SimAccount.objects.get().reserved_cash == 0


def test_cancelling_an_unfilled_bracket_parent_means_no_legs_ever(sim):
    placed = sim.place_order(bracketed())
    sim.cancel_order(placed.broker_order_id)
    set_quote("crypto", "BTC/USD", "95")
    assert status(sim, placed) == OrderStatus.CANCELED and legs_of(placed) == {} and held(sim) == {}


def test_cancelling_a_filled_bracket_parent_cancels_its_open_legs(sim):
    placed = sim.place_order(bracketed())
    set_quote("crypto", "BTC/USD", "95")
    sim.cancel_order(placed.broker_order_id)
    assert {leg.status for leg in legs_of(placed).values()} == {"canceled"}
    assert status(sim, placed) == OrderStatus.FILLED


def test_bracket_legs_hold_the_position_once_for_the_pair(sim):
    sim.place_order(bracketed())
    set_quote("crypto", "BTC/USD", "95")
    sim.place_order(market(qty="1"))  # 2 held, 1 of them behind the legs
    assert sim.place_order(market(side=Side.SELL, qty="1")).status == OrderStatus.FILLED
    with pytest.raises(InsufficientFunds, match="no shorting"):
        sim.place_order(market(side=Side.SELL, qty="1"))


def test_sell_bracket_buys_back_at_its_take_profit(sim):
    sim.place_order(market(qty="1"))
    placed = sim.place_order(bracketed(price="105", take="95", stop_loss="115", side=Side.SELL))
    set_quote("crypto", "BTC/USD", "106")  # the sell fills at 105
    assert held(sim) == {}
    set_quote("crypto", "BTC/USD", "94")
    legs = legs_of(placed)
    assert legs["limit"].status == "filled" and legs["limit"].side == "buy" and legs["stop"].status == "canceled"
    assert held(sim)["BTC/USD"].qty == 1 and held(sim)["BTC/USD"].avg_entry_price == 95


def test_bracket_take_profit_on_the_wrong_side_is_broker_rejected(sim):
    with pytest.raises(BrokerRejected, match="take_profit"):
        sim.place_order(bracketed(take="90", stop_loss="110"))


# --- cash -------------------------------------------------------------------------------------

def test_resting_buy_limit_reserves_qty_times_limit_from_buying_power(sim):
    sim.place_order(limit("95", qty="10"))
    acct = sim.account()
    assert acct.cash == 10000 and acct.buying_power == 10000 - 950


@pytest.mark.parametrize("request_,reserved", [(stop("110", qty="10"), 1100),
                                              (stop("110", qty="10", stop_limit="112"), 1120)])
def test_resting_stop_buy_reserves_qty_times_its_stop_or_stop_limit_price(sim, request_, reserved):
    sim.place_order(request_)
    assert sim.account().buying_power == 10000 - reserved


def test_cancel_releases_the_reserved_cash(sim):
    placed = sim.place_order(limit("95", qty="10"))
    sim.cancel_order(placed.broker_order_id)
    assert sim.account().buying_power == 10000


def test_fill_spends_qty_times_fill_price_and_releases_the_reservation(sim):
    placed = sim.place_order(limit("95", qty="10"))
    set_quote("crypto", "BTC/USD", "90")
    assert status(sim, placed) == OrderStatus.FILLED
    acct = sim.account()
    assert acct.cash == 10000 - 950 and acct.buying_power == acct.cash


def test_sell_fill_adds_its_proceeds_to_cash(sim):
    sim.place_order(market(qty="10"))
    set_quote("crypto", "BTC/USD", "120")
    sim.place_order(market(side=Side.SELL, qty="4"))
    assert sim.account().cash == 10000 - 1000 + 480


def test_buy_beyond_buying_power_is_insufficient_funds_naming_both_amounts(sim):
    with pytest.raises(InsufficientFunds, match=r"^funds: buying power 10000.00 USD, order needs 10100.00$"):
        sim.place_order(market(qty="101"))


def test_buy_within_cash_but_beyond_what_open_orders_reserve_is_insufficient_funds(sim):
    sim.place_order(limit("95", qty="100"))  # 9500 reserved
    with pytest.raises(InsufficientFunds, match="buying power 500.00 USD, order needs 600.00"):
        sim.place_order(market(qty="6"))


def test_refused_buy_changes_nothing(sim):
    with pytest.raises(InsufficientFunds):
        sim.place_order(limit("95", qty="200"))
    assert sim.list_orders() == [] and sim.account().buying_power == 10000


# --- no shorting ------------------------------------------------------------------------------

def test_sell_without_a_position_is_insufficient_funds_no_shorting(sim):
    with pytest.raises(InsufficientFunds, match=r"no shorting: holds 0.00, sell 0.50"):
        sim.place_order(market(side=Side.SELL, qty="0.5"))


def test_sell_of_more_than_is_held_is_insufficient_funds(sim):
    sim.place_order(market(qty="0.1"))
    with pytest.raises(InsufficientFunds, match=r"no shorting: holds 0.10, sell 0.50"):
        sim.place_order(market(side=Side.SELL, qty="0.5"))


def test_sell_of_shares_already_held_by_an_open_sell_is_insufficient_funds(sim):
    sim.place_order(market(qty="1"))
    sim.place_order(limit("150", side=Side.SELL, qty="1"))
    with pytest.raises(InsufficientFunds, match="1.00 already held by open sell orders"):
        sim.place_order(limit("160", side=Side.SELL, qty="1"))


def test_cancelling_a_sell_frees_its_shares(sim):
    sim.place_order(market(qty="1"))
    resting = sim.place_order(limit("150", side=Side.SELL, qty="1"))
    sim.cancel_order(resting.broker_order_id)
    assert sim.place_order(market(side=Side.SELL, qty="1")).status == OrderStatus.FILLED


# --- positions --------------------------------------------------------------------------------

def test_average_entry_price_is_weighted_over_buys(sim):
    sim.place_order(market(qty="1"))
    set_quote("crypto", "BTC/USD", "130")
    sim.place_order(market(qty="2"))
    position = held(sim)["BTC/USD"]
    assert position.qty == 3 and position.avg_entry_price == 120


def test_sell_leaves_the_average_entry_price_unchanged(sim):
    sim.place_order(market(qty="2"))
    set_quote("crypto", "BTC/USD", "130")
    sim.place_order(market(side=Side.SELL, qty="1"))
    position = held(sim)["BTC/USD"]
    assert position.qty == 1 and position.avg_entry_price == 100


def test_position_sold_to_zero_disappears(sim):
    sim.place_order(market(qty="2"))
    sim.place_order(market(side=Side.SELL, qty="2"))
    assert sim.positions() == []


def test_position_is_priced_at_the_quote_with_unrealized_pnl(sim):
    sim.place_order(market(qty="0.5"))
    set_quote("crypto", "BTC/USD", "110")
    position = held(sim)["BTC/USD"]
    assert position.current_price == 110
    assert position.unrealized_pnl == D("5") and position.unrealized_pnl_pct == D("0.1")
    assert position.side == "LONG" and position.currency == "USD"


def test_unrealized_pnl_is_negative_below_the_average_entry(sim):
    sim.place_order(market(qty="2"))
    set_quote("crypto", "BTC/USD", "75")
    position = held(sim)["BTC/USD"]
    assert position.unrealized_pnl == D("-50") and position.unrealized_pnl_pct == D("-0.25")


# --- account ----------------------------------------------------------------------------------

def test_equity_is_cash_plus_positions_at_the_quote(sim):
    sim.place_order(market(qty="10"))
    set_quote("crypto", "BTC/USD", "150")
    acct = sim.account()
    assert acct.cash == 9000 and acct.equity == 9000 + 1500


def test_new_account_starts_with_the_settings_cash_in_its_currency(settings, equity_orders):
    equity_orders.SIM_STARTING_CASH_KRW = D("100000000")
    acct = make_sim("kr_equity", starting_cash=None).account()
    assert acct.currency == "KRW" and acct.cash == 100000000 and acct.equity == 100000000


def test_starting_cash_from_the_credentials_overrides_the_settings():
    acct = make_sim("us_equity", starting_cash="2500").account()
    assert acct.currency == "USD" and acct.cash == 2500


@pytest.mark.parametrize("starting_cash", ["lots", "-5", "0"])
def test_starting_cash_that_is_not_a_positive_amount_is_refused_like_bad_keys(starting_cash):
    with pytest.raises(CredentialsRefused, match="starting_cash"):
        make_sim("crypto", starting_cash=starting_cash).account()


def test_last_equity_is_the_starting_cash_on_the_first_day(sim):
    assert sim.account().last_equity == 10000


def test_last_equity_rolls_over_to_the_equity_at_the_first_read_of_a_new_utc_day(sim):
    with time_machine.travel(TUESDAY_NOON_UTC, tick=False) as traveller:
        sim.place_order(market(qty="10"))
        set_quote("crypto", "BTC/USD", "120")
        assert sim.account().last_equity == 10000  # the same day: unchanged
        traveller.move_to(datetime(2026, 11, 25, 0, 5, tzinfo=UTC))
        assert sim.account().last_equity == 9000 + 1200


def test_last_equity_holds_for_the_rest_of_the_day_after_rolling_over(sim):
    with time_machine.travel(TUESDAY_NOON_UTC, tick=False) as traveller:
        sim.place_order(market(qty="10"))
        traveller.move_to(datetime(2026, 11, 25, 0, 5, tzinfo=UTC))
        sim.account()
        set_quote("crypto", "BTC/USD", "50")
        acct = sim.account()
        assert acct.last_equity == 10000 and acct.equity == 9000 + 500


# --- ids, statuses, reads ---------------------------------------------------------------------

def test_cancelling_a_filled_order_is_broker_rejected_saying_it_is_filled(sim):
    placed = sim.place_order(market())
    with pytest.raises(BrokerRejected, match="order is already filled"):
        sim.cancel_order(placed.broker_order_id)


def test_cancelling_an_unknown_order_is_order_not_found(sim):
    with pytest.raises(OrderNotFound):
        sim.cancel_order("sim-nope")


def test_another_accounts_order_is_not_found(sim):
    placed = sim.place_order(limit("95"))
    other = make_sim()
    with pytest.raises(OrderNotFound):
        other.get_order(placed.broker_order_id)
    with pytest.raises(OrderNotFound):
        other.cancel_order(placed.broker_order_id)


def test_each_order_gets_a_fresh_sim_id(sim):
    ids = {sim.place_order(limit("95")).broker_order_id for _ in range(3)}
    assert len(ids) == 3 and all(i.startswith("sim-") for i in ids)


def test_repeated_broker_client_id_returns_the_existing_order(sim):
    first = sim.place_order(limit("95", broker_client_id="attempt-1"))
    again = sim.place_order(limit("95", broker_client_id="attempt-1"))
    assert again.broker_order_id == first.broker_order_id
    assert SimOrder.objects.count() == 1 and sim.account().buying_power == 10000 - 95


def test_repeated_broker_client_id_returns_the_existing_order_even_when_funds_no_longer_cover_it(sim):
    first = sim.place_order(limit("95", broker_client_id="attempt-1"))
    sim.place_order(limit("95", qty="100"))  # takes the rest of the buying power
    again = sim.place_order(limit("95", broker_client_id="attempt-1"))
    assert again.broker_order_id == first.broker_order_id and SimOrder.objects.count() == 2


def test_a_new_order_is_inserted_without_reading_the_accounts_orders_first(sim):
    sim.account()  # opens the simulator account
    account_id = SimAccount.objects.get().pk
    with CaptureQueriesContext(connection) as ctx:
        sim_exchange.place_order(account_id=account_id, request=limit("95"), asset_class="crypto")
    assert not [q["sql"] for q in ctx.captured_queries if q["sql"].startswith('SELECT "brokers_simorder"')]


def test_same_broker_client_id_in_two_accounts_makes_two_orders(sim):
    mine = sim.place_order(limit("95", broker_client_id="attempt-1"))
    theirs = make_sim().place_order(limit("95", broker_client_id="attempt-1"))
    assert mine.broker_order_id != theirs.broker_order_id


def test_find_order_finds_by_broker_client_id(sim):
    placed = sim.place_order(limit("95", broker_client_id="attempt-1"))
    found = sim.find_order(limit("95", broker_client_id="attempt-1"), submitted_at=placed.submitted_at)
    assert found.broker_order_id == placed.broker_order_id


def test_find_order_of_an_unplaced_attempt_is_none(sim):
    assert sim.find_order(limit("95"), submitted_at=datetime.now(UTC)) is None


def test_latest_price_is_the_quote(sim):
    assert sim.latest_price("BTC/USD") == 100


def test_latest_price_without_a_quote_is_broker_rejected(sim):
    with pytest.raises(BrokerRejected, match="no simulator quote for DOGE/USD; set one with manage.py sim_quote"):
        sim.latest_price("DOGE/USD")


def test_list_orders_is_newest_first(sim):
    with time_machine.travel(TUESDAY_NOON_UTC, tick=True):
        ids = [sim.place_order(limit("95")).broker_order_id for _ in range(3)]
    assert [o.broker_order_id for o in sim.list_orders()] == list(reversed(ids))


def test_list_orders_filters_by_scope(sim):
    resting = sim.place_order(limit("95"))
    filled = sim.place_order(market())
    assert [o.broker_order_id for o in sim.list_orders(scope=ListScope.OPEN)] == [resting.broker_order_id]
    assert [o.broker_order_id for o in sim.list_orders(scope=ListScope.CLOSED)] == [filled.broker_order_id]


def test_order_times_are_aware_utc(sim):
    placed = sim.place_order(limit("95"))
    assert placed.submitted_at.utcoffset().total_seconds() == 0 and placed.updated_at >= placed.submitted_at


def test_live_sim_connection_cannot_be_built():
    from brokers.adapters.sim import SimAdapter
    from brokers.errors import BrokerNotConfigured

    with pytest.raises(BrokerNotConfigured, match="paper-only"):
        SimAdapter(credentials={}, asset_class="crypto", live=True, connection_id=1)


# --- set_quote --------------------------------------------------------------------------------

def test_set_quote_fills_resting_orders_in_every_account(sim):
    other = make_sim()
    mine, theirs = sim.place_order(limit("95")), other.place_order(limit("97"))
    set_quote("crypto", "BTC/USD", "90")
    assert status(sim, mine) == status(other, theirs) == OrderStatus.FILLED


def test_set_quote_returns_how_many_orders_changed(sim):
    sim.place_order(limit("95"))
    sim.place_order(limit("92"))
    make_sim().place_order(limit("97"))
    assert set_quote("crypto", "BTC/USD", "93") == 2


def test_set_quote_leaves_the_same_symbol_of_another_asset_class_alone():
    set_quote("us_equity", "XYZ", "100")
    set_quote("kr_equity", "XYZ", "100")
    us, kr = make_sim("us_equity"), make_sim("kr_equity", starting_cash="1000000")
    mine = us.place_order(limit("95", symbol="XYZ", asset_class="us_equity"))
    theirs = kr.place_order(limit("95", symbol="XYZ", asset_class="kr_equity"))
    set_quote("kr_equity", "XYZ", "90")
    assert status(us, mine) == OrderStatus.ACCEPTED and status(kr, theirs) == OrderStatus.FILLED


@pytest.mark.parametrize("price", ["0", "-1", "abc", "NaN", "1.00000000001"])
def test_set_quote_refuses_a_price_that_is_not_a_positive_number(price):
    with pytest.raises(ValueError, match="price"):
        set_quote("crypto", "BTC/USD", price)


def test_set_quote_refuses_an_unknown_asset_class():
    with pytest.raises(ValueError):
        set_quote("bonds", "BTC/USD", "1")


# --- concurrency (PostgreSQL) -----------------------------------------------------------------

@pytest.mark.postgres
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL row locks and real concurrency")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("round_", range(5))
def test_two_simultaneous_buys_that_together_exceed_the_cash_get_one_fill_and_one_insufficient_funds(round_):
    set_quote("crypto", "BTC/USD", "100")
    conn = make_connection()
    build_adapter(conn).account()  # the account exists before the race
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def buy():
        try:
            adapter = build_adapter(BrokerAccount.objects.get(pk=conn.pk))
            adapter.account()
            start.wait()
            outcomes.append(adapter.place_order(market(qty="60")).status)
        except InsufficientFunds:
            outcomes.append("insufficient_funds")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=buy) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["filled", "insufficient_funds"]
    assert build_adapter(conn).account().cash == 10000 - 6000
