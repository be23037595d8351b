"""The reads that now take one statement where they took two keep their answers: an order is the caller's
only with the audit trail naming it (equity.selectors.owned_order), and the list's total is the tally's
(equity.selectors.order_list_for_user), past the last page and after a refresh too."""

from __future__ import annotations

import pytest

from audit.models import BrokerOrderEvent
from brokers.sim_exchange import set_quote
from equity.models import Order
from tests.equity.helpers import assert_error, crypto_limit, place
from tests.factories import OrderFactory, UserFactory

pytestmark = pytest.mark.django_db
Q = {"asset_class": "crypto"}


def test_an_order_row_the_audit_trail_does_not_name_is_not_found(api_client, user, sim_crypto):
    OrderFactory(user=user, connection=sim_crypto, client_order_id="unaudited", broker_order_id="sim-unaudited")
    for ref in ("unaudited", "sim-unaudited"):
        body = assert_error(api_client.get(f"/api/equity/orders/{ref}", Q), 404, "ORDER_NOT_FOUND")
        assert body["detail"] == f"No order {ref!r} of yours."
        assert_error(api_client.delete(f"/api/equity/orders/{ref}?asset_class=crypto"), 404, "ORDER_NOT_FOUND")


def test_another_users_event_naming_the_ref_does_not_make_it_yours(api_client, user, sim_crypto, make_client):
    stranger = UserFactory()
    place(make_client(stranger), crypto_limit(client_order_id="theirs"))
    assert BrokerOrderEvent.objects.filter(user=stranger, client_order_id="theirs").exists()
    OrderFactory(user=user, connection=sim_crypto, client_order_id="theirs")  # a row of mine under their key
    assert_error(api_client.get("/api/equity/orders/theirs", Q), 404, "ORDER_NOT_FOUND")


def test_an_audited_ref_of_another_asset_class_names_the_asset_class(api_client, sim_crypto):
    place(api_client, crypto_limit(client_order_id="crypto-one"))
    body = assert_error(api_client.get("/api/equity/orders/crypto-one", {"asset_class": "us_equity"}), 404,
                        "ORDER_NOT_FOUND")
    assert body["detail"] == "No us_equity paper order 'crypto-one' of yours."


def test_the_total_is_exact_past_the_last_page_and_after_a_refresh(api_client, sim_crypto, equity_orders):
    equity_orders.RATE_LIMIT_ORDERS = "1000/m"
    for i in range(5):
        place(api_client, crypto_limit(limit_price=45000 + i))
    past = api_client.get("/api/equity/orders", {**Q, "page": 9, "size": 2}).json()
    assert past["items"] == [] and past["total"] == 5
    set_quote("crypto", "BTC/USD", "44000")  # every resting order fills; each list refreshes its page's
    groups = {"open": ["accepted", "partially_filled"], "filled": ["filled"]}
    for status in ("open", None, "filled", "open", "open"):
        params = {**Q, "size": 2, **({"status": status} if status else {})}
        body = api_client.get("/api/equity/orders", params).json()
        rows = Order.objects.filter(attempt="done", **({"status__in": groups[status]} if status else {}))
        assert body["total"] == rows.count() == (5 if status is None else body["total"])
        assert {o["status"] for o in body["items"]} <= set(groups.get(status, ["filled"]))
    assert api_client.get("/api/equity/orders", {**Q, "status": "filled"}).json()["total"] == 5


def test_the_tally_subquery_reads_the_models_columns_and_sums_what_the_orm_sums(api_client, user, sim_crypto):
    from django.db import connection
    from django.db.models import Sum

    from equity.models import OrderTally
    from equity.selectors import STATUS_GROUPS, tally_total_sql

    place(api_client, crypto_limit())
    OrderFactory(user=user, connection=sim_crypto, status="filled")
    OrderFactory(user=user, connection=sim_crypto, status="canceled", environment="live")
    qn = connection.ops.quote_name
    for statuses in (None, STATUS_GROUPS["open"], STATUS_GROUPS["canceled"], STATUS_GROUPS["filled"]):
        raw = tally_total_sql(user_id=user.pk, asset_class="crypto", environment="paper", statuses=statuses)
        columns = {f.column for f in OrderTally._meta.fields if f.name in ("user", "asset_class", "environment", "n")}
        assert all(qn(c) in raw.sql for c in columns) and qn(OrderTally._meta.db_table) in raw.sql
        assert (qn(OrderTally._meta.get_field("status").column) in raw.sql) == (statuses is not None)
        rows = OrderTally.objects.filter(user=user, asset_class="crypto", environment="paper")
        if statuses is not None:
            rows = rows.filter(status__in=statuses)
        expected = rows.aggregate(t=Sum("n"))["t"]
        got = Order.objects.filter(pk=Order.objects.first().pk).annotate(t=raw).values_list("t", flat=True).get()
        assert got == expected
