"""`manage.py sim_quote <asset_class> <symbol> <price>` (SPEC.md "Operator commands", "Simulator quotes")."""

from __future__ import annotations

import io
import uuid
from decimal import Decimal as D

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from brokers.models import SimQuote
from brokers.registry import build_adapter
from brokers.types import OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from tests.factories import BrokerAccountFactory

pytestmark = pytest.mark.django_db


def sim_quote(*args) -> str:
    out = io.StringIO()
    call_command("sim_quote", *args, stdout=out)
    return out.getvalue()


def make_sim():
    user = get_user_model().objects.create_user(f"sim-{uuid.uuid4().hex[:12]}")
    return build_adapter(BrokerAccountFactory(user=user, asset_class="crypto", credentials={}))


def buy_limit(price: str) -> OrderRequest:
    return OrderRequest(asset_class="crypto", symbol="SOL/USD", side=Side.BUY, qty=D("0.5"),
                        order_type=OrderType.LIMIT, time_in_force=TimeInForce.GTC,
                        broker_client_id=uuid.uuid4().hex, limit_price=D(price))


def test_sim_quote_sets_the_quote():
    sim_quote("crypto", "SOL/USD", "150.25")
    assert SimQuote.objects.get(asset_class="crypto", symbol="SOL/USD").price == D("150.25")


def test_sim_quote_replaces_an_earlier_quote():
    sim_quote("crypto", "SOL/USD", "150")
    sim_quote("crypto", "SOL/USD", "139")
    assert list(SimQuote.objects.values_list("price", flat=True)) == [D("139")]


def test_sim_quote_fills_resting_orders_before_it_returns():
    sim_quote("crypto", "SOL/USD", "150")
    sim = make_sim()
    placed = sim.place_order(buy_limit("140"))
    sim_quote("crypto", "SOL/USD", "139")
    got = sim.get_order(placed.broker_order_id)
    assert got.status == OrderStatus.FILLED and got.filled_qty == D("0.5")


def test_sim_quote_prints_the_new_and_old_price_and_how_many_orders_changed():
    sim_quote("crypto", "SOL/USD", "150")
    make_sim().place_order(buy_limit("140"))
    out = sim_quote("crypto", "SOL/USD", "139")
    assert out.strip() == "crypto SOL/USD quoted at 139 (was 150); 1 resting simulator order changed"


def test_sim_quote_of_a_new_symbol_says_so():
    out = sim_quote("kr_equity", "005930", "70000")
    assert out.strip() == "kr_equity 005930 quoted at 70000 (new symbol); 0 resting simulator orders changed"


def test_sim_quote_with_an_unknown_asset_class_is_a_command_error():
    with pytest.raises(CommandError, match="asset_class"):
        sim_quote("bonds", "SOL/USD", "150")
    assert not SimQuote.objects.exists()


@pytest.mark.parametrize("price", ["abc", "0", "-5", "NaN", "Infinity", "1.00000000001"])
def test_sim_quote_with_a_price_that_is_not_a_positive_number_is_a_command_error(price):
    with pytest.raises(CommandError, match="price"):
        sim_quote("crypto", "SOL/USD", price)
    assert not SimQuote.objects.exists()


def test_sim_quote_with_a_symbol_longer_than_32_characters_is_a_command_error():
    with pytest.raises(CommandError, match="symbol"):
        sim_quote("crypto", "X" * 33, "1")


def test_sim_quote_without_a_price_is_a_command_error():
    with pytest.raises(CommandError, match="price"):
        sim_quote("crypto", "SOL/USD")
