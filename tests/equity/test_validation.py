"""The validation matrix of PlaceOrderRequest: 400 VALIDATION_ERROR naming the field, no gate touched."""

from __future__ import annotations

import pytest

from audit.models import BrokerOrderEvent
from equity.models import Order
from tests.equity.helpers import assert_error, place

pytestmark = pytest.mark.django_db

BASE = {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01, "order_type": "market",
        "time_in_force": "gtc"}


@pytest.mark.parametrize("change,field", [
    ({"order_type": "limit"}, "limit_price"),
    ({"order_type": "stop"}, "stop_price"),
    ({"order_type": "stop_limit", "stop_price": 51000}, "limit_price"),
    ({"order_type": "stop_limit", "limit_price": 51000}, "stop_price"),
    ({"qty": 0}, "qty"),
    ({"qty": -1}, "qty"),
    ({"qty": "abc"}, "qty"),
    ({"qty": None}, "qty"),
    ({"symbol": ""}, "symbol"),
    ({"symbol": "X" * 33}, "symbol"),
    ({"side": "hold"}, "side"),
    ({"asset_class": "bonds"}, "asset_class"),
    ({"order_type": "trailing"}, "order_type"),
    ({"time_in_force": "forever"}, "time_in_force"),
    ({"client_order_id": "c" * 65}, "client_order_id"),
    ({"client_order_id": "has/slash"}, "client_order_id"),
    ({"report_uuid": "not-a-uuid"}, "report_uuid"),
    ({"limit_price": 100}, "limit_price"),
    ({"stop_price": 100}, "stop_price"),
    ({"order_type": "limit", "limit_price": 30000, "stop_price": 29000}, "stop_price"),
    ({"order_type": "limit", "limit_price": -5}, "limit_price"),
    ({"order_type": "stop", "stop_price": 0}, "stop_price"),
    ({"live_mode": "maybe"}, "live_mode"),
    ({"limit_prize": 100}, "limit_prize"),
])
def test_invalid_order_is_400_naming_the_field(api_client, change, field):
    body = {**BASE, **change}
    resp = place(api_client, body)
    errors = assert_error(resp, 400, "VALIDATION_ERROR")["errors"]
    assert field in errors, errors


@pytest.mark.parametrize("side,limit,bracket", [
    ("buy", 40000, {"take_profit": 39000, "stop_loss": 41000}),
    ("buy", 40000, {"take_profit": 45000, "stop_loss": 41000}),
    ("buy", 40000, {"take_profit": 39500, "stop_loss": 38000}),
    ("sell", 40000, {"take_profit": 45000, "stop_loss": 39000}),
    ("buy", 40000, {"take_profit": 45000, "stop_loss": 39000, "stop_loss_limit": 39500}),
])
def test_bracket_prices_on_the_wrong_side_are_400(api_client, side, limit, bracket):
    body = {**BASE, "order_type": "limit", "limit_price": limit, "side": side, "bracket": bracket}
    errors = assert_error(place(api_client, body), 400, "VALIDATION_ERROR")["errors"]
    assert "bracket" in errors


def test_bracket_missing_stop_loss_names_the_nested_field(api_client):
    body = {**BASE, "order_type": "limit", "limit_price": 40000, "bracket": {"take_profit": 45000}}
    errors = assert_error(place(api_client, body), 400, "VALIDATION_ERROR")["errors"]
    assert "bracket.stop_loss" in errors


def test_a_malformed_json_body_is_400_validation_error(api_client):
    resp = api_client.post("/api/equity/orders", data="{not json", content_type="application/json")
    assert_error(resp, 400, "VALIDATION_ERROR")


def test_a_non_object_body_is_400(api_client):
    resp = api_client.post("/api/equity/orders", data="[1, 2]", content_type="application/json")
    assert_error(resp, 400, "VALIDATION_ERROR")


def test_a_malformed_request_touches_no_gate_and_writes_nothing(api_client):
    place(api_client, {**BASE, "qty": 0})
    assert not Order.objects.exists() and not BrokerOrderEvent.objects.exists()


def test_unauthenticated_post_is_401_before_validation(client, db):
    resp = client.post("/api/equity/orders", {"qty": 0}, content_type="application/json")
    assert_error(resp, 401, "NOT_AUTHENTICATED")


def test_a_bad_token_is_401(client, db):
    resp = client.get("/api/equity/orders?asset_class=crypto", HTTP_AUTHORIZATION="Bearer not-a-token")
    assert_error(resp, 401, "NOT_AUTHENTICATED")
