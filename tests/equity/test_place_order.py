"""POST /api/equity/orders on the simulator: the happy paths, field by field."""

from __future__ import annotations

import re
import uuid

import pytest

from audit.models import BrokerOrderEvent
from tests.equity.helpers import ORDER_FIELDS, assert_error, crypto_limit, crypto_market, place

pytestmark = pytest.mark.django_db
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_market_order_fills_at_the_quote_with_exactly_the_spec_fields(api_client, sim_crypto):
    resp = place(api_client, crypto_market())
    assert resp.status_code == 201, resp.content
    order = resp.json()
    assert set(order) == ORDER_FIELDS
    assert order["status"] == "filled" and order["filled_qty"] == 0.01 and order["avg_fill_price"] == 50000
    assert order["exchange"] == "sim" and order["currency"] == "USD" and order["asset_class"] == "crypto"
    assert order["order_id"] == order["client_order_id"] and re.fullmatch(r"[0-9a-f]{32}", order["order_id"])
    assert order["broker_order_id"] and order["limit_price"] is None and order["stop_price"] is None
    assert ISO_Z.match(order["submitted_at"]) and ISO_Z.match(order["updated_at"])
    assert order["bracket"] is None and order["metadata"] == {}


def test_quantities_and_prices_are_json_numbers(api_client, sim_crypto):
    order = place(api_client, crypto_limit()).json()
    for name in ("qty", "filled_qty", "limit_price"):
        assert isinstance(order[name], (int, float)) and not isinstance(order[name], bool), name


def test_limit_below_the_quote_rests_as_accepted(api_client, sim_crypto):
    resp = place(api_client, crypto_limit())
    assert resp.status_code == 201
    assert resp.json()["status"] == "accepted" and resp.json()["filled_qty"] == 0


def test_bracket_is_echoed_in_the_response(api_client, sim_crypto):
    resp = place(api_client, crypto_limit(limit_price=40000, bracket={"take_profit": 45000, "stop_loss": 39000}))
    assert resp.status_code == 201, resp.content
    assert resp.json()["bracket"] == {"take_profit": 45000, "stop_loss": 39000}


def test_stop_limit_keeps_its_type_and_shows_stop_limit_price_in_metadata(api_client, sim_crypto):
    resp = place(api_client, crypto_limit(order_type="stop_limit", stop_price=60000, limit_price=60500))
    assert resp.status_code == 201, resp.content
    order = resp.json()
    assert order["order_type"] == "stop_limit" and order["stop_price"] == 60000 and order["limit_price"] == 60500
    assert order["metadata"]["stop_limit_price"] == 60500


def test_report_uuid_is_kept_in_metadata(api_client, sim_crypto):
    rid = str(uuid.uuid4())
    assert place(api_client, crypto_limit(report_uuid=rid)).json()["metadata"] == {"report_uuid": rid}


def test_crypto_time_in_force_defaults_to_gtc_and_is_accepted_on_the_simulator(api_client, sim_crypto):
    body = crypto_limit()
    body.pop("time_in_force")
    assert place(api_client, body).status_code == 201
    from equity.models import Order

    assert Order.objects.get().time_in_force == "gtc"


def test_no_connection_for_the_asset_class_is_broker_not_configured(api_client, sim_crypto):
    resp = place(api_client, {"asset_class": "kr_equity", "symbol": "005930", "side": "buy", "qty": 1,
                              "order_type": "limit", "limit_price": 60000})
    assert_error(resp, 403, "BROKER_NOT_CONFIGURED")


def test_symbol_without_a_quote_is_broker_rejected(api_client, sim_crypto):
    resp = place(api_client, crypto_limit(symbol="NOPE/USD", limit_price=100))
    assert_error(resp, 422, "BROKER_REJECTED")


@pytest.mark.parametrize("qty", [0.05, 1000])
def test_selling_more_than_held_is_insufficient_funds_from_the_funds_rule(api_client, sim_crypto, qty):
    resp = place(api_client, crypto_market(side="sell", qty=qty))
    body = assert_error(resp, 422, "INSUFFICIENT_FUNDS")
    assert body["detail"].startswith("funds")


def test_every_placement_writes_a_submitted_and_a_placed_audit_row(api_client, sim_crypto):
    order = place(api_client, crypto_limit()).json()
    rows = list(BrokerOrderEvent.objects.order_by("id").values_list("event_type", "broker_order_id"))
    assert rows == [("submitted", ""), ("placed", order["broker_order_id"])]


def test_a_refused_order_writes_a_rejected_audit_row_naming_the_code(api_client, sim_crypto):
    place(api_client, crypto_market(side="sell", qty=5))
    event = BrokerOrderEvent.objects.get()
    assert event.event_type == "rejected" and event.error_code == "INSUFFICIENT_FUNDS"
    assert event.risk_rule == "funds" and event.user_id == api_client.user.pk
