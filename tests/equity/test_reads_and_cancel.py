"""GET one, GET list, DELETE, positions and account on the simulator; two users never see each other."""

from __future__ import annotations

import pytest

from audit.models import BrokerOrderEvent
from brokers.sim_exchange import set_quote
from tests.equity.helpers import assert_error, crypto_limit, crypto_market, place
from tests.factories import BrokerAccountFactory

pytestmark = pytest.mark.django_db
Q = {"asset_class": "crypto"}

POSITION_FIELDS = {"asset_class", "exchange", "symbol", "qty", "avg_entry_price", "current_price", "unrealized_pnl",
                   "unrealized_pnl_pct", "currency", "side", "metadata"}
ACCOUNT_FIELDS = {"asset_class", "broker", "paper", "equity", "buying_power", "cash", "currency", "as_of",
                  "metadata"}


@pytest.fixture
def bob(make_client, other_user, quotes):
    BrokerAccountFactory(user=other_user)
    return make_client(other_user)


def test_get_by_broker_order_id_and_by_order_id_show_the_same_order(api_client, sim_crypto):
    placed = place(api_client, crypto_limit(client_order_id="mine")).json()
    by_broker = api_client.get(f"/api/equity/orders/{placed['broker_order_id']}", Q)
    by_key = api_client.get("/api/equity/orders/mine", Q)
    assert by_broker.status_code == by_key.status_code == 200
    assert by_broker.json()["broker_order_id"] == by_key.json()["broker_order_id"] == placed["broker_order_id"]


def test_get_shows_a_fill_made_by_a_new_quote(api_client, sim_crypto):
    placed = place(api_client, crypto_limit(limit_price=40000)).json()
    set_quote("crypto", "BTC/USD", "39000")
    got = api_client.get(f"/api/equity/orders/{placed['broker_order_id']}", Q).json()
    assert got["status"] == "filled" and got["filled_qty"] == 0.01


def test_cancel_is_204_then_get_shows_canceled_and_a_second_cancel_is_broker_rejected(api_client, sim_crypto):
    placed = place(api_client, crypto_limit()).json()
    path = f"/api/equity/orders/{placed['broker_order_id']}?asset_class=crypto"
    resp = api_client.delete(path)
    assert resp.status_code == 204 and resp.content == b""
    assert api_client.get(path).json()["status"] == "canceled"
    assert_error(api_client.delete(path), 422, "BROKER_REJECTED")
    kinds = list(BrokerOrderEvent.objects.order_by("id").values_list("event_type", flat=True))
    assert kinds[-2:] == ["canceled", "cancel_rejected"]


def test_unknown_order_is_404_on_get_and_delete(api_client, sim_crypto):
    assert_error(api_client.get("/api/equity/orders/nope", Q), 404, "ORDER_NOT_FOUND")
    assert_error(api_client.delete("/api/equity/orders/nope?asset_class=crypto"), 404, "ORDER_NOT_FOUND")


def test_another_users_order_is_404_on_every_route_and_absent_from_their_list(api_client, sim_crypto, bob):
    placed = place(api_client, crypto_limit(client_order_id="alices")).json()
    for ref in (placed["broker_order_id"], "alices"):
        assert_error(bob.get(f"/api/equity/orders/{ref}", Q), 404, "ORDER_NOT_FOUND")
        assert_error(bob.delete(f"/api/equity/orders/{ref}?asset_class=crypto"), 404, "ORDER_NOT_FOUND")
    assert bob.get("/api/equity/orders", Q).json()["items"] == []
    assert api_client.get(f"/api/equity/orders/{placed['broker_order_id']}", Q).json()["status"] == "accepted"


def test_foreign_id_is_404_even_for_a_user_without_any_connection(api_client, sim_crypto, make_client):
    from tests.factories import UserFactory

    placed = place(api_client, crypto_limit()).json()
    stranger = make_client(UserFactory(username="sam"))
    assert_error(stranger.get(f"/api/equity/orders/{placed['broker_order_id']}", Q), 404, "ORDER_NOT_FOUND")


def test_own_order_after_its_connection_is_deleted_is_403(api_client, sim_crypto):
    placed = place(api_client, crypto_limit()).json()
    sim_crypto.delete()
    assert_error(api_client.get(f"/api/equity/orders/{placed['order_id']}", Q), 403, "BROKER_NOT_CONFIGURED")


def test_list_groups_statuses_pages_and_orders_newest_first(api_client, sim_crypto):
    rested = [place(api_client, crypto_limit()).json()["broker_order_id"] for _ in range(3)]
    place(api_client, crypto_market(qty=0.001))
    opened = api_client.get("/api/equity/orders", {**Q, "status": "open"}).json()
    assert opened["total"] == 3 and [o["broker_order_id"] for o in opened["items"]] == rested[::-1]
    assert api_client.get("/api/equity/orders", {**Q, "status": "filled"}).json()["total"] == 1
    page = api_client.get("/api/equity/orders", {**Q, "size": 3, "page": 2}).json()
    assert (page["total"], page["page"], page["size"], len(page["items"])) == (4, 2, 3, 1)


def test_list_shows_canceled_and_expired_under_canceled(api_client, sim_crypto):
    placed = place(api_client, crypto_limit()).json()
    api_client.delete(f"/api/equity/orders/{placed['broker_order_id']}?asset_class=crypto")
    assert api_client.get("/api/equity/orders", {**Q, "status": "canceled"}).json()["total"] == 1


@pytest.mark.parametrize("bad", [{"size": 0}, {"size": 101}, {"page": 0}, {"status": "sideways"}, {"size": "0.5"},
                                 {"asset_class": "bonds"}])
def test_bad_list_parameters_are_400(api_client, sim_crypto, bad):
    assert_error(api_client.get("/api/equity/orders", {**Q, **bad}), 400, "VALIDATION_ERROR")


def test_list_without_asset_class_is_400(api_client, sim_crypto):
    assert_error(api_client.get("/api/equity/orders"), 400, "VALIDATION_ERROR")


def test_list_query_count_does_not_grow_with_the_number_of_orders(api_client, sim_crypto,
                                                                 django_assert_max_num_queries):
    for _ in range(3):
        place(api_client, crypto_market(qty=0.001))
    with django_assert_max_num_queries(12) as few:
        assert api_client.get("/api/equity/orders", Q).json()["total"] == 3
    baseline = len(few.captured_queries)
    for _ in range(12):
        place(api_client, crypto_market(qty=0.001))
    with django_assert_max_num_queries(baseline):
        assert api_client.get("/api/equity/orders", Q).json()["total"] == 15


def test_positions_follow_fills_and_quotes(api_client, sim_crypto):
    place(api_client, crypto_market(symbol="ETH/USD", qty=0.5))
    set_quote("crypto", "ETH/USD", "3300")
    items = api_client.get("/api/equity/positions", Q).json()["items"]
    eth = next(p for p in items if p["symbol"] == "ETH/USD")
    assert set(eth) == POSITION_FIELDS and eth["side"] == "LONG" and eth["qty"] == 0.5
    assert eth["avg_entry_price"] == 3000 and eth["current_price"] == 3300
    assert eth["unrealized_pnl"] == pytest.approx(150) and eth["unrealized_pnl_pct"] == pytest.approx(0.1)


def test_account_shows_equity_as_cash_plus_positions(api_client, sim_crypto):
    place(api_client, crypto_market(symbol="ETH/USD", qty=0.5))
    acct = api_client.get("/api/equity/account", Q).json()
    assert set(acct) == ACCOUNT_FIELDS
    assert acct["broker"] == "sim" and acct["paper"] is True and acct["currency"] == "USD"
    assert acct["equity"] == pytest.approx(acct["cash"] + 0.5 * 3000)


def test_positions_without_a_connection_is_403(api_client, db):
    assert_error(api_client.get("/api/equity/positions", Q), 403, "BROKER_NOT_CONFIGURED")


def test_trailing_slashes_work_too(api_client, sim_crypto):
    placed = place(api_client, crypto_limit()).json()
    for path in ("/api/equity/orders/", "/api/equity/positions/", "/api/equity/account/",
                 f"/api/equity/orders/{placed['broker_order_id']}/"):
        assert api_client.get(path, Q).status_code == 200, path


def test_positions_and_account_are_each_users_own(api_client, sim_crypto, bob):
    place(api_client, crypto_market(qty=0.1))
    assert bob.get("/api/equity/positions", Q).json()["items"] == []
    assert bob.get("/api/equity/account", Q).json()["cash"] == 100000
    assert api_client.get("/api/equity/account", Q).json()["cash"] == 95000
