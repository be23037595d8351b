"""Out-of-range prices and quantities are refused in the schema's own terms: the maximum and the step.

DRF's DecimalField spoke in digit counts ("Ensure that there are no more than 22 digits in total"),
a limit that no document gives; the schema says < 10^12 and at most 10 decimal places.
"""

from __future__ import annotations

import pytest

from audit.models import BrokerOrderEvent
from tests.equity.helpers import assert_error, crypto_limit, crypto_market, place

pytestmark = pytest.mark.django_db

TOO_LARGE = "Must be less than 1000000000000 (10^12), the largest price or quantity accepted."
TOO_FINE = "Must be a multiple of 0.0000000001 (at most 10 decimal places), the smallest step accepted."


@pytest.mark.parametrize("qty", [1e12, 1e15, 10**30, "1000000000000"])
def test_a_quantity_at_or_over_the_maximum_names_the_maximum(api_client, sim_crypto, qty):
    body = assert_error(place(api_client, crypto_market(qty=qty)), 400, "VALIDATION_ERROR")
    assert body["errors"] == {"qty": [TOO_LARGE]}
    assert body["detail"] == f"qty: {TOO_LARGE}"
    assert "digits" not in body["detail"]


@pytest.mark.parametrize("qty", [1e-11, 0.12345678901, "0.00000000001", 1e-30])
def test_a_quantity_finer_than_the_step_names_the_step(api_client, sim_crypto, qty):
    body = assert_error(place(api_client, crypto_market(qty=qty)), 400, "VALIDATION_ERROR")
    assert body["errors"] == {"qty": [TOO_FINE]}


@pytest.mark.parametrize("field", ["limit_price", "bracket.take_profit", "bracket.stop_loss"])
def test_prices_speak_in_the_same_limits(api_client, sim_crypto, field):
    bracket = {"take_profit": 36000, "stop_loss": 28000}
    body = crypto_limit(bracket=bracket)
    if field == "limit_price":
        body["limit_price"] = 5e12
    else:
        bracket[field.split(".")[1]] = 123.000000000001
    errors = assert_error(place(api_client, body), 400, "VALIDATION_ERROR")["errors"]
    assert errors[field] == [TOO_LARGE if field == "limit_price" else TOO_FINE]


def test_the_largest_and_the_smallest_amounts_are_accepted(api_client, sim_crypto):
    from brokers.sim_exchange import set_quote

    set_quote("crypto", "BTC/USD", "0.0000000002")
    resp = place(api_client, crypto_limit(qty=999_999, limit_price=0.0000000001))
    assert resp.status_code == 201, resp.content
    assert resp.json()["limit_price"] == 0.0000000001


def test_trailing_zeros_past_the_tenth_place_are_not_extra_precision(api_client, sim_crypto):
    resp = place(api_client, crypto_market(qty="0.010000000000000"))
    assert resp.status_code == 201, resp.content
    assert resp.json()["qty"] == 0.01


def test_a_refused_amount_touches_no_gate(api_client, sim_crypto):
    assert_error(place(api_client, crypto_market(qty=1e13)), 400, "VALIDATION_ERROR")
    assert not BrokerOrderEvent.objects.exists()


def test_the_schema_documents_the_same_limits(api_client):
    schema = api_client.get("/api/schema", HTTP_ACCEPT="application/json").json()
    qty = schema["components"]["schemas"]["PlaceOrderRequest"]["properties"]["qty"]
    assert qty["maximum"] == 10**12 and qty["exclusiveMaximum"] is True and qty["minimum"] == 1e-10
    assert "10^12" in qty["description"] and "0.0000000001" in qty["description"]
