"""The README's recipes do what it says: a replay after a restart, a second user, a live order."""

from __future__ import annotations

from decimal import Decimal

import pytest
import responses
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from audit.models import BrokerOrderEvent
from brokers.models import BrokerAccount
from tests.brokers.venues.alpaca import API_KEY, DATA_URL, LIVE_URL, PAPER_URL, SECRET_KEY, FakeAlpaca
from tests.equity.helpers import assert_error, place

pytestmark = pytest.mark.django_db

WALKTHROUGH = {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01, "order_type": "limit",
               "limit_price": 45000, "bracket": {"take_profit": 52000, "stop_loss": 44000},
               "client_order_id": "walkthrough-1"}


def log_in(username: str, password: str) -> APIClient:
    tokens = APIClient().post("/api/auth/token", {"username": username, "password": password}, format="json")
    assert tokens.status_code == 200, tokens.content
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.json()['access']}")
    return client


def test_the_walk_through_again_replays_the_filled_bracket_and_its_cancels_answer_422(api_client, sim_crypto):
    from brokers.sim_exchange import set_quote

    assert place(api_client, WALKTHROUGH).status_code == 201
    set_quote("crypto", "BTC/USD", "44900")  # step 3: the entry fills, its legs go live
    assert api_client.delete("/api/equity/orders/walkthrough-1:tp?asset_class=crypto").status_code == 204
    assert api_client.delete("/api/equity/orders/walkthrough-1?asset_class=crypto").status_code == 204

    again = place(api_client, WALKTHROUGH)  # step 2 after a restart
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    replayed = again.json()
    assert replayed["status"] == "filled"
    assert sorted((leg["order_id"], leg["status"]) for leg in replayed["metadata"]["legs"]) == [
        ("walkthrough-1:sl", "canceled"), ("walkthrough-1:tp", "canceled")]
    for path, detail in (("walkthrough-1:tp", "order is already canceled"),
                         ("walkthrough-1", "order is already filled")):
        body = assert_error(api_client.delete(f"/api/equity/orders/{path}?asset_class=crypto"), 422, "BROKER_REJECTED")
        assert body["detail"] == detail
    # a new client_order_id is a new order, as the README says
    assert place(api_client, {**WALKTHROUGH, "client_order_id": "walkthrough-2"}).status_code == 201


def test_the_same_key_with_another_body_is_refused(api_client, sim_crypto):
    assert place(api_client, WALKTHROUGH).status_code == 201
    body = assert_error(place(api_client, {**WALKTHROUGH, "qty": 0.02}), 422, "VALIDATION_ERROR")
    assert "client_order_id" in body["errors"]


def test_a_second_user_made_as_the_readme_says_trades_on_their_own_account(user, sim_crypto, api_client):
    get_user_model().objects.create_user("bob", password="bob-pass-5678")
    bob = log_in("bob", "bob-pass-5678")
    market = {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01, "order_type": "market"}
    assert_error(place(bob, market), 403, "BROKER_NOT_CONFIGURED")
    connected = bob.post("/api/brokers/accounts", {"asset_class": "crypto", "exchange": "sim", "environment": "paper"},
                         format="json")
    assert connected.status_code == 201, connected.content
    placed = place(bob, market)
    assert placed.status_code == 201
    alices = place(api_client, {**market, "client_order_id": "alices-own"})
    assert alices.status_code == 201
    assert_error(bob.get("/api/equity/orders/alices-own?asset_class=crypto"), 404, "ORDER_NOT_FOUND")
    listed = bob.get("/api/equity/orders", {"asset_class": "crypto"}).json()
    assert [o["order_id"] for o in listed["items"]] == [placed.json()["order_id"]]


def test_seed_demo_for_a_second_user_keeps_the_operators_password(db):
    call_command("seed_demo", verbosity=0)
    call_command("seed_demo", "--username", "bob", "--password", "bob-pass-5678", verbosity=0)
    bob = get_user_model().objects.get(username="bob")
    assert BrokerAccount.objects.filter(user=bob, exchange="sim").count() == 3
    assert get_user_model().objects.get(username="admin").check_password("demo-pass-1234")
    assert log_in("bob", "bob-pass-5678") and log_in("demo", "demo-pass-1234")


@pytest.fixture
def alpaca_live(equity_orders):
    equity_orders.ALPACA_PAPER_URL, equity_orders.ALPACA_LIVE_URL, equity_orders.ALPACA_DATA_URL = (PAPER_URL, LIVE_URL,
                                                                                     DATA_URL)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        live = FakeAlpaca(prices={"AAPL": Decimal("150")})
        live.install(mock, base_url=LIVE_URL)
        yield live


def test_a_live_order_needs_the_flag_the_operator_and_a_live_connection(user, alpaca_live, time_machine,
                                                                       django_capture_on_commit_callbacks):
    time_machine.move_to("2026-12-09T15:00:00Z", tick=False)  # a Wednesday, NYSE open
    api_client = log_in("alice", "pass-1234-word")
    order = {"asset_class": "us_equity", "symbol": "AAPL", "side": "buy", "qty": 1, "order_type": "limit",
             "limit_price": 150, "live_mode": True, "client_order_id": "first-live-1"}
    assert_error(place(api_client, order), 503, "FEATURE_DISABLED")
    with django_capture_on_commit_callbacks(execute=True):  # waffle flushes its cache once the save commits
        call_command("waffle_flag", "FEATURE_EQUITY_LIVE", "--everyone", verbosity=0)
    assert_error(place(api_client, {**order, "client_order_id": "first-live-2"}), 403, "LIVE_NOT_ENABLED")
    call_command("set_live_enabled", "alice", "on", verbosity=0)
    assert_error(place(api_client, {**order, "client_order_id": "first-live-3"}), 403, "BROKER_NOT_CONFIGURED")
    connected = api_client.post("/api/brokers/accounts", {
        "asset_class": "us_equity", "exchange": "alpaca", "environment": "live",
        "credentials": {"api_key": API_KEY, "secret_key": SECRET_KEY}}, format="json")
    assert connected.status_code == 201, connected.content

    placed = place(api_client, {**order, "client_order_id": "first-live-4"})
    assert placed.status_code == 201, placed.content
    assert len(alpaca_live.order_posts) == 1
    assert BrokerOrderEvent.objects.get(client_order_id="first-live-4", event_type="placed").first_live_order
    live_list = api_client.get("/api/equity/orders", {"asset_class": "us_equity", "live_mode": "true"}).json()
    assert [o["order_id"] for o in live_list["items"]] == ["first-live-4"]
    # without live_mode=true the read looks at the paper account, which alice has not connected
    assert_error(api_client.get("/api/equity/orders", {"asset_class": "us_equity"}), 403, "BROKER_NOT_CONFIGURED")
