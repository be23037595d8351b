"""equity.order_sql: the placement path's plain statements write exactly the rows the ORM writes."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from equity import order_sql
from equity.models import Order, OrderEvent
from tests.factories import OrderFactory, UserFactory

pytestmark = pytest.mark.django_db


def _unsaved(user, key: str) -> Order:
    """An order with every kind of column set: decimals, JSON, a UUID, aware datetimes, nulls."""
    now = timezone.now()
    return Order(user=user, client_order_id=key, request_fingerprint="f" * 64, attempt="in_flight",
                 attempt_started_at=now, asset_class="crypto", exchange="sim", environment="paper", currency="USD",
                 symbol="BTC/USD", side="buy", order_type="limit", time_in_force="gtc", qty=Decimal("0.0001"),
                 limit_price=Decimal("40000.1234567891"), stop_price=None,
                 bracket={"take_profit": "45000", "stop_loss": "39000", "stop_loss_limit": None},
                 report_uuid=uuid.UUID("8d6f1c1e-1c1e-4c1e-8c1e-1c1e1c1e1c1e"), status="pending",
                 submitted_at=now, updated_at=None)


def _stored(pk: int) -> dict:
    row = Order.objects.filter(pk=pk).values().get()
    row.pop("id")
    row.pop("client_order_id")
    return row


def test_insert_row_stores_the_row_the_orm_stores():
    user = UserFactory()
    by_orm, by_sql = _unsaved(user, "by-orm"), _unsaved(user, "by-sql")
    by_sql.attempt_started_at = by_sql.submitted_at = by_orm.attempt_started_at
    by_orm.save(force_insert=True)
    order_sql.insert_row(by_sql)
    assert by_sql.pk is not None and by_sql.pk != by_orm.pk
    assert _stored(by_sql.pk) == _stored(by_orm.pk)
    assert not by_sql._state.adding


def test_insert_row_names_every_column_of_the_model_but_the_key():
    user = UserFactory()
    with CaptureQueriesContext(connection) as ctx:
        order_sql.insert_row(_unsaved(user, "columns"))
    sql = ctx.captured_queries[-1]["sql"]
    columns = sql.split("(", 1)[1].split(")", 1)[0]
    named = [c.strip().strip('"') for c in columns.split(",")]
    assert named == [f.column for f in Order._meta.concrete_fields if not f.primary_key]


def test_insert_row_refuses_a_repeated_key_as_the_orm_does():
    user = UserFactory()
    order_sql.insert_row(_unsaved(user, "same"))
    with pytest.raises(IntegrityError):
        order_sql.insert_row(_unsaved(user, "same"))


def test_insert_row_returns_the_extra_expression_in_the_same_round_trip():
    order = OrderFactory()
    event = OrderEvent(user_id=order.user_id, order_id=order.pk, type="order.accepted", data={"a": 1},
                       created_at=timezone.now())
    with CaptureQueriesContext(connection) as ctx:
        extra = order_sql.insert_row(event, also="SELECT %s + 1", also_params=[41])
    assert extra == 42
    assert OrderEvent.objects.get(pk=event.pk).data == {"a": 1}
    if connection.features.can_return_columns_from_insert:
        assert len(ctx.captured_queries) == 1


def test_update_row_writes_the_named_fields_only():
    order = OrderFactory(exchange="sim", currency="USD")
    order.exchange, order.currency, order.symbol = "alpaca", "KRW", "ETH/USD"
    assert order_sql.update_row(order, ["exchange", "currency"]) == 1
    stored = Order.objects.get(pk=order.pk)
    assert (stored.exchange, stored.currency, stored.symbol) == ("alpaca", "KRW", "BTC/USD")


def test_update_row_with_a_where_that_does_not_hold_writes_nothing():
    order = OrderFactory(status="accepted", filled_qty=Decimal("0.005"))
    order.status = "filled"
    where = f"{order_sql.column(Order, 'filled_qty')} <= %s"
    assert order_sql.update_row(order, ["status"], where=where,
                                params=[order_sql.db_value(Order, "filled_qty", Decimal("0.001"))]) == 0
    assert Order.objects.get(pk=order.pk).status == "accepted"
    assert order_sql.update_row(order, ["status"], where=where,
                                params=[order_sql.db_value(Order, "filled_qty", Decimal("0.005"))]) == 1
    assert Order.objects.get(pk=order.pk).status == "filled"
