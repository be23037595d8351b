"""Alpaca's native brackets through the API: the legs of its order reply become orders of their own
(issue 14, item 1), over the fake of tests/brokers/venues/alpaca.py.

Alpaca shows a bracket's legs at once, `held` (accepted here) until the entry fills; cancelling the
unfilled entry takes them along; when one leg fills, Alpaca cancels the other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import responses
import time_machine

from audit.models import BrokerOrderEvent
from tests.brokers.venues.alpaca import API_KEY, DATA_URL, LIVE_URL, PAPER_URL, SECRET_KEY, FakeAlpaca
from tests.equity.helpers import ORDER_FIELDS, assert_error, place

pytestmark = pytest.mark.django_db
NYSE_OPEN = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # Tuesday 10:00 New York
Q = {"asset_class": "us_equity"}
ORDERS = "/api/equity/orders"


@pytest.fixture
def alpaca(equity_orders, api_client, make_client):
    equity_orders.ALPACA_PAPER_URL, equity_orders.ALPACA_LIVE_URL, equity_orders.ALPACA_DATA_URL = PAPER_URL, LIVE_URL, DATA_URL
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        fake = FakeAlpaca(prices={"AAPL": Decimal("190")})
        fake.install(mock, base_url=PAPER_URL)
        resp = api_client.post("/api/brokers/accounts", {
            "asset_class": "us_equity", "exchange": "alpaca", "environment": "paper",
            "credentials": {"api_key": API_KEY, "secret_key": SECRET_KEY}}, format="json")
        assert resp.status_code == 201, resp.content
        api_client.during_the_session = lambda: make_client(api_client.user)
        yield fake


def bracket_buy(client, key="a-1", **bracket):
    body = {"asset_class": "us_equity", "symbol": "AAPL", "side": "buy", "qty": 5, "order_type": "limit",
            "limit_price": 188.2, "bracket": {"take_profit": 205, "stop_loss": 179, **bracket},
            "client_order_id": key}
    with time_machine.travel(NYSE_OPEN, tick=False):  # gate 4's market hours, with a token issued then
        resp = place(client.during_the_session(), body)
    assert resp.status_code == 201, resp.content
    return resp.json()


def events(ref) -> list[tuple[str, str]]:
    return list(BrokerOrderEvent.objects.filter(client_order_id=ref).order_by("id")
                .values_list("event_type", "status"))


def test_the_placement_answers_with_the_legs_alpaca_replied(api_client, alpaca):
    body = bracket_buy(api_client)
    assert body["status"] == "accepted" and body["exchange"] == "alpaca"
    take, stop_loss = body["metadata"]["legs"]
    assert set(take) == set(stop_loss) == ORDER_FIELDS
    assert (take["order_id"], take["order_type"], take["limit_price"], take["side"]) == ("a-1:tp", "limit", 205, "sell")
    assert (stop_loss["order_id"], stop_loss["order_type"], stop_loss["stop_price"]) == ("a-1:sl", "stop", 179)
    assert {take["status"], stop_loss["status"]} == {"accepted"} and take["metadata"].get("parent_order_id") == "a-1"
    assert [leg["id"] for leg in alpaca.orders[body["broker_order_id"]]["legs"]] == [
        take["broker_order_id"], stop_loss["broker_order_id"]]
    assert events("a-1:tp") == [("leg_opened", "accepted")] and events("a-1:sl") == [("leg_opened", "accepted")]


def test_legs_are_listed_and_read_by_either_id(api_client, alpaca):
    body = bracket_buy(api_client)
    opened = api_client.get(ORDERS, {**Q, "status": "open"}).json()
    assert {o["order_id"] for o in opened["items"]} == {"a-1", "a-1:tp", "a-1:sl"} and opened["total"] == 3
    leg_id = body["metadata"]["legs"][1]["broker_order_id"]
    by_id, by_key = (api_client.get(f"{ORDERS}/{ref}", Q) for ref in (leg_id, "a-1:sl"))
    assert by_id.status_code == by_key.status_code == 200 and by_id.json() == by_key.json()
    assert by_id.json()["metadata"].get("parent_order_id") == "a-1"


def test_a_stop_limit_stop_loss_is_a_stop_limit_leg(api_client, alpaca):
    leg = bracket_buy(api_client, stop_loss_limit=178.5)["metadata"]["legs"][1]
    assert (leg["order_type"], leg["stop_price"], leg["limit_price"]) == ("stop_limit", 179, 178.5)
    assert leg["metadata"]["stop_limit_price"] == 178.5


def test_take_profit_fills_alpaca_cancels_the_stop_loss_and_the_audit_log_shows_both(api_client, alpaca):
    bracket_buy(api_client)
    alpaca.set_price("AAPL", "188")  # the entry fills at 188.2
    alpaca.set_price("AAPL", "206")  # the take-profit fills at 205; Alpaca cancels the stop-loss
    items = {o["order_id"]: o for o in api_client.get(ORDERS, Q).json()["items"]}
    assert items["a-1"]["status"] == "filled"
    assert (items["a-1:tp"]["status"], items["a-1:tp"]["avg_fill_price"]) == ("filled", 205)
    assert items["a-1:sl"]["status"] == "canceled"
    assert events("a-1:tp") == [("leg_opened", "accepted"), ("leg_filled", "filled")]
    assert events("a-1:sl") == [("leg_opened", "accepted"), ("leg_ended", "canceled")]


def test_cancelling_one_leg_cancels_that_leg_only(api_client, alpaca):
    body = bracket_buy(api_client)
    alpaca.set_price("AAPL", "188")
    assert api_client.delete(f"{ORDERS}/a-1:tp?asset_class=us_equity").status_code == 204
    got = api_client.get(f"{ORDERS}/a-1", Q).json()
    assert got["status"] == "filled"
    assert [(leg["order_id"], leg["status"]) for leg in got["metadata"]["legs"]] == [("a-1:tp", "canceled"), ("a-1:sl", "accepted")]
    assert alpaca.legs[body["metadata"]["legs"][1]["broker_order_id"]]["status"] == "new"
    assert events("a-1:tp")[-1] == ("canceled", "canceled")


def test_cancelling_a_filled_parent_cancels_its_open_legs(api_client, alpaca):
    bracket_buy(api_client)
    alpaca.set_price("AAPL", "188")
    assert api_client.delete(f"{ORDERS}/a-1?asset_class=us_equity").status_code == 204
    got = api_client.get(f"{ORDERS}/a-1", Q).json()
    assert got["status"] == "filled" and {leg["status"] for leg in got["metadata"]["legs"]} == {"canceled"}
    assert events("a-1:tp")[-1] == ("canceled", "canceled") and events("a-1:sl")[-1] == ("canceled", "canceled")


def test_cancelling_an_unfilled_parent_takes_its_held_legs_along(api_client, alpaca):
    bracket_buy(api_client)
    assert api_client.delete(f"{ORDERS}/a-1?asset_class=us_equity").status_code == 204
    got = api_client.get(f"{ORDERS}/a-1", Q).json()
    assert got["status"] == "canceled" and {leg["status"] for leg in got["metadata"]["legs"]} == {"canceled"}
    assert events("a-1")[-1] == ("canceled", "canceled")
    assert events("a-1:tp")[-1] == ("leg_ended", "canceled")  # Alpaca dropped it with its entry
    assert_error(api_client.delete(f"{ORDERS}/a-1?asset_class=us_equity"), 422, "BROKER_REJECTED")


def test_another_users_alpaca_leg_is_404(api_client, alpaca, make_client, other_user):
    body = bracket_buy(api_client)
    bob = make_client(other_user)
    for ref in (body["metadata"]["legs"][0]["broker_order_id"], "a-1:tp"):
        assert_error(bob.get(f"{ORDERS}/{ref}", Q), 404, "ORDER_NOT_FOUND")
        assert_error(bob.delete(f"{ORDERS}/{ref}?asset_class=us_equity"), 404, "ORDER_NOT_FOUND")


def test_a_leg_alpaca_will_not_cancel_does_not_stop_the_other_and_its_refusal_is_the_answer(api_client, alpaca):
    body = bracket_buy(api_client)
    alpaca.set_price("AAPL", "188")
    alpaca.not_cancelable.add(body["metadata"]["legs"][0]["broker_order_id"])
    assert_error(api_client.delete(f"{ORDERS}/a-1?asset_class=us_equity"), 422, "BROKER_REJECTED")
    assert events("a-1:tp")[-1] == ("cancel_rejected", "accepted")
    assert events("a-1:sl")[-1] == ("canceled", "canceled")
    assert alpaca.legs[body["metadata"]["legs"][1]["broker_order_id"]]["status"] == "canceled"


def test_a_bracket_cancel_whose_keys_are_refused_is_403_audited_and_never_a_500(api_client, alpaca):
    bracket_buy(api_client)
    alpaca.api_key = "revoked-at-alpaca"
    assert_error(api_client.delete(f"{ORDERS}/a-1?asset_class=us_equity"), 403, "BROKER_NOT_CONFIGURED")
    assert events("a-1")[-1][0] == "cancel_rejected"
    assert_error(api_client.get(f"{ORDERS}/a-1:tp", Q), 403, "BROKER_NOT_CONFIGURED")
