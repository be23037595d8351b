"""Amounts and idempotency keys are taken exactly as sent (issue 13, item 7), over HTTP, both legs.

An amount is a JSON number, or a string in plain ASCII decimal notation (^[0-9]+(\\.[0-9]+)?$).
Python's Decimal() reads "١" (Arabic-Indic one) and "１" (full-width one) as 1; before this, each
placed an order of 1. A client_order_id is a JSON string of 1 to 64 of [A-Za-z0-9-_.:], not trimmed
and not coerced from a number.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from audit.models import BrokerOrderEvent
from brokers.models import BrokerAccount, SimOrder
from equity.models import Order
from tests.equity.helpers import assert_error, crypto_limit, place

pytestmark = pytest.mark.django_db

NOT_AMOUNTS = [
    "١",  # ARABIC-INDIC DIGIT ONE
    "１",  # FULLWIDTH DIGIT ONE
    "٠.٥",
    "𝟏",  # MATHEMATICAL BOLD DIGIT ONE
    " 1", "1 ", "\t1", "1\n", "+1", "-1", "1e3", "1E3", "1e-2", "0x10", "1_000", "1,5", ".5", "5.", "1.2.3",
    "", "NaN", "Infinity", "inf",
    True, False, [1], {"value": 1},
]
STRING_AMOUNTS_ACCEPTED = [("0.01", Decimal("0.01")), ("1", Decimal("1")), ("001.50", Decimal("1.5"))]


def eth_limit(**overrides):
    """Small enough for every risk rule at qty 1 or 1.5 (ETH/USD quotes 3000 in the simulator)."""
    return crypto_limit(symbol="ETH/USD", limit_price=2000, **overrides)


def _nothing_placed():
    return not Order.objects.exists() and not SimOrder.objects.exists() and not BrokerOrderEvent.objects.exists()


@pytest.mark.parametrize("value", NOT_AMOUNTS, ids=repr)
@pytest.mark.parametrize("field", ["qty", "limit_price"])
def test_an_amount_that_is_not_a_number_or_plain_ascii_digits_is_400(api_client, sim_crypto, field, value):
    body = crypto_limit(**{field: value})
    errors = assert_error(place(api_client, body), 400, "VALIDATION_ERROR")["errors"]
    assert field in errors, errors
    assert _nothing_placed()


@pytest.mark.parametrize("value", ["١", "１", " 30000", "3e4", True], ids=repr)
@pytest.mark.parametrize("field", ["stop_price", "bracket.take_profit", "bracket.stop_loss",
                                   "bracket.stop_loss_limit"])
def test_every_other_amount_field_is_as_strict(api_client, sim_crypto, field, value):
    body = crypto_limit(order_type="stop_limit", limit_price=30000, stop_price=30000,
                       bracket={"take_profit": 40000, "stop_loss": 20000, "stop_loss_limit": 19000})
    if field.startswith("bracket."):
        body["bracket"][field.split(".")[1]] = value
    else:
        body[field] = value
    errors = assert_error(place(api_client, body), 400, "VALIDATION_ERROR")["errors"]
    assert field in errors, errors
    assert _nothing_placed()


@pytest.mark.parametrize("text,amount", STRING_AMOUNTS_ACCEPTED)
def test_a_plain_ascii_decimal_string_is_an_amount(api_client, sim_crypto, text, amount):
    resp = place(api_client, eth_limit(qty=text, client_order_id=f"str-{text}"))
    assert resp.status_code == 201, resp.content
    assert Order.objects.get(client_order_id=f"str-{text}").qty == amount


@pytest.mark.parametrize("number", [1, 0.5, 1.25])
def test_a_json_number_is_an_amount(api_client, sim_crypto, number):
    resp = place(api_client, eth_limit(qty=number, client_order_id="num"))
    assert resp.status_code == 201, resp.content
    assert resp.json()["qty"] == number


@pytest.mark.parametrize("key", [" a ", "a ", " a", "a\n", "\ta", "", "has space", "é", "ａ", "a/b", "a" * 65,
                                 5, 5.0, 0, True, ["a"], {"a": 1}], ids=repr)
def test_a_client_order_id_that_is_not_a_plain_string_key_exactly_is_400(api_client, sim_crypto, key):
    errors = assert_error(place(api_client, crypto_limit(client_order_id=key)), 400, "VALIDATION_ERROR")["errors"]
    assert "client_order_id" in errors, errors
    assert _nothing_placed()


@pytest.mark.parametrize("key", ["a", "A-b_c.d:e", "5", "k" * 64])
def test_a_client_order_id_is_kept_exactly_as_sent(api_client, sim_crypto, key):
    resp = place(api_client, crypto_limit(client_order_id=key))
    assert resp.status_code == 201, resp.content
    assert resp.json()["order_id"] == resp.json()["client_order_id"] == key
    assert Order.objects.get().client_order_id == key


def test_a_null_client_order_id_still_gets_a_generated_key(api_client, sim_crypto):
    resp = place(api_client, crypto_limit(client_order_id=None))
    assert resp.status_code == 201, resp.content
    assert len(resp.json()["client_order_id"]) == 32


def _connect_sim(client, starting_cash):
    return client.post("/api/brokers/accounts", {"asset_class": "crypto", "exchange": "sim", "environment": "paper",
                                                 "credentials": {"starting_cash": starting_cash}}, format="json")


@pytest.mark.parametrize("value", ["١٠٠٠", "１０００", " 1000", "1000 ", "1e3", "+1000", "-5", "0", "", True, [1]],
                         ids=repr)
def test_a_sim_starting_cash_that_is_not_an_amount_is_400(api_client, value):
    errors = assert_error(_connect_sim(api_client, value), 400, "VALIDATION_ERROR")["errors"]
    assert any(name.startswith("credentials") for name in errors), errors
    assert not BrokerAccount.objects.exists()


@pytest.mark.parametrize("value", ["25000", 25000, "2500.5"], ids=repr)
def test_a_sim_starting_cash_as_a_number_or_plain_string_is_kept(api_client, value):
    resp = _connect_sim(api_client, value)
    assert resp.status_code == 201, resp.content
    assert Decimal(BrokerAccount.objects.get().credentials["starting_cash"]) == Decimal(str(value))
