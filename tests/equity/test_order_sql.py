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


# --- a paper placement's writes, each with its audit row in one statement (PostgreSQL) ---------------

from audit.chain import verify_chain  # noqa: E402
from audit.models import BrokerOrderEvent  # noqa: E402
from audit.services import prepare_order_event, record_order_event  # noqa: E402
from equity.events import save_order_state_audited  # noqa: E402
from equity.models import EventStream, WebhookDelivery, WebhookSubscription  # noqa: E402
from tests.equity.helpers import crypto_limit, place  # noqa: E402

postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="one statement needs PostgreSQL's DML CTEs")


def _statements(client, body) -> list[str]:
    with CaptureQueriesContext(connection) as ctx:
        resp = place(client, body)
    assert resp.status_code == 201, resp.content
    return [q["sql"] for q in ctx.captured_queries]


@postgres_only
def test_after_the_first_placement_route_and_submitted_row_are_one_statement_and_so_is_the_outcome(api_client,
                                                                                                      sim_crypto):
    place(api_client, crypto_limit(client_order_id="first"))  # creates the chain head and the event stream
    sql = _statements(api_client, crypto_limit(client_order_id="second"))
    route = [s for s in sql if s.startswith("WITH w AS (UPDATE")]
    outcome = [s for s in sql if s.startswith("WITH s AS (UPDATE")]
    assert len(route) == 1 and len(outcome) == 1
    order = Order.objects.get(client_order_id="second")
    types = list(BrokerOrderEvent.objects.filter(client_order_id="second").order_by("id")
                 .values_list("event_type", flat=True))
    assert types == ["submitted", "placed"]
    assert list(OrderEvent.objects.filter(order=order).values_list("type", flat=True)) == ["order.accepted"]
    assert order.attempt == "done" and order.status == "accepted" and order.connection_id == sim_crypto.pk
    assert verify_chain(order.user_id).ok


@postgres_only
def test_the_one_statement_outcome_writes_deliveries_for_matching_subscriptions_only(api_client, sim_crypto, user):
    place(api_client, crypto_limit(client_order_id="warm"))
    now = timezone.now()
    every = WebhookSubscription.objects.create(user=user, url="https://a.example/h", events=["*"], created_at=now)
    accepted = WebhookSubscription.objects.create(user=user, url="https://b.example/h", events=["order.accepted"],
                                                  created_at=now)
    WebhookSubscription.objects.create(user=user, url="https://c.example/h", events=["order.filled"], created_at=now)
    WebhookSubscription.objects.create(user=user, url="https://d.example/h", events=["*"], active=False,
                                       created_at=now)
    sql = _statements(api_client, crypto_limit(client_order_id="hooked"))
    assert any(s.startswith("WITH s AS (UPDATE") for s in sql)
    event = OrderEvent.objects.get(order__client_order_id="hooked")
    deliveries = WebhookDelivery.objects.filter(event=event)
    assert sorted(deliveries.values_list("subscription_id", flat=True)) == sorted([every.pk, accepted.pk])
    assert set(deliveries.values_list("status", flat=True)) == {"pending"}


@pytest.mark.parametrize("stored", ["canceled", "filled"])
def test_an_outcome_older_than_the_row_writes_no_state_and_no_event_but_its_audit_row(stored):
    order = OrderFactory(status=stored, attempt="in_flight")
    OrderEvent.objects.filter(order=order).delete()
    # The stream and the chain head exist, so on PostgreSQL the one statement runs, and its guard refuses.
    EventStream.objects.create(user_id=order.user_id, writes=0)
    record_order_event(user_id=order.user_id, event_type="submitted", client_order_id=order.client_order_id)
    stale = Order.objects.get(pk=order.pk)
    stale.status = "accepted"
    audit = prepare_order_event(user_id=order.user_id, event_type="placed", client_order_id=order.client_order_id,
                                status="accepted")
    assert save_order_state_audited(stale, audit, fields=["status"], placed=True) is None
    assert Order.objects.get(pk=order.pk).status == stored
    assert not OrderEvent.objects.filter(order=order).exists()
    assert BrokerOrderEvent.objects.filter(client_order_id=order.client_order_id, event_type="placed").count() == 1
    assert verify_chain(order.user_id).ok


def test_a_users_first_outcome_creates_the_stream_and_the_chain_head_and_writes_both():
    order = OrderFactory(status="pending", attempt="in_flight")
    order.status = "accepted"
    audit = prepare_order_event(user_id=order.user_id, event_type="placed", client_order_id=order.client_order_id)
    event = save_order_state_audited(order, audit, fields=["status"], placed=True)
    assert event is not None and OrderEvent.objects.get(pk=event.pk).type == "order.accepted"
    stored = Order.objects.get(pk=order.pk)
    assert (stored.status, stored.attempt) == ("accepted", "done")
    assert BrokerOrderEvent.objects.filter(client_order_id=order.client_order_id).count() == 1
    assert verify_chain(order.user_id).ok


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_placement_path_works_with_the_parameter_binding_ci_does_not_run(api_client, sim_crypto):
    """The demo site binds parameters in psycopg (Django's default); a host may bind them on the server
    (OPTIONS server_side_binding, bench/README.md). The plain statements work with both: this test runs
    a placement, a replay, the list, the order, a cancel and a refusal with the binding CI does not use."""
    from tests.equity.helpers import assert_error

    options = connection.settings_dict.setdefault("OPTIONS", {})
    before = options.get("server_side_binding")
    options["server_side_binding"] = before is not True
    connection.close()
    try:
        with connection.cursor() as cursor:
            assert (type(cursor.cursor).__name__ == "ServerBindingCursor") is (before is not True)
        for key in ("bind-1", "bind-2"):  # the second: the stream and the chain head exist (one statement)
            placed = place(api_client, crypto_limit(client_order_id=key))
            assert placed.status_code == 201, placed.content
        assert place(api_client, crypto_limit(client_order_id="bind-2")).status_code == 200
        order_id = placed.json()["order_id"]
        listed = api_client.get("/api/equity/orders", {"asset_class": "crypto"}).json()
        assert listed["total"] == 2 and {o["client_order_id"] for o in listed["items"]} == {"bind-1", "bind-2"}
        assert api_client.get(f"/api/equity/orders/{order_id}", {"asset_class": "crypto"}).status_code == 200
        assert api_client.delete(f"/api/equity/orders/{order_id}?asset_class=crypto").status_code == 204
        assert_error(place(api_client, crypto_limit(client_order_id="bind-3", qty=1000)), 422, "INSUFFICIENT_FUNDS")
        user_id = Order.objects.get(client_order_id="bind-1").user_id
        assert verify_chain(user_id).ok
    finally:
        if before is None:
            options.pop("server_side_binding", None)
        else:
            options["server_side_binding"] = before
        connection.close()
