"""risk/manager.py: rule order, first denial wins, lazy snapshots, per-user limits."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from brokers.types import OrderType, Side
from brokers import calendars
from brokers.errors import BrokerUnavailable, InsufficientFunds, MarketClosed, RiskRuleViolation
from risk.manager import RiskManager
from risk.models import RiskProfile
from risk.rules import RiskLimits
from tests.risk.test_rules import NYSE_OPEN, THANKSGIVING, FakeAdapter, order_request

D = Decimal
# The kill_switch rule (first of gate 4) reads the kill switches from the database.
pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module", autouse=True)
def calendars_built_on_a_fixed_day():
    calendars.reset_calendars()
    with time_machine.travel(datetime(2026, 11, 25, 12, 0, tzinfo=UTC), tick=False):
        yield
    calendars.reset_calendars()


def evaluate(manager, order, adapter, *, now=NYSE_OPEN, stop_at_first_denial=True):
    return manager.evaluate(order=order, adapter=adapter, exchange=adapter.exchange, connection_id=1, now=now,
                            stop_at_first_denial=stop_at_first_denial)


def check(manager, order, adapter, *, now=NYSE_OPEN):
    manager.check(order=order, adapter=adapter, exchange=adapter.exchange, connection_id=1, now=now)


# --- order and first denial ----------------------------------------------------------------------

def test_rules_run_in_the_specs_order():
    results = evaluate(RiskManager(), order_request(), FakeAdapter(last_equity="10342.10"), stop_at_first_denial=False)
    assert [r.name for r in results] == ["kill_switch", "market_hours", "funds", "daily_loss", "trade_risk"]


def test_a_closed_market_wins_over_insufficient_funds():
    with pytest.raises(MarketClosed):
        check(RiskManager(), order_request(qty="50"), FakeAdapter(buying_power="1"), now=THANKSGIVING)


def test_insufficient_funds_wins_over_daily_loss_and_trade_risk():
    adapter = FakeAdapter(buying_power="1", equity="9000", last_equity="10000")
    with pytest.raises(InsufficientFunds):
        check(RiskManager(), order_request(qty="50"), adapter)


def test_daily_loss_wins_over_trade_risk():
    with pytest.raises(RiskRuleViolation) as caught:
        check(RiskManager(), order_request(qty="50"), FakeAdapter(equity="9000", last_equity="10000"))
    assert caught.value.risk_rule == "daily_loss"


def test_evaluation_stops_at_the_first_denial_by_default():
    results = evaluate(RiskManager(), order_request(qty="50"), FakeAdapter(buying_power="1"))
    assert [(r.name, r.ok) for r in results] == [("kill_switch", True), ("market_hours", True),
                                                 ("funds", False)]


def test_evaluation_can_run_every_rule_for_a_what_if():
    results = evaluate(RiskManager(), order_request(qty="50"), FakeAdapter(buying_power="1", last_equity="10342.10"),
                       stop_at_first_denial=False)
    assert [(r.name, r.ok) for r in results] == [("kill_switch", True), ("market_hours", True), ("funds", False),
                                                 ("daily_loss", True), ("trade_risk", False)]


def test_check_raises_the_worked_examples_violation_naming_trade_risk():
    with pytest.raises(RiskRuleViolation) as caught:
        check(RiskManager(), order_request(qty="50"), FakeAdapter(last_equity="10342.10"))
    assert (caught.value.code, caught.value.risk_rule, caught.value.detail) == (
        "RISK_RULE_VIOLATION", "trade_risk", "trade_risk: risk 941.00 USD is 9.10 % of equity 10342.10, limit 2.00 %")


def test_check_passes_an_order_every_rule_allows():
    assert check(RiskManager(), order_request(qty="5", stop_loss="179.00"), FakeAdapter(last_equity="10342.10")) is None


def test_now_defaults_to_the_current_time():
    with time_machine.travel(THANKSGIVING, tick=False):
        with pytest.raises(MarketClosed):
            RiskManager().check(order=order_request(), adapter=FakeAdapter(), exchange="sim", connection_id=1)


# --- broker calls --------------------------------------------------------------------------------

def test_a_closed_market_makes_no_broker_call():
    adapter = FakeAdapter()
    with pytest.raises(MarketClosed):
        check(RiskManager(), order_request(), adapter, now=THANKSGIVING)
    assert adapter.calls == []


def test_each_snapshot_is_fetched_at_most_once_per_evaluation():
    adapter = FakeAdapter(exchange="alpaca", last_equity="10342.10")  # shorting: a buy needs all three
    market_buy = order_request(qty="5", order_type=OrderType.MARKET, limit_price=None)
    evaluate(RiskManager(), market_buy, adapter, stop_at_first_denial=False)
    assert sorted(adapter.calls) == ["account", "latest_price", "positions"]


def test_a_buy_on_a_broker_without_shorting_never_asks_for_positions():
    adapter = FakeAdapter(exchange="sim", last_equity="10342.10")
    evaluate(RiskManager(), order_request(qty="5"), adapter, stop_at_first_denial=False)
    assert "positions" not in adapter.calls


def test_a_buy_on_a_broker_with_shorting_asks_for_positions_to_see_if_it_covers_a_short():
    adapter = FakeAdapter(exchange="alpaca", last_equity="10342.10", positions=[("AAPL", "-5")])
    results = evaluate(RiskManager(), order_request(qty="5"), adapter, stop_at_first_denial=False)
    assert "positions" in adapter.calls
    assert [r.numbers.get("reduce_only") for r in results[3:]] == [True, True]


def test_a_limit_order_never_asks_for_the_latest_price():
    adapter = FakeAdapter(last_equity="10342.10")
    evaluate(RiskManager(), order_request(qty="5"), adapter, stop_at_first_denial=False)
    assert "latest_price" not in adapter.calls


def test_a_reducing_sell_asks_only_for_positions():
    adapter = FakeAdapter(positions=[("AAPL", "10")])
    check(RiskManager(), order_request(side=Side.SELL, qty="5"), adapter)
    assert adapter.calls == ["positions"]


def test_broker_errors_propagate_unchanged():
    failure = BrokerUnavailable("alpaca: connection refused")
    with pytest.raises(BrokerUnavailable) as caught:
        check(RiskManager(), order_request(), FakeAdapter(error=failure))
    assert caught.value is failure


def test_a_fresh_evaluation_fetches_fresh_snapshots():
    adapter = FakeAdapter(last_equity="10342.10")
    manager = RiskManager()
    evaluate(manager, order_request(), adapter)
    evaluate(manager, order_request(), adapter)
    assert adapter.calls.count("account") == 2


# --- per-user limits -----------------------------------------------------------------------------

@pytest.mark.django_db
def test_user_without_a_profile_gets_the_settings_defaults(django_user_model, settings, equity_orders):
    equity_orders.RISK_MAX_TRADE_RISK_PCT = D("0.015")
    equity_orders.RISK_UNPROTECTED_LOSS_PCT = D("0.2")
    equity_orders.RISK_DAILY_LOSS_LIMIT_PCT = D("0.03")
    user = django_user_model.objects.create_user("ana")
    assert RiskManager.for_user(user).limits == RiskLimits(D("0.015"), D("0.2"), D("0.03"))


@pytest.mark.django_db
def test_profile_fields_override_the_defaults(django_user_model):
    user = django_user_model.objects.create_user("ana")
    RiskProfile.objects.create(user=user, max_trade_risk_pct=D("0.01"), unprotected_loss_pct=D("0.05"),
                               daily_loss_limit_pct=D("0.02"))
    assert RiskManager.for_user(user).limits == RiskLimits(D("0.01"), D("0.05"), D("0.02"))


@pytest.mark.django_db
def test_blank_profile_fields_take_the_settings_defaults(django_user_model, settings, equity_orders):
    equity_orders.RISK_UNPROTECTED_LOSS_PCT = D("0.2")
    equity_orders.RISK_DAILY_LOSS_LIMIT_PCT = D("0.03")
    user = django_user_model.objects.create_user("ana")
    RiskProfile.objects.create(user=user, max_trade_risk_pct=D("0.01"))
    assert RiskManager.for_user(user).limits == RiskLimits(D("0.01"), D("0.2"), D("0.03"))


@pytest.mark.django_db
def test_a_users_one_percent_limit_refuses_what_the_default_allows(django_user_model):
    order = order_request(qty="10", limit_price="100", stop_loss="85")  # 150.00 = 1.50 % of 10000
    adapter = FakeAdapter(equity="10000", last_equity="10000")
    strict, default = (django_user_model.objects.create_user(name) for name in ("strict", "default"))
    RiskProfile.objects.create(user=strict, max_trade_risk_pct=D("0.01"))
    check(RiskManager.for_user(default), order, adapter)
    with pytest.raises(RiskRuleViolation):
        check(RiskManager.for_user(strict), order, adapter)


@pytest.mark.django_db
def test_profiles_of_other_users_do_not_apply(django_user_model):
    ana, bob = (django_user_model.objects.create_user(name) for name in ("ana", "bob"))
    RiskProfile.objects.create(user=ana, max_trade_risk_pct=D("0.01"))
    assert RiskManager.for_user(bob).limits == RiskLimits.defaults()
