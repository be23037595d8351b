"""A least-privilege deployment on PostgreSQL: the audit log stays append-only against the service's
own database role, whatever that session sets or tries (issue 13, item 1).

The role is real: created here with LOGIN (trust auth on 127.0.0.1), given its grants by
`manage.py audit_grants --apply`, and connected to as itself. Roles are cluster-wide, so its name
is derived from the test database's and it is dropped afterwards.
"""

from __future__ import annotations

import contextlib

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.models import BrokerOrderEvent, EventType
from audit.services import record_order_event
from equity.models import Order
from tests.equity.helpers import crypto_limit, place

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# django-pgtrigger's escape hatch, naming the triggers of audit migration 0001 and today's one.
IGNORE_EVERY_TRIGGER = ("{pgtrigger_append_only_no_update_dda9d,pgtrigger_append_only_no_delete_0716d,"
                        "pgtrigger_append_only_no_truncate_6402d,broker_order_events_append_only}")
INSUFFICIENT_PRIVILEGE = "42501"
RAISED_BY_THE_TRIGGER = "P0001"


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("database roles and triggers are PostgreSQL's")


def _drop_role(cursor, name: str) -> None:
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])
    if cursor.fetchone():
        cursor.execute(f"DROP OWNED BY {name}")  # the grants in this database
        cursor.execute(f"DROP ROLE {name}")


@pytest.fixture
def make_role():
    """make_role(suffix) -> name: a LOGIN role, not superuser, owning nothing; dropped at teardown."""
    made = []

    def make(suffix: str) -> str:
        name = f"{connection.settings_dict['NAME']}_{suffix}".lower()[:63]
        with connection.cursor() as cursor:
            _drop_role(cursor, name)  # left over by an interrupted run
            cursor.execute(f"CREATE ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
        made.append(name)
        return name

    yield make
    connection.close()  # every connection as one of the roles is closed by now; start clean
    with connection.cursor() as cursor:
        for name in made:
            _drop_role(cursor, name)


@pytest.fixture
def service_role(make_role):
    name = make_role("service")
    call_command("audit_grants", name, "--apply")
    return name


@contextlib.contextmanager
def connected_as(role: str):
    """A psycopg connection to the test database as `role` itself (no SET ROLE: a real login)."""
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, dbname=db["NAME"],
                         user=role, autocommit=True) as conn:
        yield conn


def refused(conn, *statements: str) -> str:
    """Run the statements in one transaction, which must fail; the SQLSTATE it failed with."""
    with pytest.raises(psycopg.Error) as failure:
        with conn.transaction(), conn.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
    return failure.value.sqlstate


@pytest.fixture
def event(user):
    return record_order_event(user_id=user.pk, event_type=EventType.PLACED, client_order_id="k", symbol="AAPL")


def _unchanged(event) -> bool:
    return list(BrokerOrderEvent.objects.values_list("pk", "symbol")) == [(event.pk, "AAPL")]


@pytest.mark.parametrize("statements", [
    ["UPDATE broker_order_events SET symbol = 'X'"],
    ["DELETE FROM broker_order_events"],
    ["TRUNCATE broker_order_events"],
    [f"SET LOCAL pgtrigger.ignore = '{IGNORE_EVERY_TRIGGER}'", "UPDATE broker_order_events SET symbol = 'X'"],
    [f"SET LOCAL pgtrigger.ignore = '{IGNORE_EVERY_TRIGGER}'", "DELETE FROM broker_order_events"],
    ["ALTER TABLE broker_order_events DISABLE TRIGGER broker_order_events_append_only"],
    ["ALTER TABLE broker_order_events DISABLE TRIGGER ALL"],
    ["DROP TRIGGER broker_order_events_append_only ON broker_order_events"],
    ["SET LOCAL session_replication_role = replica"],  # superuser only: replica mode would skip triggers
    ["CREATE OR REPLACE FUNCTION broker_order_events_append_only() RETURNS trigger LANGUAGE plpgsql "
     "AS $$ BEGIN RETURN NULL; END $$"],
    # PostgreSQL only warns ("no privileges were granted"); the UPDATE after it is what is refused
    ["GRANT UPDATE ON broker_order_events TO CURRENT_USER", "UPDATE broker_order_events SET symbol = 'X'"],
], ids=["update", "delete", "truncate", "ignore+update", "ignore+delete", "disable-trigger",
        "disable-all", "drop-trigger", "replica", "replace-function", "self-grant"])
def test_the_service_role_cannot_change_or_unlock_the_audit_log(service_role, event, statements):
    with connected_as(service_role) as conn:
        assert refused(conn, *statements) == INSUFFICIENT_PRIVILEGE
    assert _unchanged(event)


def test_the_service_role_may_insert_and_select_audit_rows(service_role, event):
    with connected_as(service_role) as conn, conn.cursor() as cursor:
        cursor.execute("INSERT INTO broker_order_events (user_id, event_type, asset_class, exchange, environment, "
                       "symbol, side, order_type, client_order_id, broker_client_id, broker_order_id, status, "
                       "error_code, error_detail, risk_rule, request_body, broker_reply, request_id, "
                       "client_request_id, first_live_order, created_at, prev_hash, hash) VALUES (%s, 'rejected', "
                       "'', '', '', 'MSFT', '', '', 'k2', '', '', '', '', '', '', '{}', '{}', '', '', false, now(), "
                       "'', '')",
                       [event.user_id])
        cursor.execute("SELECT symbol FROM broker_order_events ORDER BY id")
        assert [r[0] for r in cursor.fetchall()] == ["AAPL", "MSFT"]


def test_the_service_works_as_its_least_privilege_role(service_role, api_client, sim_crypto):
    """The whole order flow over HTTP, with the service's default connection logged in as the role:
    place (audit rows written), replay, list, cancel."""
    owner = connection.settings_dict["USER"]
    connection.close()
    connection.settings_dict["USER"] = service_role
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            assert cursor.fetchone()[0] == service_role
        body = crypto_limit(client_order_id="least-privilege-1")
        placed = place(api_client, body)
        assert placed.status_code == 201, placed.content
        assert place(api_client, body).status_code == 200
        listing = api_client.get("/api/equity/orders", {"asset_class": "crypto", "status": "open"})
        assert [o["order_id"] for o in listing.json()["items"]] == ["least-privilege-1"]
        assert api_client.delete("/api/equity/orders/least-privilege-1?asset_class=crypto").status_code == 204
    finally:
        connection.close()
        connection.settings_dict["USER"] = owner
    assert Order.objects.get(client_order_id="least-privilege-1").status == "canceled"
    assert list(BrokerOrderEvent.objects.order_by("id").values_list("event_type", flat=True)) == [
        "submitted", "placed", "canceled"]


@pytest.mark.parametrize("statement", ["UPDATE broker_order_events SET symbol = 'X'",
                                       "DELETE FROM broker_order_events"])
def test_the_trigger_refuses_the_owner_even_with_pgtrigger_ignore_set(event, statement):
    """The owner (here also the superuser the tests run as) is refused by the trigger itself."""
    with connected_as(connection.settings_dict["USER"]) as conn:
        assert refused(conn, f"SET LOCAL pgtrigger.ignore = '{IGNORE_EVERY_TRIGGER}'", statement) \
            == RAISED_BY_THE_TRIGGER
        assert refused(conn, "SET LOCAL session_replication_role = replica", statement) == RAISED_BY_THE_TRIGGER
    assert _unchanged(event)


@pytest.mark.parametrize("statement", ["UPDATE broker_order_events SET symbol = 'X'",
                                       "DELETE FROM broker_order_events", "TRUNCATE broker_order_events"])
def test_the_trigger_refuses_a_role_granted_too_much_even_with_pgtrigger_ignore_set(make_role, event, statement):
    """Grants set up by hand that go too far are still stopped by the trigger, whatever the session sets."""
    careless = make_role("careless")
    with connection.cursor() as cursor:
        cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON broker_order_events TO {careless}")
    with connected_as(careless) as conn:
        assert refused(conn, f"SET LOCAL pgtrigger.ignore = '{IGNORE_EVERY_TRIGGER}'", statement) \
            == RAISED_BY_THE_TRIGGER
    assert _unchanged(event)


def test_audit_grants_refuses_a_superuser_a_member_of_the_owner_and_an_unknown_role(make_role):
    with pytest.raises(CommandError, match="superuser"):
        call_command("audit_grants", connection.settings_dict["USER"], "--apply")
    member = make_role("owner_member")
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'broker_order_events'")
        cursor.execute(f"GRANT {cursor.fetchone()[0]} TO {member}")  # could SET ROLE to the owner
    with pytest.raises(CommandError, match="owner"):
        call_command("audit_grants", member, "--apply")
    with pytest.raises(CommandError, match="does not exist"):
        call_command("audit_grants", "no_such_role_anywhere", "--apply")
    with pytest.raises(CommandError, match="role:"):
        call_command("audit_grants", "x; DROP TABLE broker_order_events", "--apply")


def test_audit_grants_prints_sql_that_grants_only_select_and_insert_on_the_audit_table(capsys):
    call_command("audit_grants", "equity_service")
    out = capsys.readouterr().out
    assert 'GRANT SELECT, INSERT ON "public"."broker_order_events" TO "equity_service";' in out
    assert 'GRANT SELECT, INSERT, UPDATE, DELETE ON "public"."equity_order" TO "equity_service";' in out
    audit_lines = [line for line in out.splitlines() if "broker_order_events" in line and "GRANT" in line]
    assert len(audit_lines) == 1
