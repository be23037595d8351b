"""Each route's number of database queries is pinned and does not grow with the user's orders,
positions or audit rows."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.equity.helpers import crypto_limit, crypto_market, place

pytestmark = pytest.mark.django_db
Q = {"asset_class": "crypto"}


def _history(client, n):
    for _ in range(n):
        place(client, crypto_limit())
        place(client, crypto_market(qty=0.001))


def _route(client, name):
    placed = place(client, crypto_limit()).json()
    return {
        "place": lambda: place(client, crypto_limit()),
        "get": lambda: client.get(f"/api/equity/orders/{placed['broker_order_id']}", Q),
        "list": lambda: client.get("/api/equity/orders", Q),
        "positions": lambda: client.get("/api/equity/positions", Q),
        "account": lambda: client.get("/api/equity/account", Q),
        "cancel": lambda: client.delete(f"/api/equity/orders/{placed['broker_order_id']}?asset_class=crypto"),
    }[name]


# place: 22 before issues 15 and 16; + the kill_switch rule's one read, + per audit row (submitted,
# placed) the chain head's lock and update (audit.services.record_order_event); + the placement's
# event (equity.events: the user's event-stream lock, the event row, the user's subscriptions), in
# the transaction of the outcome; the delivery is not in it. Issue 17: an audit row is one statement
# on PostgreSQL and two on SQLite (audit.sql), not the head's lock, the INSERT and the head's update;
# gates 3 and 4 read the connection, the RiskProfile and the covering kill switches in one statement;
# the simulator's account, next expiry and holdings are one read (positions, account: 3), a resting
# buy one statement on PostgreSQL (SQLite reads the quote with the account, then reserves and inserts);
# the route and its `submitted` row, and the outcome with its event and audit row, one statement each
# on PostgreSQL (equity.order_sql, equity.events); get 4 and cancel 19: the order row and its
# audit-trail ownership in one statement (equity.selectors.owned_order); list 5: the tally's total a
# subquery of the page's statement. place: 23 on SQLite; 11 on PostgreSQL inside this test's transaction
# (savepoints), 7 as served in autocommit (bench/README.md).
@pytest.mark.parametrize("name,ceiling", [("place", 23), ("get", 4), ("list", 5), ("positions", 3),
                                          ("account", 3), ("cancel", 19)])
def test_route_queries_are_bounded_and_do_not_grow_with_history(api_client, sim_crypto, settings, name, ceiling,
                                                                django_assert_max_num_queries, equity_orders):
    equity_orders.RATE_LIMIT_ORDERS = "1000/m"
    _history(api_client, 2)
    call = _route(api_client, name)
    with django_assert_max_num_queries(ceiling) as few:
        assert call().status_code < 300
    baseline = len(few.captured_queries)
    _history(api_client, 10)
    call = _route(api_client, name)
    with django_assert_max_num_queries(baseline):
        assert call().status_code < 300


def _placement_sql(client, body) -> list[str]:
    with CaptureQueriesContext(connection) as ctx:
        assert place(client, body).status_code == 201
    return [q["sql"] for q in ctx.captured_queries]


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_idempotency_claim_is_a_lone_insert(api_client, sim_crypto):
    sql = _placement_sql(api_client, crypto_limit())
    claim = next(i for i, s in enumerate(sql) if s.startswith('INSERT INTO "equity_order"'))
    assert not sql[claim - 1].startswith(("BEGIN", "SAVEPOINT"))
    assert not sql[claim + 1].startswith(("COMMIT", "RELEASE"))


def test_the_outcome_update_writes_only_what_the_broker_changed_and_the_attempt(api_client, sim_crypto):
    sql = _placement_sql(api_client, crypto_limit())  # rests: no fill, so filled_qty and avg_fill_price stay
    outcome = [s for s in sql if s.startswith('UPDATE "equity_order"')][-1]
    written = set(re.findall(r'"(\w+)" = ', outcome.split(" WHERE ")[0]))
    assert written == {"attempt", "broker_order_id", "status", "submitted_at", "updated_at"}
