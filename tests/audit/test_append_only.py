"""broker_order_events is append-only: in code everywhere, and in the database itself on PostgreSQL."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from audit.models import BrokerOrderEvent, EventType
from audit.services import RequestMeta, record_order_event, scrub

pytestmark = pytest.mark.django_db


@pytest.fixture
def event(user):
    return record_order_event(user_id=user.pk, event_type=EventType.PLACED, client_order_id="k", symbol="AAPL")


def test_an_event_cannot_be_saved_twice(event):
    event.symbol = "MSFT"
    with pytest.raises(TypeError):
        event.save()


def test_an_event_cannot_be_deleted(event):
    with pytest.raises(TypeError):
        event.delete()


def test_the_queryset_refuses_update_and_delete(event):
    with pytest.raises(TypeError):
        BrokerOrderEvent.objects.filter(pk=event.pk).update(symbol="MSFT")
    with pytest.raises(TypeError):
        BrokerOrderEvent.objects.all().delete()


@pytest.mark.postgres
@pytest.mark.parametrize("sql", ["UPDATE broker_order_events SET symbol = 'X'",
                                 "DELETE FROM broker_order_events",
                                 "TRUNCATE broker_order_events"])
def test_postgres_refuses_raw_update_delete_and_truncate(event, sql):
    if connection.vendor != "postgresql":
        pytest.skip("database triggers are PostgreSQL's")
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cur:
        cur.execute(sql)
    assert BrokerOrderEvent.objects.get(pk=event.pk).symbol == "AAPL"


def test_secrets_are_scrubbed_from_request_bodies_and_replies():
    cleaned = scrub({"api_key": "PK1", "nested": {"secret_key": "s", "token": "t"}, "client_order_id": "keep",
                     "symbol": "AAPL"})
    assert cleaned == {"api_key": "[removed]", "nested": {"secret_key": "[removed]", "token": "[removed]"},
                       "client_order_id": "keep", "symbol": "AAPL"}


def test_request_meta_keeps_the_scrubbed_body_and_client_ip(rf):
    request = rf.post("/api/equity/orders", REMOTE_ADDR="10.0.0.7")
    request.data = {"symbol": "AAPL", "password": "x"}
    meta = RequestMeta.of(request)
    assert meta.client_ip == "10.0.0.7" and meta.body == {"symbol": "AAPL", "password": "[removed]"}
    assert meta.request_id


class TestAdmin:
    def test_superuser_can_list_and_search_but_not_add_change_or_delete(self, client, django_user_model, event):
        admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw-123456789")
        client.force_login(admin)
        listing = client.get("/admin/audit/brokerorderevent/", {"q": "k"})
        assert listing.status_code == 200 and b'id="result_list"' in listing.content
        assert client.get("/admin/audit/brokerorderevent/add/").status_code == 403
        assert client.post(f"/admin/audit/brokerorderevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
        client.post(f"/admin/audit/brokerorderevent/{event.pk}/change/", {"symbol": "MSFT"})
        assert BrokerOrderEvent.objects.get(pk=event.pk).symbol == "AAPL"

    def test_a_non_staff_user_cannot_open_the_audit_admin(self, client, user, event):
        client.force_login(user)
        resp = client.get("/admin/audit/brokerorderevent/")
        assert resp.status_code == 302 and "/admin/login/" in resp["Location"]
