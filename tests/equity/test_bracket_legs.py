"""Bracket legs are orders of their own, on the simulator through the API (issue 14, item 1).

A bracket buy rests as one order; once a quote fills it, its take-profit and stop-loss show in the
list as orders of their own (order_id = the parent's plus `:tp` / `:sl`, parent_order_id = the
parent's), in the parent's `legs`, readable and cancelable by either id, each the owner's only. When
one leg fills the simulator cancels the other (OCO), and the audit log shows both outcomes.
"""

from __future__ import annotations

import pytest

from audit.models import BrokerOrderEvent
from brokers.models import SimAccount
from brokers.sim_exchange import set_quote
from equity.models import Order
from tests.equity.helpers import ORDER_FIELDS, assert_error, crypto_limit, crypto_market, place
from tests.factories import BrokerAccountFactory

pytestmark = pytest.mark.django_db
Q = {"asset_class": "crypto"}
ORDERS = "/api/equity/orders"


def bracket_buy(key="b-1", **overrides) -> dict:
    """Rests below the quote (50000); legs at 52000 (take-profit) and 44000 (stop-loss)."""
    return crypto_limit(**{"limit_price": 45000, "bracket": {"take_profit": 52000, "stop_loss": 44000},
                           "client_order_id": key, **overrides})


def fill_entry():
    set_quote("crypto", "BTC/USD", "44900")  # crosses the 45000 limit; neither leg is reached


def get(client, ref):
    return client.get(f"{ORDERS}/{ref}", Q)


def delete(client, ref):
    return client.delete(f"{ORDERS}/{ref}?asset_class=crypto")


def listed(client, **query) -> dict:
    resp = client.get(ORDERS, {**Q, **query})
    assert resp.status_code == 200, resp.content[:500]
    return resp.json()


def events(ref) -> list[tuple[str, str]]:
    return list(BrokerOrderEvent.objects.filter(client_order_id=ref).order_by("id")
                .values_list("event_type", "status"))


@pytest.fixture
def bob(make_client, other_user, quotes):
    BrokerAccountFactory(user=other_user)
    return make_client(other_user)


def test_a_resting_bracket_order_has_no_legs_yet(api_client, sim_crypto):
    placed = place(api_client, bracket_buy())
    assert placed.status_code == 201
    body = placed.json()
    assert set(body) == ORDER_FIELDS
    assert body["status"] == "accepted" and body["metadata"]["legs"] == [] and body["metadata"].get("parent_order_id") is None
    opened = listed(api_client, status="open")
    assert [o["order_id"] for o in opened["items"]] == ["b-1"] and opened["total"] == 1


def test_once_the_entry_fills_both_legs_are_open_orders_of_their_own(api_client, sim_crypto):
    parent = place(api_client, bracket_buy()).json()
    fill_entry()
    opened = listed(api_client, status="open")
    legs = {o["order_id"]: o for o in opened["items"]}
    assert set(legs) == {"b-1:tp", "b-1:sl"} and opened["total"] == 2
    take, stop_loss = legs["b-1:tp"], legs["b-1:sl"]
    for leg in (take, stop_loss):
        assert set(leg) == ORDER_FIELDS
        assert leg["metadata"].get("parent_order_id") == "b-1" and leg["status"] == "accepted" and "legs" not in leg["metadata"]
        assert leg["side"] == "sell" and leg["qty"] == 0.01 and leg["exchange"] == "sim" and leg["currency"] == "USD"
        assert leg["broker_order_id"].startswith("sim-") and leg["broker_order_id"] != parent["broker_order_id"]
        assert leg["client_order_id"] == leg["order_id"] and leg["bracket"] is None
    assert (take["order_type"], take["limit_price"], take["stop_price"]) == ("limit", 52000, None)
    assert (stop_loss["order_type"], stop_loss["limit_price"], stop_loss["stop_price"]) == ("stop", None, 44000)

    got = get(api_client, "b-1").json()
    assert got["status"] == "filled" and got["metadata"].get("parent_order_id") is None
    assert [(leg["order_id"], leg["status"]) for leg in got["metadata"]["legs"]] == [("b-1:tp", "accepted"), ("b-1:sl", "accepted")]
    everything = listed(api_client)
    assert everything["total"] == 3 == len(everything["items"])
    assert [o["metadata"]["legs"] for o in everything["items"] if o["order_id"] == "b-1"] == [got["metadata"]["legs"]]
    assert events("b-1:tp") == [("leg_opened", "accepted")] and events("b-1:sl") == [("leg_opened", "accepted")]


def test_a_leg_is_read_by_its_broker_order_id_and_by_its_order_id(api_client, sim_crypto):
    place(api_client, bracket_buy())
    fill_entry()
    by_key = get(api_client, "b-1:sl")  # the first read of the parent's family mirrors the legs
    assert by_key.status_code == 200, by_key.content
    leg = by_key.json()
    assert leg["order_id"] == "b-1:sl" and leg["metadata"].get("parent_order_id") == "b-1" and leg["order_type"] == "stop"
    by_broker = get(api_client, leg["broker_order_id"])
    assert by_broker.status_code == 200 and by_broker.json() == leg


def test_a_marketable_bracket_answers_201_with_its_legs(api_client, sim_crypto):
    body = place(api_client, bracket_buy(limit_price=50500)).json()
    assert body["status"] == "filled"
    assert [(leg["order_id"], leg["status"], leg["metadata"].get("parent_order_id")) for leg in body["metadata"]["legs"]] == [
        ("b-1:tp", "accepted", "b-1"), ("b-1:sl", "accepted", "b-1")]


def test_a_stop_limit_stop_loss_is_a_stop_limit_leg(api_client, sim_crypto):
    place(api_client, bracket_buy(bracket={"take_profit": 52000, "stop_loss": 44000, "stop_loss_limit": 43500}))
    fill_entry()
    leg = get(api_client, "b-1:sl").json()
    assert (leg["order_type"], leg["stop_price"], leg["limit_price"]) == ("stop_limit", 44000, 43500)
    assert leg["metadata"]["stop_limit_price"] == 43500


def test_cancelling_one_leg_cancels_that_leg_only(api_client, sim_crypto):
    place(api_client, bracket_buy())
    fill_entry()
    assert delete(api_client, "b-1:tp").status_code == 204
    assert get(api_client, "b-1:tp").json()["status"] == "canceled"
    assert get(api_client, "b-1:sl").json()["status"] == "accepted"
    assert get(api_client, "b-1").json()["status"] == "filled"
    assert [o["order_id"] for o in listed(api_client, status="open")["items"]] == ["b-1:sl"]
    assert events("b-1:tp") == [("leg_opened", "accepted"), ("canceled", "canceled")]
    assert events("b-1:sl") == [("leg_opened", "accepted")]
    # The stop-loss still protects the position: it fills when the price falls to it.
    set_quote("crypto", "BTC/USD", "43900")
    assert get(api_client, "b-1:sl").json()["status"] == "filled"
    assert events("b-1:sl")[-1] == ("leg_filled", "filled")


def test_take_profit_fills_the_stop_loss_is_canceled_and_the_audit_log_shows_both(api_client, sim_crypto):
    place(api_client, bracket_buy())
    fill_entry()
    listed(api_client)  # the legs are seen open
    set_quote("crypto", "BTC/USD", "52500")
    legs = {o["order_id"]: o for o in listed(api_client)["items"] if o["metadata"].get("parent_order_id")}
    assert legs["b-1:tp"]["status"] == "filled" and legs["b-1:tp"]["avg_fill_price"] == 52000
    assert legs["b-1:sl"]["status"] == "canceled"
    assert events("b-1:tp") == [("leg_opened", "accepted"), ("leg_filled", "filled")]
    assert events("b-1:sl") == [("leg_opened", "accepted"), ("leg_ended", "canceled")]
    assert listed(api_client, status="open")["items"] == []
    # Reading again audits nothing more: each outcome is recorded once.
    get(api_client, "b-1")
    listed(api_client)
    assert len(events("b-1:tp")) == len(events("b-1:sl")) == 2


def test_legs_that_ended_before_anyone_looked_are_audited_opened_and_ended(api_client, sim_crypto):
    place(api_client, bracket_buy())
    fill_entry()
    set_quote("crypto", "BTC/USD", "43000")  # the stop-loss fills before any read
    got = get(api_client, "b-1").json()
    assert [(leg["order_id"], leg["status"]) for leg in got["metadata"]["legs"]] == [("b-1:tp", "canceled"), ("b-1:sl", "filled")]
    assert events("b-1:sl") == [("leg_opened", "filled"), ("leg_filled", "filled")]
    assert events("b-1:tp") == [("leg_opened", "canceled"), ("leg_ended", "canceled")]


def test_cancelling_the_parent_cancels_its_open_legs(api_client, sim_crypto):
    place(api_client, bracket_buy())
    fill_entry()
    assert delete(api_client, "b-1").status_code == 204
    got = get(api_client, "b-1").json()
    assert got["status"] == "filled"  # the entry had filled; what was still open is canceled
    assert {leg["status"] for leg in got["metadata"]["legs"]} == {"canceled"}
    assert events("b-1:tp")[-1] == ("canceled", "canceled") and events("b-1:sl")[-1] == ("canceled", "canceled")
    assert SimAccount.objects.get().reserved_cash == 0
    assert_error(delete(api_client, "b-1"), 422, "BROKER_REJECTED")  # nothing is open any more
    assert events("b-1")[-1][0] == "cancel_rejected"


def test_cancelling_an_unfilled_parent_cancels_it_and_no_leg_ever_opens(api_client, sim_crypto):
    place(api_client, bracket_buy())
    assert delete(api_client, "b-1").status_code == 204
    fill_entry()
    got = get(api_client, "b-1").json()
    assert got["status"] == "canceled" and got["metadata"]["legs"] == []
    assert [kind for kind, _ in events("b-1")] == ["submitted", "placed", "canceled"]


def test_a_canceled_leg_cannot_be_canceled_again(api_client, sim_crypto):
    place(api_client, bracket_buy())
    fill_entry()
    assert delete(api_client, "b-1:tp").status_code == 204
    assert_error(delete(api_client, "b-1:tp"), 422, "BROKER_REJECTED")


def test_another_users_leg_is_404_on_every_route_and_absent_from_their_list(api_client, sim_crypto, bob):
    place(api_client, bracket_buy())
    fill_entry()
    leg = get(api_client, "b-1:tp").json()
    for ref in (leg["broker_order_id"], "b-1:tp"):
        assert_error(bob.get(f"{ORDERS}/{ref}", Q), 404, "ORDER_NOT_FOUND")
        assert_error(bob.delete(f"{ORDERS}/{ref}?asset_class=crypto"), 404, "ORDER_NOT_FOUND")
    assert bob.get(ORDERS, Q).json()["items"] == []
    assert get(api_client, "b-1:tp").json()["status"] == "accepted"


def test_a_leg_order_id_taken_by_the_users_own_key_gets_another_valid_one(api_client, sim_crypto):
    place(api_client, crypto_market(qty=0.001, client_order_id="b-1:tp"))
    place(api_client, bracket_buy())
    fill_entry()
    take = next(o for o in get(api_client, "b-1").json()["metadata"]["legs"] if o["order_type"] == "limit")
    assert take["order_id"] != "b-1:tp" and take["order_id"].startswith("b-1.") and take["order_id"].endswith(":tp")
    assert get(api_client, take["order_id"]).json()["broker_order_id"] == take["broker_order_id"]
    assert get(api_client, "b-1:tp").json()["order_type"] == "market"  # the user's own order is untouched


def test_leg_order_ids_of_a_64_character_key_are_valid_keys_too(api_client, sim_crypto):
    key = "k" * 64
    place(api_client, bracket_buy(key=key))
    fill_entry()
    ids = [leg["order_id"] for leg in get(api_client, key).json()["metadata"]["legs"]]
    assert len(ids) == 2 and all(len(i) <= 64 and i.endswith((":tp", ":sl")) for i in ids)
    assert all(get(api_client, i).status_code == 200 for i in ids)


def test_the_list_total_counts_the_legs_it_lists(api_client, sim_crypto):
    for n in range(3):
        place(api_client, bracket_buy(key=f"b-{n}"))
    fill_entry()
    page = listed(api_client, size=4)
    assert page["total"] == 9 and len(page["items"]) == 4
    assert listed(api_client, status="open")["total"] == 6
    assert Order.objects.filter(parent__isnull=False).count() == 6


def test_the_list_reads_legs_in_queries_that_do_not_grow_with_the_brackets_on_the_page(
        api_client, sim_crypto, equity_orders, django_assert_max_num_queries):
    equity_orders.RATE_LIMIT_ORDERS = "1000/m"

    def brackets(first, n):
        for k in range(first, first + n):
            place(api_client, bracket_buy(key=f"b-{k}", limit_price=50500))  # fills at once: legs in the reply
        listed(api_client)

    brackets(0, 2)
    with django_assert_max_num_queries(16) as few:
        listed(api_client)
    baseline = len(few.captured_queries)
    brackets(2, 4)
    with django_assert_max_num_queries(baseline):
        assert len(listed(api_client)["items"]) == 18


def test_a_leg_id_of_no_order_is_404_however_many_suffixes_it_has(api_client, sim_crypto):
    place(api_client, bracket_buy())
    fill_entry()
    for ref in ("b-1:tp:tp", "b-2:tp", ":tp", "b-1" + ":sl" * 2000):
        assert_error(get(api_client, ref), 404, "ORDER_NOT_FOUND")
    assert get(api_client, "b-1:sl").status_code == 200
