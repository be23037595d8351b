"""POST /api/equity/orders/check: the placement's own gates and rules, run as a what-if
(SPEC.md "Trader controls"). What the check answers is what POST /orders then answers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from audit.models import BrokerOrderEvent
from audit.services import RequestMeta
from brokers.models import SimAccount, SimOrder
from brokers.sim_exchange import set_quote
from equity import controls
from equity.models import Order
from tests.equity.helpers import assert_error, crypto_limit, crypto_market, place
from tests.equity.test_gates import set_flag
from tests.factories import BrokerAccountFactory

pytestmark = pytest.mark.django_db

CHECK = "/api/equity/orders/check"
THANKSGIVING = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
GATE_AND_RULE_NAMES = ["feature_flag", "rate_limit", "broker_connection", "kill_switch", "market_hours", "funds",
                       "daily_loss", "trade_risk"]


def check(client, body):
    resp = client.post(CHECK, body, format="json")
    assert resp.status_code == 200, resp.content
    return resp.json()


# Each case: (what it sets up, the request, the check that refuses it or None).
def _nothing(user, client):
    return None


def _paper_flag_off(user, client):
    set_flag("FEATURE_EQUITY_PAPER", False)


def _live_flag_on(user, client):
    set_flag("FEATURE_EQUITY_LIVE", True)


def _one_per_minute_used(user, client, equity_orders=None):
    assert place(client, crypto_limit()).status_code == 201


def _halted(user, client):
    controls.set_kill_switch(user=user, mode="halted", set_by="alice", by_operator=False, meta=RequestMeta())


def _reducing(user, client):
    assert place(client, crypto_market(qty=0.02)).status_code == 201
    controls.set_kill_switch(user=user, mode="reducing", set_by="alice", by_operator=False, meta=RequestMeta())


def _us_connection(user, client):
    BrokerAccountFactory(user=user, asset_class="us_equity")


def _down_six_percent(user, client):
    assert place(client, crypto_market(qty=0.2)).status_code == 201
    SimAccount.objects.update(last_equity=100000)
    set_quote("crypto", "BTC/USD", "20000")


CASES = {
    "passes": (_nothing, crypto_market(), None, None),
    "paper flag off": (_paper_flag_off, crypto_market(), "feature_flag", None),
    "live not enabled": (_live_flag_on, crypto_market(live_mode=True), "feature_flag", None),
    "rate limit": (_one_per_minute_used, crypto_market(), "rate_limit", "1/m"),
    "no connection": (_nothing, {**crypto_market(), "asset_class": "kr_equity", "symbol": "005930"},
                      "broker_connection", None),
    "kill switch halted": (_halted, crypto_market(), "kill_switch", None),
    "kill switch reducing, a buy": (_reducing, crypto_market(), "kill_switch", None),
    "kill switch reducing, a reducing sell": (_reducing, crypto_market(side="sell", qty=0.01), None, None),
    "market closed": (_us_connection, {"asset_class": "us_equity", "symbol": "AAPL", "side": "buy", "qty": 1,
                                       "order_type": "limit", "limit_price": 188.20}, "market_hours", None),
    "funds: over buying power": (_nothing, crypto_market(qty=3), "funds", None),
    "funds: no shorting": (_nothing, crypto_market(side="sell", qty=1), "funds", None),
    "daily loss": (_down_six_percent, crypto_market(symbol="ETH/USD"), "daily_loss", None),
    "trade risk": (_nothing, crypto_market(qty=0.5), "trade_risk", None),
}


@pytest.mark.parametrize("case", CASES)
def test_the_check_agrees_with_the_placement_that_follows(make_client, user, sim_crypto, equity_orders, case):
    setup, body, refused_by, rate = CASES[case]
    equity_orders.RATE_LIMIT_ORDERS = rate or "30/m"
    # A frozen clock: the two answers compare word for word, and a refusal's "retry in N s" must not
    # cross a second between the check and the placement.
    travel = time_machine.travel(THANKSGIVING if case == "market closed" else timezone.now(), tick=False)
    with travel:
        client = make_client(user)
        setup(user, client)
        what_if = check(client, body)
        placed = place(client, body)
    if refused_by is None:
        assert placed.status_code == 201, placed.content
        assert (what_if["would_place"], what_if["code"]) == (True, None)
        assert all(c["ok"] for c in what_if["checks"])
        assert [c["name"] for c in what_if["checks"]] == GATE_AND_RULE_NAMES
        return
    refusal = placed.json()
    assert placed.status_code >= 400
    assert (what_if["would_place"], what_if["code"], what_if["detail"]) == (False, refusal["code"], refusal["detail"])
    first_failing = next(c for c in what_if["checks"] if not c["ok"])
    assert (first_failing["name"], first_failing["code"]) == (refused_by, refusal["code"])


def test_a_check_places_nothing_stores_nothing_audits_nothing_and_is_not_counted(api_client, sim_crypto,
                                                                                 equity_orders):
    equity_orders.RATE_LIMIT_ORDERS = "2/m"
    for _ in range(5):
        assert check(api_client, crypto_market())["would_place"] is True
    assert (Order.objects.count(), BrokerOrderEvent.objects.count(), SimOrder.objects.count()) == (0, 0, 0)
    rate = check(api_client, crypto_market())["checks"][1]
    assert (rate["name"], rate["limit"], rate["remaining"]) == ("rate_limit", 2, 1)
    assert place(api_client, crypto_market()).status_code == 201
    assert place(api_client, crypto_market()).status_code == 201
    assert_error(place(api_client, crypto_market()), 429, "RATE_LIMIT_EXCEEDED")


def test_every_check_carries_its_numbers(api_client, sim_crypto):
    checks = {c["name"]: c for c in check(api_client, crypto_limit(qty=0.1, limit_price=50000,
                                                                   bracket={"take_profit": 60000,
                                                                            "stop_loss": 45000}))["checks"]}
    assert checks["broker_connection"]["exchange"] == "sim"
    assert (checks["kill_switch"]["ok"], checks["kill_switch"]["mode"]) == (True, None)
    assert (checks["market_hours"]["open"], checks["market_hours"]["calendar"]) == (True, None)
    assert (checks["funds"]["buying_power"], checks["funds"]["notional"]) == (100000, 5000)
    assert {k: checks["daily_loss"][k] for k in ("equity", "limit_pct")} == {"equity": 100000, "limit_pct": 5}
    trade = checks["trade_risk"]
    assert {k: trade[k] for k in ("entry", "stop_used", "risk", "risk_pct", "limit_pct", "max_qty")} == {
        "entry": 50000, "stop_used": 45000, "risk": 500, "risk_pct": 0.5, "limit_pct": 2, "max_qty": 0.4}


def test_a_what_if_shows_every_rule_even_after_a_denial(api_client, sim_crypto):
    result = check(api_client, crypto_market(qty=3))  # funds and trade_risk both refuse
    assert [(c["name"], c["ok"]) for c in result["checks"]][-3:] == [("funds", False), ("daily_loss", True),
                                                                     ("trade_risk", False)]
    assert result["code"] == "INSUFFICIENT_FUNDS"


STEP = Decimal("0.00000001")  # the simulator's crypto quantity step


@pytest.mark.parametrize("request_body,bound_by", [
    # unprotected: 2 % of 100000 / (10 % of 50000) = 0.4 BTC, under what buying power allows (2 BTC)
    (crypto_market(), "RISK_RULE_VIOLATION"),
    # a stop 100 under the entry risks 100 a BTC: trade_risk allows 20 BTC, buying power only 2
    (crypto_limit(limit_price=50000, bracket={"take_profit": 60000, "stop_loss": 49900}), "INSUFFICIENT_FUNDS"),
])
def test_max_qty_passes_and_one_step_more_fails(api_client, sim_crypto, request_body, bound_by):
    max_qty = Decimal(str(next(c for c in check(api_client, request_body)["checks"]
                               if c["name"] == "trade_risk")["max_qty"]))
    over = {**request_body, "qty": float(max_qty + STEP)}
    assert check(api_client, over)["code"] == bound_by
    assert_error(place(api_client, over), 422, bound_by)
    exact = {**request_body, "qty": float(max_qty)}
    assert check(api_client, exact)["would_place"] is True
    assert place(api_client, exact).status_code == 201


def test_the_check_validates_like_a_placement(api_client, sim_crypto):
    assert_error(api_client.post(CHECK, {**crypto_market(), "limit_price": 1}, format="json"), 400,
                 "VALIDATION_ERROR")


def test_an_order_whose_id_is_check_can_still_be_read_and_canceled(api_client, sim_crypto):
    placed = place(api_client, crypto_limit(client_order_id="check")).json()
    assert api_client.get("/api/equity/orders/check", {"asset_class": "crypto"}).json()["order_id"] == "check"
    assert api_client.delete("/api/equity/orders/check?asset_class=crypto").status_code == 204
    assert placed["order_id"] == "check"
