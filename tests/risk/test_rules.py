"""risk/rules.py: each rule on both sides of its threshold, judged on snapshots from a fake adapter.

FakeAdapter is a stand-in for the broker (the adapter is not under test here): it returns the
snapshots it was given and records every call.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from brokers.types import Account, AssetClass, Bracket, OrderRequest, OrderType, Position, Side, TimeInForce
from brokers import calendars
from brokers.errors import InsufficientFunds, MarketClosed, RiskRuleViolation
from risk.models import DailyBaseline
from risk.rules import (DailyLossRule, FundsRule, MarketHoursRule, RiskContext, RiskLimits, TradeRiskRule, pct,
                        qty_text)

D = Decimal
NYSE_OPEN = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # Wednesday 10:00 ET
THANKSGIVING = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
LIMITS = RiskLimits(max_trade_risk_pct=D("0.02"), unprotected_loss_pct=D("0.10"), daily_loss_limit_pct=D("0.05"))


@pytest.fixture(scope="module", autouse=True)
def calendars_built_on_a_fixed_day():
    calendars.reset_calendars()
    with time_machine.travel(datetime(2026, 11, 25, 12, 0, tzinfo=UTC), tick=False):
        yield
    calendars.reset_calendars()


class FakeAdapter:
    """Implements the snapshot reads of BrokerAdapter; records each call by name."""

    def __init__(self, *, equity="10342.10", buying_power="50000", last_equity=None, positions=(),
                 price="188.20", currency="USD", exchange="sim", error=None):
        self.exchange, self.currency = exchange, currency
        self._account = Account(equity=D(equity), buying_power=D(buying_power), cash=D(buying_power),
                                currency=currency, as_of=NYSE_OPEN,
                                last_equity=None if last_equity is None else D(last_equity))
        self._positions = [Position(symbol=symbol, qty=D(qty), avg_entry_price=D("1"), current_price=D("1"),
                                    unrealized_pnl=D(0), unrealized_pnl_pct=D(0), currency=currency)
                           for symbol, qty in positions]
        self._price = D(price)
        self.error = error
        self.calls: list[str] = []

    def _call(self, name):
        self.calls.append(name)
        if self.error is not None:
            raise self.error

    def account(self) -> Account:
        self._call("account")
        return self._account

    def positions(self) -> list[Position]:
        self._call("positions")
        return list(self._positions)

    def latest_price(self, symbol: str) -> Decimal:
        self._call("latest_price")
        return self._price


def order_request(*, side=Side.BUY, qty="5", symbol="AAPL", asset_class=AssetClass.US_EQUITY,
                  order_type=OrderType.LIMIT, limit_price="188.20", stop_price=None, stop_loss=None) -> OrderRequest:
    bracket = None
    if stop_loss is not None:
        take_profit = D(limit_price or stop_price or "1") * 2
        bracket = Bracket(take_profit=take_profit, stop_loss=D(stop_loss))
    return OrderRequest(asset_class=asset_class, symbol=symbol, side=side, qty=D(qty), order_type=order_type,
                        time_in_force=TimeInForce.DAY, broker_client_id=uuid.uuid4().hex,
                        limit_price=None if limit_price is None else D(limit_price),
                        stop_price=None if stop_price is None else D(stop_price), bracket=bracket)


def context(order: OrderRequest, adapter: FakeAdapter, *, now=NYSE_OPEN, limits=LIMITS, connection_id=1):
    return RiskContext(order=order, adapter=adapter, exchange=adapter.exchange, connection_id=connection_id,
                       now=now, limits=limits)


# --- market_hours --------------------------------------------------------------------------------

def test_market_hours_allows_us_equity_during_the_nyse_session():
    assert MarketHoursRule().evaluate(context(order_request(), FakeAdapter())).ok


def test_market_hours_refuses_us_equity_on_thanksgiving_naming_calendar_and_next_open():
    result = MarketHoursRule().evaluate(context(order_request(), FakeAdapter(), now=THANKSGIVING))
    assert isinstance(result.error, MarketClosed)
    assert result.error.detail == "market_hours: XNYS is closed; next open 2026-11-27T14:30:00Z"


def test_market_hours_denial_names_its_rule():
    result = MarketHoursRule().evaluate(context(order_request(), FakeAdapter(), now=THANKSGIVING))
    assert (result.name, result.ok, result.error.risk_rule) == ("market_hours", False, "market_hours")


def test_market_hours_refuses_kr_equity_outside_the_krx_session():
    order = order_request(asset_class=AssetClass.KR_EQUITY, symbol="005930", limit_price="70000")
    result = MarketHoursRule().evaluate(context(order, FakeAdapter(currency="KRW"),
                                                now=datetime(2026, 11, 25, 7, 0, tzinfo=UTC)))  # 16:00 KST
    assert result.error.detail == "market_hours: XKRX is closed; next open 2026-11-26T00:00:00Z"


@pytest.mark.parametrize("exchange", ["sim", "alpaca", "kis"])
def test_market_hours_applies_to_every_broker_the_simulator_included(exchange):
    result = MarketHoursRule().evaluate(context(order_request(), FakeAdapter(exchange=exchange), now=THANKSGIVING))
    assert not result.ok


@pytest.mark.parametrize("exchange", ["sim", "alpaca", "upbit"])
def test_market_hours_never_closes_crypto(exchange):
    order = order_request(asset_class=AssetClass.CRYPTO, symbol="BTC/USD", qty="0.01", limit_price="90000")
    assert MarketHoursRule().evaluate(context(order, FakeAdapter(exchange=exchange), now=THANKSGIVING)).ok


def test_market_hours_shows_the_close_while_open():
    result = MarketHoursRule().evaluate(context(order_request(), FakeAdapter(),
                                                now=datetime(2026, 11, 27, 15, 0, tzinfo=UTC)))
    assert result.numbers == {"calendar": "XNYS", "open": True, "closes_at": "2026-11-27T18:00:00Z",
                              "next_open": None}


def test_market_hours_beyond_the_calendar_horizon_raises_service_unavailable_naming_the_rule():
    with pytest.raises(calendars.CalendarUnavailable) as caught:
        MarketHoursRule().evaluate(context(order_request(), FakeAdapter(),
                                           now=datetime(2028, 1, 5, 15, 0, tzinfo=UTC)))
    assert caught.value.risk_rule == "market_hours"


def test_market_hours_makes_no_broker_call():
    adapter = FakeAdapter()
    MarketHoursRule().evaluate(context(order_request(), adapter, now=THANKSGIVING))
    assert adapter.calls == []


# --- funds ---------------------------------------------------------------------------------------

def test_funds_refuses_a_buy_whose_notional_exceeds_buying_power():
    result = FundsRule().evaluate(context(order_request(qty="5"), FakeAdapter(buying_power="940.99")))
    assert isinstance(result.error, InsufficientFunds)
    assert result.error.detail == "funds: notional 941.00 USD exceeds buying power 940.99 USD"


def test_funds_allows_a_buy_whose_notional_equals_buying_power():
    assert FundsRule().evaluate(context(order_request(qty="5"), FakeAdapter(buying_power="941.00"))).ok


def test_funds_prices_a_market_buy_at_the_latest_price():
    order = order_request(qty="10", order_type=OrderType.MARKET, limit_price=None)
    result = FundsRule().evaluate(context(order, FakeAdapter(price="100", buying_power="999.99")))
    assert (result.ok, result.numbers["notional"]) == (False, D("1000"))


def test_funds_prices_a_stop_buy_at_its_stop_price():
    order = order_request(qty="10", order_type=OrderType.STOP, limit_price=None, stop_price="90")
    result = FundsRule().evaluate(context(order, FakeAdapter(price="100", buying_power="900")))
    assert (result.ok, result.numbers["entry"]) == (True, D("90"))


@pytest.mark.parametrize("exchange", ["sim", "kis", "upbit"])
def test_funds_refuses_selling_more_than_held_where_shorting_is_not_allowed(exchange):
    order = order_request(side=Side.SELL, qty="0.50", symbol="BTC/USD", asset_class=AssetClass.CRYPTO)
    result = FundsRule().evaluate(context(order, FakeAdapter(exchange=exchange, positions=[("BTC/USD", "0.1")])))
    assert isinstance(result.error, InsufficientFunds)
    assert result.error.detail == "funds: no shorting: holds 0.10, sell 0.50"


def test_funds_refuses_a_sell_with_no_position_on_the_simulator():
    result = FundsRule().evaluate(context(order_request(side=Side.SELL, qty="1"), FakeAdapter()))
    assert result.error.detail == "funds: no shorting: holds 0.00, sell 1.00"


def test_funds_allows_selling_exactly_the_held_quantity():
    order = order_request(side=Side.SELL, qty="0.1", symbol="BTC/USD", asset_class=AssetClass.CRYPTO)
    assert FundsRule().evaluate(context(order, FakeAdapter(positions=[("BTC/USD", "0.1")]))).ok


def test_funds_lets_alpaca_decide_a_sell_of_more_than_held():
    order = order_request(side=Side.SELL, qty="0.50", symbol="BTC/USD", asset_class=AssetClass.CRYPTO)
    assert FundsRule().evaluate(context(order, FakeAdapter(exchange="alpaca", positions=[("BTC/USD", "0.1")]))).ok


def test_funds_denial_names_its_rule():
    result = FundsRule().evaluate(context(order_request(qty="5"), FakeAdapter(buying_power="10")))
    assert result.error.risk_rule == "funds"


# --- daily_loss ----------------------------------------------------------------------------------

def test_daily_loss_refuses_a_buy_when_equity_is_down_exactly_the_limit_from_last_equity():
    result = DailyLossRule().evaluate(context(order_request(), FakeAdapter(equity="9500", last_equity="10000")))
    assert isinstance(result.error, RiskRuleViolation)
    assert result.error.detail.startswith(
        "daily_loss: equity 9500.00 USD is down 5.00 % from the start-of-day 10000.00 (last_equity), limit 5.00 %")


def test_daily_loss_allows_a_buy_when_equity_is_down_just_under_the_limit():
    assert DailyLossRule().evaluate(context(order_request(), FakeAdapter(equity="9500.01", last_equity="10000"))).ok


def test_daily_loss_denial_names_its_rule():
    result = DailyLossRule().evaluate(context(order_request(), FakeAdapter(equity="9000", last_equity="10000")))
    assert result.error.risk_rule == "daily_loss"


def test_daily_loss_uses_the_limit_it_is_given():
    limits = RiskLimits(max_trade_risk_pct=D("0.02"), unprotected_loss_pct=D("0.10"), daily_loss_limit_pct=D("0.10"))
    result = DailyLossRule().evaluate(context(order_request(), FakeAdapter(equity="9400", last_equity="10000"),
                                              limits=limits))
    assert result.ok


@pytest.mark.django_db
def test_daily_loss_prefers_the_brokers_last_equity_over_a_stored_snapshot():
    DailyBaseline.objects.create(connection_id=1, day=NYSE_OPEN.date(), equity=D("9600"))
    result = DailyLossRule().evaluate(context(order_request(), FakeAdapter(equity="9400", last_equity="10000")))
    assert (result.ok, result.numbers["baseline"], result.numbers["baseline_source"]) == (
        False, D("10000"), "last_equity")


@pytest.mark.django_db
def test_daily_loss_without_last_equity_stores_the_first_snapshot_of_the_utc_day():
    DailyLossRule().evaluate(context(order_request(), FakeAdapter(equity="10000"), connection_id=7))
    assert DailyBaseline.objects.get(connection_id=7, day=NYSE_OPEN.date()).equity == D("10000")


@pytest.mark.django_db
def test_daily_loss_without_last_equity_refuses_a_buy_after_falling_from_the_first_snapshot():
    DailyLossRule().evaluate(context(order_request(), FakeAdapter(equity="10000"), connection_id=7))
    later = datetime(2026, 11, 25, 20, 0, tzinfo=UTC)
    result = DailyLossRule().evaluate(context(order_request(), FakeAdapter(equity="9500"), connection_id=7, now=later))
    assert (result.ok, result.numbers["baseline_source"], result.numbers["change_pct"]) == (
        False, "first_snapshot", D("-5.00"))


@pytest.mark.django_db
def test_daily_loss_takes_a_new_first_snapshot_on_the_next_utc_day():
    DailyLossRule().evaluate(context(order_request(), FakeAdapter(equity="10000"), connection_id=7))
    next_day = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    result = DailyLossRule().evaluate(context(order_request(), FakeAdapter(equity="9000"), connection_id=7,
                                              now=next_day))
    assert (result.ok, result.numbers["baseline"]) == (True, D("9000"))


@pytest.mark.django_db
def test_daily_loss_keeps_one_first_snapshot_per_connection():
    DailyLossRule().evaluate(context(order_request(), FakeAdapter(equity="10000"), connection_id=7))
    result = DailyLossRule().evaluate(context(order_request(), FakeAdapter(equity="9000"), connection_id=8))
    assert (result.ok, result.numbers["baseline"]) == (True, D("9000"))


def test_daily_loss_allows_a_sell_that_only_reduces_a_long_position():
    order = order_request(side=Side.SELL, qty="3")
    adapter = FakeAdapter(equity="9000", last_equity="10000", positions=[("AAPL", "5")])
    assert DailyLossRule().evaluate(context(order, adapter)).ok


def test_daily_loss_allows_a_buy_that_only_covers_a_short_position():
    adapter = FakeAdapter(exchange="alpaca", equity="9000", last_equity="10000", positions=[("AAPL", "-5")])
    assert DailyLossRule().evaluate(context(order_request(side=Side.BUY, qty="5"), adapter)).ok


def test_daily_loss_refuses_an_alpaca_sell_of_more_than_held_as_new_exposure():
    adapter = FakeAdapter(exchange="alpaca", equity="9000", last_equity="10000", positions=[("AAPL", "5")])
    assert not DailyLossRule().evaluate(context(order_request(side=Side.SELL, qty="6"), adapter)).ok


def test_daily_loss_refuses_a_buy_adding_to_a_long_position():
    adapter = FakeAdapter(equity="9000", last_equity="10000", positions=[("AAPL", "5")])
    assert not DailyLossRule().evaluate(context(order_request(side=Side.BUY, qty="1"), adapter)).ok


# --- trade_risk: the spec's worked example -------------------------------------------------------

def test_trade_risk_worked_example_with_stop_loss_risks_46_00_and_is_allowed():
    result = TradeRiskRule().evaluate(context(order_request(qty="5", stop_loss="179.00"), FakeAdapter()))
    assert (result.ok, result.numbers["risk"], result.numbers["risk_pct"]) == (True, D("46.00"), D("0.44"))


def test_trade_risk_worked_example_without_bracket_risks_94_10_and_is_allowed():
    result = TradeRiskRule().evaluate(context(order_request(qty="5"), FakeAdapter()))
    assert (result.ok, result.numbers["risk"], result.numbers["risk_pct"]) == (True, D("94.10"), D("0.91"))


def test_trade_risk_worked_example_buy_50_is_a_risk_rule_violation():
    result = TradeRiskRule().evaluate(context(order_request(qty="50"), FakeAdapter()))
    assert isinstance(result.error, RiskRuleViolation)
    assert result.error.detail == "trade_risk: risk 941.00 USD is 9.10 % of equity 10342.10, limit 2.00 %"


def test_trade_risk_denial_names_its_rule():
    result = TradeRiskRule().evaluate(context(order_request(qty="50"), FakeAdapter()))
    assert result.error.risk_rule == "trade_risk"


# --- trade_risk: threshold, entry, stop ----------------------------------------------------------

def test_trade_risk_allows_risk_exactly_at_the_limit():
    order = order_request(qty="10", limit_price="100", stop_loss="80")  # 200.00 = 2.00 % of 10000
    assert TradeRiskRule().evaluate(context(order, FakeAdapter(equity="10000"))).ok


def test_trade_risk_refuses_risk_just_over_the_limit():
    order = order_request(qty="10", limit_price="100", stop_loss="79.999")  # 200.01
    assert not TradeRiskRule().evaluate(context(order, FakeAdapter(equity="10000"))).ok


def test_trade_risk_uses_the_limit_it_is_given():
    limits = RiskLimits(max_trade_risk_pct=D("0.01"), unprotected_loss_pct=D("0.10"), daily_loss_limit_pct=D("0.05"))
    order = order_request(qty="10", limit_price="100", stop_loss="85")  # 150.00 = 1.50 % of 10000
    result = TradeRiskRule().evaluate(context(order, FakeAdapter(equity="10000"), limits=limits))
    assert result.error.detail == "trade_risk: risk 150.00 USD is 1.50 % of equity 10000.00, limit 1.00 %"


def test_trade_risk_uses_the_unprotected_loss_it_is_given():
    limits = RiskLimits(max_trade_risk_pct=D("0.02"), unprotected_loss_pct=D("0.25"), daily_loss_limit_pct=D("0.05"))
    result = TradeRiskRule().evaluate(context(order_request(qty="5"), FakeAdapter(), limits=limits))
    assert result.numbers["risk"] == D("235.25")  # 941.00 x 25 %


def test_trade_risk_takes_a_stop_orders_entry_from_its_stop_price():
    order = order_request(order_type=OrderType.STOP, limit_price=None, stop_price="190", stop_loss="180")
    result = TradeRiskRule().evaluate(context(order, FakeAdapter(price="150")))
    assert (result.numbers["entry"], result.numbers["risk"]) == (D("190"), D("50"))


def test_trade_risk_takes_a_market_orders_entry_from_the_latest_price():
    order = order_request(order_type=OrderType.MARKET, limit_price=None, stop_loss="90")
    result = TradeRiskRule().evaluate(context(order, FakeAdapter(price="100")))
    assert (result.numbers["entry"], result.numbers["risk"]) == (D("100"), D("50"))


def test_trade_risk_measures_a_sells_stop_above_the_entry():
    order = order_request(side=Side.SELL, qty="10", limit_price="100", stop_loss="110")
    adapter = FakeAdapter(exchange="alpaca", equity="10000")
    assert TradeRiskRule().evaluate(context(order, adapter)).numbers["risk"] == D("100")


def test_trade_risk_is_skipped_by_a_sell_that_only_reduces_a_position():
    order = order_request(side=Side.SELL, qty="50")  # 9.10 % if it were opening
    result = TradeRiskRule().evaluate(context(order, FakeAdapter(positions=[("AAPL", "50")])))
    assert (result.ok, result.numbers["reduce_only"]) == (True, True)


def test_trade_risk_counts_an_alpaca_sell_of_more_than_held_as_opening():
    order = order_request(side=Side.SELL, qty="50")
    result = TradeRiskRule().evaluate(context(order, FakeAdapter(exchange="alpaca", positions=[("AAPL", "1")])))
    assert result.error.detail == "trade_risk: risk 941.00 USD is 9.10 % of equity 10342.10, limit 2.00 %"


def test_trade_risk_applies_to_a_buy_that_adds_to_a_long_position():
    result = TradeRiskRule().evaluate(context(order_request(qty="50"), FakeAdapter(positions=[("AAPL", "10")])))
    assert not result.ok


def test_trade_risk_refuses_any_new_exposure_without_positive_equity():
    result = TradeRiskRule().evaluate(context(order_request(qty="1"), FakeAdapter(equity="0")))
    assert isinstance(result.error, RiskRuleViolation)


# --- trade_risk: max_qty -------------------------------------------------------------------------

def test_trade_risk_max_qty_is_the_largest_whole_share_count_within_the_risk_limit():
    # 2 % of 10342.10 = 206.842; / 9.20 per share = 22.48
    result = TradeRiskRule().evaluate(context(order_request(qty="5", stop_loss="179.00"), FakeAdapter()))
    assert result.numbers["max_qty"] == D("22")


def test_trade_risk_max_qty_is_bounded_by_buying_power():
    result = TradeRiskRule().evaluate(context(order_request(qty="5", stop_loss="179.00"),
                                              FakeAdapter(buying_power="1000")))
    assert result.numbers["max_qty"] == D("5")  # 1000 / 188.20 = 5.31


def test_trade_risk_max_qty_rounds_crypto_down_to_the_satoshi():
    order = order_request(asset_class=AssetClass.CRYPTO, symbol="BTC/USD", qty="0.01", limit_price="90000",
                          stop_loss="87000")
    result = TradeRiskRule().evaluate(context(order, FakeAdapter(equity="10000")))
    assert result.numbers["max_qty"] == D("0.06666666")  # 200 / 3000


# --- formatting ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("fraction", "shown"), [(D("0.090987"), D("9.10")), (D("0.0044478"), D("0.44")),
                                                 (D("0.00005"), D("0.01"))])
def test_percentages_are_shown_with_two_decimals_half_up(fraction, shown):
    assert pct(fraction) == shown


@pytest.mark.parametrize(("qty", "shown"), [(D("0.1"), "0.10"), (D("3"), "3.00"), (D("0.00012345"), "0.00012345")])
def test_quantities_are_shown_with_at_least_two_decimals(qty, shown):
    assert qty_text(qty) == shown
