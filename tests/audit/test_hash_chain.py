"""The tamper-evident audit log (SPEC.md "Tamper-evident audit"): each user's rows form a hash chain
that verify_audit recomputes, naming the first row that does not verify; export_audit writes the
rows with their hashes so an auditor can verify them outside the service."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor

from audit.chain import GENESIS_HASH, verify_chain
from audit.models import AuditChainHead, BrokerOrderEvent
from tests.equity.helpers import crypto_limit, crypto_market, place
from tests.factories import BrokerAccountFactory

TRIGGER = "broker_order_events_append_only"


def raw_sql(sql: str, params=()):
    """An edit behind the service's back: on PostgreSQL the table owner switches the append-only
    trigger off for the statement (inside one transaction, so it is never off for anyone else)."""
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE broker_order_events DISABLE TRIGGER {TRIGGER}")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute(f"ALTER TABLE broker_order_events ENABLE ALWAYS TRIGGER {TRIGGER}")


def history(client):
    place(client, crypto_market())
    resting = place(client, crypto_limit()).json()
    place(client, crypto_market(qty=30))  # refused: funds
    client.delete(f"/api/equity/orders/{resting['order_id']}?asset_class=crypto")


def verify_output(*args) -> str:
    out = io.StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def recompute(row: dict) -> str:
    """The auditor's recipe, written from the README, not from the service's code."""
    content = {k: v for k, v in row.items() if k not in ("id", "prev_hash", "hash")}
    return hashlib.sha256((row["prev_hash"] + json.dumps(content, sort_keys=True, separators=(",", ":")))
                          .encode()).hexdigest()


@pytest.mark.django_db
def test_a_clean_log_verifies_and_each_row_links_to_the_previous_one_of_its_user(api_client, sim_crypto,
                                                                                  make_client, other_user):
    BrokerAccountFactory(user=other_user)
    history(api_client)
    history(make_client(other_user))
    for user in (api_client.user, other_user):
        rows = list(BrokerOrderEvent.objects.filter(user=user).order_by("id"))
        assert len(rows) == 6  # submitted + placed, twice; rejected; canceled
        assert rows[0].prev_hash == GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:]))
        head = AuditChainHead.objects.get(chain=f"user:{user.pk}")
        assert (head.last_event_id, head.hash, head.length) == (rows[-1].id, rows[-1].hash, 6)
    out = verify_output()
    assert f"user:{api_client.user.pk}: ok, 6 rows" in out and "2 chain(s) verify." in out
    assert "ok, 6 rows" in verify_output("--user", "bob")


@pytest.mark.django_db
@pytest.mark.parametrize("column,value", [("qty", "99"), ("error_code", ""), ("client_ip", "10.9.9.9"),
                                          ("request_body", '{"qty": 1000}')])
def test_editing_one_row_with_raw_sql_is_reported_at_exactly_that_row(api_client, sim_crypto, column, value):
    history(api_client)
    rows = list(BrokerOrderEvent.objects.filter(user=api_client.user).order_by("id"))
    target = rows[4]  # the refusal, in the middle of the chain
    raw_sql(f"UPDATE broker_order_events SET {column} = %s WHERE id = %s", [value, target.id])
    report = verify_chain(api_client.user.pk)
    assert (report.ok, report.broken_event_id) == (False, target.id)
    assert "content does not match" in report.reason
    with pytest.raises(CommandError, match=f"first broken row: {target.id} "):
        verify_output()


@pytest.mark.django_db
def test_a_row_removed_from_the_middle_is_reported_at_the_next_row_and_from_the_end_at_the_head(api_client,
                                                                                                 sim_crypto):
    history(api_client)
    rows = list(BrokerOrderEvent.objects.filter(user=api_client.user).order_by("id"))
    raw_sql("DELETE FROM broker_order_events WHERE id = %s", [rows[-1].id])
    report = verify_chain(api_client.user.pk)
    assert (report.broken_event_id, "removed from the end" in report.reason) == (rows[-2].id, True)
    raw_sql("DELETE FROM broker_order_events WHERE id = %s", [rows[2].id])
    report = verify_chain(api_client.user.pk)
    assert (report.broken_event_id, "does not link" in report.reason) == (rows[3].id, True)


@pytest.mark.django_db
def test_export_writes_every_row_with_its_hashes_in_chain_order_verifiable_outside(api_client, sim_crypto,
                                                                                     make_client, other_user,
                                                                                     tmp_path):
    BrokerAccountFactory(user=other_user)
    history(api_client)
    history(make_client(other_user))
    out = io.StringIO()
    call_command("export_audit", "--since", "2000-01-01", "--format", "jsonl", stdout=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 12
    by_user: dict = {}
    for row in rows:
        assert {"user_id", "prev_hash", "hash"} <= set(row)
        assert row["prev_hash"] == by_user.get(row["user_id"], GENESIS_HASH)
        assert recompute(row) == row["hash"]
        by_user[row["user_id"]] = row["hash"]
    target = tmp_path / "audit.csv"
    call_command("export_audit", "--format", "csv", "--output", str(target), stderr=io.StringIO())
    with open(target, newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["hash"] for r in table] == [r["hash"] for r in rows]
    out = io.StringIO()
    call_command("export_audit", "--since", "2999-01-01", stdout=out)
    assert out.getvalue() == ""


@pytest.mark.django_db
def test_admin_shows_whether_a_users_chain_verifies(client, api_client, sim_crypto):
    from tests.factories import UserFactory

    history(api_client)
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    event = BrokerOrderEvent.objects.filter(user=api_client.user).order_by("id")[2]
    resp = client.post("/admin/audit/brokerorderevent/", {"action": "verify_chains", "index": "0",
                                                            "_selected_action": [event.pk]},
                       follow=True)
    assert b"the chain verifies (6 rows)" in resp.content
    raw_sql("UPDATE broker_order_events SET symbol = 'ETH/USD' WHERE id = %s", [event.pk])
    resp = client.post("/admin/audit/brokerorderevent/", {"action": "verify_chains", "index": "0",
                                                            "_selected_action": [event.pk]},
                       follow=True)
    assert f"BROKEN at row {event.pk}".encode() in resp.content
    heads = client.get("/admin/audit/auditchainhead/")
    assert heads.status_code == 200 and b'alt="False"' in heads.content


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_placements_by_one_user_keep_one_unbroken_chain(make_client, user, quotes):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: real concurrent transactions")
    BrokerAccountFactory(user=user)
    statuses = []

    def trade(n):
        try:
            client = make_client(user)
            for i in range(3):
                statuses.append(place(client, crypto_limit(client_order_id=f"t{n}-{i}", limit_price=30000 + n))
                                .status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=trade, args=(n,)) for n in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert statuses == [201] * 24
    rows = list(BrokerOrderEvent.objects.filter(user=user).order_by("id"))
    assert len(rows) == 48  # submitted + placed per order
    assert len({r.prev_hash for r in rows}) == 48  # no two rows chained onto one predecessor: no fork
    report = verify_chain(user.pk)
    assert (report.ok, report.rows) == (True, 48), report.reason


@pytest.mark.django_db(transaction=True)
def test_the_migration_chains_the_rows_written_before_it(user):
    before, chained = ("audit", "0004_bracket_leg_events"), ("audit", "0005_hash_chain")
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    Event = executor.loader.project_state([before]).apps.get_model("audit", "BrokerOrderEvent")
    for i in range(3):
        Event.objects.create(user_id=user.pk, event_type="placed", symbol="BTC/USD", qty=Decimal("0.01"),
                             client_order_id=f"old-{i}", request_body={"qty": 0.01})
    Event.objects.create(user_id=user.pk + 1000, event_type="rejected", error_code="MARKET_CLOSED")
    executor = MigrationExecutor(connection)
    executor.migrate([chained])
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert verify_chain(user.pk).rows == 3 and verify_chain(user.pk).ok
    assert verify_chain(user.pk + 1000).ok
    first = BrokerOrderEvent.objects.filter(user=user).order_by("id").first()
    assert first.prev_hash == GENESIS_HASH and len(first.hash) == 64
    if connection.vendor == "postgresql":  # the trigger is on again
        with pytest.raises(Exception, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE broker_order_events SET symbol = 'X'")
