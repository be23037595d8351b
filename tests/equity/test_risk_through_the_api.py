"""Gate 4 through the API: a denial is 422 with the rule's code, a detail naming the rule and the
numbers, and an audit row that names the rule (SPEC.md "RiskManager v2", "Risk rule order and names")."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine

from audit.models import BrokerOrderEvent
from brokers.models import SimAccount
from brokers.sim_exchange import set_quote
from tests.equity.helpers import assert_error, place
from tests.factories import BrokerAccountFactory

pytestmark = pytest.mark.django_db

NYSE_OPEN = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 New York
THANKSGIVING = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


@pytest.fixture
def us_equity(user, quotes):
    return BrokerAccountFactory(user=user, asset_class="us_equity", credentials={"starting_cash": "10342.10"})


def aapl(**extra):
    return {"asset_class": "us_equity", "symbol": "AAPL", "side": "buy", "qty": 5, "order_type": "limit",
            "limit_price": 188.20, **extra}


def test_the_spec_worked_example_with_a_bracket_is_allowed(make_client, user, us_equity):
    with time_machine.travel(NYSE_OPEN, tick=False):
        resp = place(make_client(user), aapl(bracket={"take_profit": 205, "stop_loss": 179}))
    assert resp.status_code == 201, resp.content


def test_buying_50_without_a_stop_is_refused_by_trade_risk_naming_the_numbers(make_client, user, us_equity):
    with time_machine.travel(NYSE_OPEN, tick=False):
        resp = place(make_client(user), aapl(qty=50))
    body = assert_error(resp, 422, "RISK_RULE_VIOLATION")
    assert body["detail"] == "trade_risk: risk 941.00 USD is 9.10 % of equity 10342.10, limit 2.00 %"
    event = BrokerOrderEvent.objects.get()
    assert (event.event_type, event.error_code, event.risk_rule) == ("rejected", "RISK_RULE_VIOLATION", "trade_risk")


def test_a_closed_market_is_422_market_closed_naming_the_calendar_and_next_open(make_client, user, us_equity):
    with time_machine.travel(THANKSGIVING, tick=False):
        resp = place(make_client(user), aapl())
    body = assert_error(resp, 422, "MARKET_CLOSED")
    assert body["detail"] == "market_hours: XNYS is closed; next open 2026-11-27T14:30:00Z"
    assert BrokerOrderEvent.objects.get().risk_rule == "market_hours"


def test_crypto_never_closes(make_client, user, sim_crypto):
    with time_machine.travel(THANKSGIVING, tick=False):
        assert place(make_client(user), {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01,
                                  "order_type": "market"}).status_code == 201


def test_after_a_five_percent_daily_loss_buys_are_refused_and_reducing_sells_allowed(api_client, sim_crypto):
    place(api_client, {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.2,
                       "order_type": "market"})
    SimAccount.objects.update(last_equity=100000)
    set_quote("crypto", "BTC/USD", "20000")  # 0.2 BTC lose 6000: equity 94000, -6 %
    buy = place(api_client, {"asset_class": "crypto", "symbol": "ETH/USD", "side": "buy", "qty": 0.01,
                             "order_type": "market"})
    body = assert_error(buy, 422, "RISK_RULE_VIOLATION")
    assert body["detail"].startswith("daily_loss")
    sell = place(api_client, {"asset_class": "crypto", "symbol": "BTC/USD", "side": "sell", "qty": 0.1,
                              "order_type": "market"})
    assert sell.status_code == 201, sell.content


def test_a_buy_over_buying_power_is_insufficient_funds_before_trade_risk(api_client, sim_crypto):
    resp = place(api_client, {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 3,
                              "order_type": "market"})
    body = assert_error(resp, 422, "INSUFFICIENT_FUNDS")
    assert body["detail"].startswith("funds")
