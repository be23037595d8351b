"""Real brokers through the same routes: Alpaca over mocked HTTP built from its wire shapes."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
import requests
import responses
from django.core import mail
from django.db import connection

from audit.models import BrokerOrderEvent
from brokers.models import BrokerAccount
from tests.brokers.venues.alpaca import API_KEY, DATA_URL, LIVE_URL, PAPER_URL, SECRET_KEY, FakeAlpaca
from tests.equity.helpers import assert_error, place
from tests.equity.test_gates import set_flag
from tests.factories import TraderProfileFactory

pytestmark = pytest.mark.django_db
CREDS = {"api_key": API_KEY, "secret_key": SECRET_KEY}
WEBHOOK = "https://alerts.example.test/hook"


@pytest.fixture
def alpaca(settings, equity_orders):
    equity_orders.ALPACA_PAPER_URL, equity_orders.ALPACA_LIVE_URL, equity_orders.ALPACA_DATA_URL = PAPER_URL, LIVE_URL, DATA_URL
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        paper, live = FakeAlpaca(prices={"BTC/USD": Decimal("50000")}), FakeAlpaca(prices={"BTC/USD": Decimal("50000")})
        paper.install(mock, base_url=PAPER_URL)
        live.install(mock, base_url=LIVE_URL)
        yield mock, paper, live


def connect(client, environment):
    resp = client.post("/api/brokers/accounts", {"asset_class": "crypto", "exchange": "alpaca",
                                                  "environment": environment, "credentials": CREDS}, format="json")
    assert resp.status_code == 201, resp.content
    return resp.json()


def btc(**extra):
    return {"asset_class": "crypto", "symbol": "BTC/USD", "side": "buy", "qty": 0.01, "order_type": "limit",
            "limit_price": 40000, **extra}


@pytest.fixture
def live_ready(api_client):
    set_flag("FEATURE_EQUITY_LIVE", True)
    TraderProfileFactory(user=api_client.user, live_enabled=True)
    return api_client


def test_alpaca_paper_connection_places_lists_and_cancels_an_order(api_client, alpaca):
    _, paper, _ = alpaca
    connect(api_client, "paper")
    placed = place(api_client, btc())
    assert placed.status_code == 201, placed.content
    order = placed.json()
    assert order["exchange"] == "alpaca" and order["status"] == "accepted" and order["currency"] == "USD"
    assert paper.order_posts[0]["client_order_id"] != order["client_order_id"]  # our own UUID goes to the broker
    listed = api_client.get("/api/equity/orders", {"asset_class": "crypto", "status": "open"}).json()
    assert [o["broker_order_id"] for o in listed["items"]] == [order["broker_order_id"]]
    gone = api_client.delete(f"/api/equity/orders/{order['broker_order_id']}?asset_class=crypto")
    assert gone.status_code == 204
    assert api_client.get(f"/api/equity/orders/{order['order_id']}", {"asset_class": "crypto"}).json()["status"] \
        == "canceled"


def test_a_live_connection_is_routed_to_the_live_url(live_ready, alpaca):
    _, paper, live = alpaca
    connect(live_ready, "live")
    resp = place(live_ready, btc(live_mode=True))
    assert resp.status_code == 201, resp.content
    assert len(live.order_posts) == 1 and paper.order_posts == []


def test_keys_refused_on_an_order_are_403_and_mark_the_connection_invalid(api_client, alpaca):
    _, paper, _ = alpaca
    connect(api_client, "paper")
    paper.api_key = "rotated-at-the-broker"
    body = assert_error(place(api_client, btc()), 403, "BROKER_NOT_CONFIGURED")
    assert "credentials" in body["detail"]
    assert BrokerAccount.objects.get().status == "invalid"


def test_the_first_live_order_is_marked_exactly_once(live_ready, alpaca, django_capture_on_commit_callbacks):
    connect(live_ready, "live")
    with django_capture_on_commit_callbacks(execute=True):
        first = place(live_ready, btc(live_mode=True))
        second = place(live_ready, btc(live_mode=True))
    assert first.status_code == second.status_code == 201
    _join_alerts()
    flagged = BrokerOrderEvent.objects.filter(first_live_order=True)
    assert [e.broker_order_id for e in flagged] == [first.json()["broker_order_id"]]


def test_paper_orders_never_count_as_the_first_live_order(api_client, alpaca):
    connect(api_client, "paper")
    place(api_client, btc())
    assert not BrokerOrderEvent.objects.filter(first_live_order=True).exists()


def test_the_first_live_order_alerts_operators_by_mail_and_webhook(live_ready, alpaca, settings,
                                                                   django_capture_on_commit_callbacks, equity_orders):
    import json

    mock, _, _ = alpaca
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    equity_orders.EQUITY_ALERT_WEBHOOK_URL = WEBHOOK
    mock.add(responses.POST, WEBHOOK, status=200)
    connect(live_ready, "live")
    with django_capture_on_commit_callbacks(execute=True):
        order = place(live_ready, btc(live_mode=True)).json()
    _join_alerts()
    hook = [c for c in mock.calls if c.request.url == WEBHOOK]
    assert len(hook) == 1
    body = json.loads(hook[0].request.body)
    assert body == {"event": "first_live_order", "user_id": live_ready.user.pk, "username": "alice",
                    "order_id": order["order_id"], "broker_order_id": order["broker_order_id"],
                    "client_order_id": order["client_order_id"], "asset_class": "crypto", "exchange": "alpaca",
                    "symbol": "BTC/USD", "side": "buy", "qty": 0.01, "submitted_at": body["submitted_at"]}
    assert body["submitted_at"].endswith("Z")
    assert len(mail.outbox) == 1 and "alice" in mail.outbox[0].subject


def test_a_dead_webhook_leaves_the_order_at_201_and_logs_a_warning(live_ready, alpaca, settings, caplog,
                                                                   django_capture_on_commit_callbacks, equity_orders):
    mock, _, _ = alpaca
    equity_orders.EQUITY_ALERT_WEBHOOK_URL = WEBHOOK
    mock.add(responses.POST, WEBHOOK, body=requests.exceptions.ConnectionError("refused"))
    connect(live_ready, "live")
    with django_capture_on_commit_callbacks(execute=True):
        resp = place(live_ready, btc(live_mode=True))
    _join_alerts()
    assert resp.status_code == 201
    assert any("webhook failed" in r.getMessage() for r in caplog.records)


def _join_alerts():
    for thread in threading.enumerate():
        if thread.name == "first-live-alert":
            thread.join(10)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_first_live_orders_mark_exactly_one(make_client, user, alpaca):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: real concurrent transactions")
    set_flag("FEATURE_EQUITY_LIVE", True)
    TraderProfileFactory(user=user, live_enabled=True)
    client = make_client(user)
    connect(client, "live")
    results = []

    def send():
        try:
            results.append(place(make_client(user), btc(live_mode=True)))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    _join_alerts()
    assert [r.status_code for r in results] == [201] * 6
    assert BrokerOrderEvent.objects.filter(first_live_order=True).count() == 1
