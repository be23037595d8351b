"""OrderResponse's own field loop (equity.serializers.OrderResponse._fields_of) gives exactly what DRF's
Serializer.to_representation gives, for every kind of order, and is the path the routes take."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone as dt_timezone
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from brokers.sim_exchange import set_quote
from equity.models import Order
from equity.selectors import attach_legs
from equity.serializers import OrderListResponse, OrderResponse
from tests.equity.helpers import crypto_limit, crypto_market, place
from tests.factories import OrderFactory

pytestmark = pytest.mark.django_db
Q = {"asset_class": "crypto"}


def _drf_generic(monkeypatch):
    monkeypatch.setattr(OrderResponse, "_fields_of", serializers.Serializer.to_representation)


def _both(monkeypatch, render):
    fast = render()
    with monkeypatch.context() as m:
        _drf_generic(m)
        generic = render()
    return fast, generic


def _place_every_kind(client):
    client.user.orders.all()  # the user exists
    place(client, crypto_limit(client_order_id="resting"))
    place(client, crypto_market(qty=0.001, client_order_id="filled"))
    place(client, crypto_limit(order_type="stop_limit", stop_price=52000, limit_price=52500,
                               report_uuid=str(uuid.uuid4()), client_order_id="stop-limit"))
    place(client, crypto_limit(limit_price=45000, client_order_id="bracket",
                               bracket={"take_profit": 52000, "stop_loss": 44000, "stop_loss_limit": 43900}))
    place(client, crypto_limit(limit_price=45000, client_order_id="bracket-plain",
                               bracket={"take_profit": 52000, "stop_loss": 44000}))
    set_quote("crypto", "BTC/USD", "44900")  # fills both brackets' entries: their legs open


def test_every_kind_of_order_renders_as_drf_renders_it_through_the_routes(api_client, sim_crypto, monkeypatch):
    _place_every_kind(api_client)
    api_client.get("/api/equity/orders", {**Q, "size": 100})  # the legs are mirrored: state settles
    body = api_client.get("/api/equity/orders", {**Q, "size": 100}).json()
    kinds = {o["order_id"]: o for o in body["items"]}
    assert {"resting", "filled", "stop-limit", "bracket", "bracket:tp", "bracket:sl"} <= set(kinds)
    assert kinds["stop-limit"]["metadata"]["report_uuid"] and kinds["stop-limit"]["metadata"]["stop_limit_price"]
    assert len(kinds["bracket"]["metadata"]["legs"]) == 2 and kinds["bracket:sl"]["metadata"]["parent_order_id"]
    assert "stop_loss_limit" not in kinds["bracket-plain"]["bracket"] and kinds["bracket"]["bracket"]["stop_loss_limit"]
    refs = ["resting", "filled", "stop-limit", "bracket", "bracket:tp", "bracket:sl"]
    fast, generic = _both(monkeypatch, lambda: [
        api_client.get("/api/equity/orders", {**Q, "size": 100}).content,
        *[api_client.get(f"/api/equity/orders/{ref}", Q).content for ref in refs]])
    assert fast == generic


def test_nulls_odd_decimals_and_other_time_zones_render_as_drf_renders_them(user, sim_crypto, monkeypatch):
    seoul = dt_timezone(timedelta(hours=9))
    orders = [
        OrderFactory(user=user, connection=sim_crypto, broker_order_id=None, status="pending", submitted_at=None,
                     limit_price=None, order_type="market"),
        OrderFactory(user=user, connection=sim_crypto, qty=Decimal("0.0000012300"), filled_qty=Decimal("1E-10"),
                     avg_fill_price=Decimal("123456789012.1234567891"), limit_price=Decimal("40000.000")),
        OrderFactory(user=user, connection=sim_crypto, order_type="stop_limit", stop_price=Decimal("41000"),
                     limit_price=Decimal("0.00005"), report_uuid=uuid.uuid4()),
    ]
    rows = list(Order.objects.filter(pk__in=[o.pk for o in orders]).order_by("id"))
    rows[0].updated_at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=seoul)  # shown in UTC with a Z
    rows[1].submitted_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows[2].status = "canceled"
    attach_legs(rows)

    def render():
        with timezone.override(UTC):
            return [OrderResponse(rows, many=True).data, OrderResponse(rows[0]).data,
                    JSONRenderer().render(OrderListResponse({"items": rows, "total": 3, "page": 1, "size": 20}).data)]

    fast, generic = _both(monkeypatch, render)
    assert fast == generic
    assert fast[1]["updated_at"] == "2026-01-01T18:04:05.678901Z" and fast[1]["broker_order_id"] is None


def test_the_list_and_the_placement_take_the_field_loop_not_drfs(api_client, sim_crypto, monkeypatch):
    place(api_client, crypto_limit())
    generic = serializers.Serializer.to_representation

    def refuse_orders(self, instance):
        assert not isinstance(self, OrderResponse), "OrderResponse went through DRF's generic loop"
        return generic(self, instance)

    monkeypatch.setattr(serializers.Serializer, "to_representation", refuse_orders)
    assert place(api_client, crypto_limit()).status_code == 201
    assert api_client.get("/api/equity/orders", Q).json()["total"] == 2
